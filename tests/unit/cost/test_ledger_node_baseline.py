"""An agent deployed on a node that has been up for a day sends the node's CPU counter with the
boot time as start and a day of CPU-seconds as its first value. That day is not this hour's
overhead: the first whole-node point is a baseline, and only what the node used after it is
billed. A pod's first point still counts from zero (a short-lived job seen once is billed).
Expected figures are the ones written into the requests."""

from __future__ import annotations

import pytest

from otel_agent.cost.ingest import decode
from otel_agent.cost.store import Store
from tests.unit.cost.builders import H, S, T0, Res, container_attrs, node_attrs, request
from tests.unit.cost.ledger_helpers import pricing, totals, unbalanced

BOOT = T0 - 24 * H
DAY_OF_CPU = 24 * 3600 * 1.5  # 1.5 cores busy for the day before the agent came


def _req(t_s: int, node_cpu: float, job_cpu: float | None):
    t = T0 + t_s * S
    res = [Res(node_attrs()).sum("k8s.node.cpu.time", [(BOOT, t, node_cpu)], unit="s")
                            .sum("k8s.node.system_container.cpu.time", [(BOOT, t, job_cpu or 0.0)], unit="s")
                            .gauge("otel_agent.node.cpu.capacity", [(t, 2.0)])
                            .gauge("k8s.node.cpu.allocatable", [(t, 1.8)])]
    if job_cpu is not None:
        res.append(Res(container_attrs("j1", "job")).sum("container.cpu.time", [(BOOT, t, job_cpu)],
                                                         unit="s"))
    return request(*res)


def test_first_node_point_is_a_baseline_and_a_jobs_first_point_is_billed(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())
    try:
        # 60 s at 1.5 cores between the two exports; a job seen once, 3 CPU-seconds.
        store.write(decode(_req(60, DAY_OF_CPU, None), now_ns=T0 + H))
        store.write(decode(_req(120, DAY_OF_CPU + 90.0, 3.0), now_ns=T0 + H))
        t = totals(store)
        assert t[("container", "j1", "job", "cpu")] == pytest.approx(3.0 / 3600)
        # overhead = max(reserved 0.2 cores over the 60 s + 300 s the gauges hold, system use)
        system = (90.0 - 3.0) / 3600
        reserved = 0.2 * (60 + 300) / 3600
        assert t[("overhead", "", "", "cpu")] == pytest.approx(max(system, reserved))
        assert t[("node", "", "", "cpu")] == pytest.approx(2.0 * (60 + 300) / 3600)
        assert unbalanced(store) == []
    finally:
        store.close()


def test_a_node_booted_within_the_hour_still_starts_from_its_first_reading(tmp_path):
    # Booted 10 minutes into the hour, agent's first export 30 minutes later: the 30 minutes
    # before any capacity reading are not billed as overhead against 6 minutes of capacity.
    boot = T0 + 600 * S
    store = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())
    try:
        for t_s, cpu in ((2400, 1800 * 1.5), (2460, 1800 * 1.5 + 30.0)):
            t = T0 + t_s * S
            store.write(decode(request(
                Res(node_attrs()).sum("k8s.node.cpu.time", [(boot, t, cpu)], unit="s")
                                 .gauge("otel_agent.node.cpu.capacity", [(t, 2.0)])),
                now_ns=T0 + H))
        t = totals(store)
        assert t[("overhead", "", "", "cpu")] == pytest.approx(30.0 / 3600)
        assert t[("idle", "", "", "cpu")] == pytest.approx((2.0 * 360 - 30.0) / 3600)
        assert unbalanced(store) == []
    finally:
        store.close()
