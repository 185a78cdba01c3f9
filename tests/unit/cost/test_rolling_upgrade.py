"""Agents are upgraded node by node: for a while the ledger hears agents from before the
semconv v1.44 names (gauges for levels, `otel_agent.node.pods.*` for kubepods) and agents
after them (UpDownCounters, `k8s.node.system_container.*` on the `pods` system-container
resource), and on one node the agent switches mid-hour. Through the real ingest and ledger:
an hour in which the agent was upgraded bills exactly what an hour of either agent alone bills
(a renamed counter is one series, not a baseline started again or a history billed twice; a
level is never held twice), and the figures are the ones written into the requests."""

from __future__ import annotations

import pytest

from otel_agent.cost.ingest import decode
from otel_agent.cost.store import Store
from tests.unit.cost.builders import H, S, T0, Res, container_attrs, node_attrs, request
from tests.unit.cost.ledger_helpers import pricing, snapshot, totals, unbalanced

BOOT = T0 - H
GIB = 1 << 30
TIMES = (60, 120, 180, 240, 300, 360)  # seconds into the hour of each export


def _export(t_s: int, *, semconv: bool):
    """One export as an agent sends it: before (semconv=False) or after the rename."""
    t = T0 + t_s * S
    ctr_cpu, kubepods_cpu, node_cpu = 0.5 * t_s, 1000 + 0.8 * t_s, 5000 + 1.5 * t_s

    def level(r: Res, name: str, v: float, unit: str) -> Res:
        return r.updown(name, [(BOOT, t, v)], unit=unit) if semconv else r.gauge(name, [(t, v)], unit=unit)

    node = Res(node_attrs()).sum("k8s.node.cpu.time", [(BOOT, t, node_cpu)], unit="s")
    for name, v, unit in (("otel_agent.node.cpu.capacity", 2.0, "{cpu}"),
                          ("k8s.node.cpu.allocatable", 1.8, "{cpu}"),
                          ("otel_agent.node.memory.capacity", 8.0 * GIB, "By"),
                          ("k8s.node.memory.allocatable", 7.0 * GIB, "By"),
                          ("k8s.node.memory.working_set", 3.0 * GIB, "By")):
        level(node, name, v, unit)
    if semconv:  # kubepods: kubelet's "pods" system container, a resource of its own
        kubepods = Res({**node_attrs(), "k8s.node.system_container.name": "pods"})
        kubepods.sum("k8s.node.system_container.cpu.time", [(BOOT, t, kubepods_cpu)], unit="s")
        level(kubepods, "k8s.node.system_container.memory.working_set", 2.0 * GIB, "By")
        extra = [kubepods]
    else:  # kubepods on the node resource, under our own names
        node.sum("otel_agent.node.pods.cpu.time", [(BOOT, t, kubepods_cpu)], unit="s")
        level(node, "otel_agent.node.pods.memory.working_set", 2.0 * GIB, "By")
        extra = []
    ctr = Res(container_attrs("p1", "web")).sum("container.cpu.time", [(BOOT, t, ctr_cpu)], unit="s")
    for name, v, unit in (("container.memory.working_set", 1.0 * GIB, "By"),
                          ("k8s.container.cpu.request.desired", 0.25, "{cpu}"),
                          ("k8s.container.memory.request.desired", 0.5 * GIB, "By")):
        level(ctr, name, v, unit)
    return request(node, *extra, ctr)


def _ledger(tmp_path, name: str, upgraded_after_s: int | None):
    """The ledger of one hour in which the agent ran old until `upgraded_after_s`, then new."""
    store = Store(f"sqlite:///{tmp_path}/{name}.db", pricing=pricing())
    for t_s in TIMES:
        semconv = upgraded_after_s is not None and t_s > upgraded_after_s
        b = decode(_export(t_s, semconv=semconv), now_ns=T0 + H)
        assert b.rejected == 0 and b.ignored == 0, b.errors
        store.write(b)
    return store


def test_an_agent_upgraded_mid_hour_bills_what_either_agent_alone_bills(tmp_path):
    old, new = _ledger(tmp_path, "old", None), _ledger(tmp_path, "new", 0)
    mixed, late = _ledger(tmp_path, "mixed", 180), _ledger(tmp_path, "late", 300)
    try:
        expected = snapshot(old)
        assert expected and snapshot(new) == expected
        assert snapshot(mixed) == expected
        assert snapshot(late) == expected
        assert unbalanced(mixed) == []

        t = totals(mixed)
        # Everything was running before the first export, which is a baseline: the container
        # is billed 0.5 cores and kubepods holds 0.8 cores for the 300 s after it, 90
        # CPU-seconds in kubepods on no pod. Were the renamed kubepods counter two series, the
        # second would start a new baseline (96 s less) or count its whole history.
        assert t[("container", "p1", "web", "cpu")] == pytest.approx(150 / 3600)
        assert t[("unallocated", "", "", "cpu")] == pytest.approx(90 / 3600)
        # Levels hold from each point for at most 300 s; one series each, whatever the name
        # or instrument it came with: the node is 2 cores and 8 GiB from t=60 s to t=660 s.
        assert t[("node", "", "", "cpu")] == pytest.approx(2.0 * 600 / 3600)
        assert t[("node", "", "", "memory")] == pytest.approx(8.0 * GIB * 600 / 3600)
        assert t[("container", "p1", "web", "memory")] == pytest.approx(1.0 * GIB * 600 / 3600)
    finally:
        for s in (old, new, mixed, late):
            s.close()


def test_level_sent_as_a_delta_updowncounter_is_rejected_not_billed():
    t = T0 + 60 * S
    b = decode(request(Res(container_attrs("p1", "web")).updown(
        "container.memory.working_set", [(t - 60 * S, t, 1.0 * GIB)], unit="By", delta=True)),
        now_ns=T0 + H)
    assert b.rejected == 1 and not b.points
    assert "UpDownCounter must be cumulative" in b.error_message()
