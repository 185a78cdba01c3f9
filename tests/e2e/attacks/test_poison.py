"""Poison points against a real `otel-agent cost serve` over OTLP/gRPC on loopback (issue 12,
"one point crashes the processor, again after every restart"): a CPU capacity of 2^60 cores, a
pair of in-range-for-the-old-bound capacities whose daily roll-up overflowed int64, and a
ledger that already holds such a point (written before validation existed). Each must be
refused or quarantined with its reason while the processor stays up and every other node is
rebuilt."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from otel_agent.cost.ingest import decode, node_key, series_id
from otel_agent.cost.pricing import parse_pricing
from otel_agent.cost.store import Store, points_t
from tests.support.cost_process import core_hours, node_export, now_hour_ns, query, serving
from tests.unit.cost.builders import S, Res, node_attrs, request
from tests.unit.cost.ledger_helpers import PRICING_YAML

pytestmark = pytest.mark.e2e
MIN = 60 * S


def test_a_capacity_of_2_60_cores_is_refused_and_every_node_is_rebuilt(tmp_path):
    h = now_hour_ns() - 2 * 3600 * S
    boot = h - 86400 * S
    with serving(tmp_path) as cost:
        for t in (h + 5 * MIN, h + 10 * MIN):
            for node in ("a", "b"):
                assert not cost.export(node_export(t, node=node, boot=boot)).HasField("partial_success")
        resp = cost.export(request(Res(node_attrs("b")).gauge(
            "otel_agent.node.cpu.capacity", [(h + 15 * MIN, 2.0**60)]),
            Res(node_attrs("b")).gauge("k8s.node.cpu.allocatable", [(h + 15 * MIN, 3.5)])))
        assert resp.partial_success.rejected_data_points == 1
        assert "more than any node has" in resp.partial_success.error_message
        for t in (h + 20 * MIN, h + 25 * MIN):  # the others keep flowing and are billed
            for node in ("a", "b"):
                cost.export(node_export(t, node=node, boot=boot))
        cost.settle()
        assert cost.alive()
        for node in ("a", "b"):  # 4 cores for 4 exports, each holding 5 minutes (MAX_GAP)
            assert core_hours(cost.ledger, node=node, kind="node") == pytest.approx(4.0 * 20 / 60)
        assert query(cost.ledger, "SELECT count(*) FROM quarantine")[0][0] == 0


def test_the_roll_up_overflow_pair_is_refused(tmp_path):
    # 2^47 cores priced at $0.0316 is 2^62 micro-units an hour: each hourly row fitted in int64,
    # two of them overflowed the daily sum. No node has 2^47 cores.
    h = now_hour_ns() - 3 * 3600 * S
    with serving(tmp_path) as cost:
        cost.export(node_export(h + 5 * MIN, node="a", boot=h - 86400 * S))
        for hour in (0, 1):
            resp = cost.export(request(Res(node_attrs("b")).gauge(
                "otel_agent.node.cpu.capacity", [(h + hour * 3600 * S + 10 * MIN, 2.0**47)]),
                Res(node_attrs("b")).sum("k8s.node.cpu.time", [(h - S, h + hour * 3600 * S + 10 * MIN,
                                                                 100.0 + hour)], unit="s")))
            assert resp.partial_success.rejected_data_points == 1
            assert "more than any node has" in resp.partial_success.error_message
        cost.settle()
        assert cost.alive()
        assert core_hours(cost.ledger, node="a", kind="node") > 0
        assert query(cost.ledger, "SELECT max(abs(cost_usage_micros)) FROM ledger_daily")[0][0] < 2**43


def test_a_ledger_already_poisoned_is_quarantined_not_fatal(tmp_path):
    """Before validation, the 2^60 point was stored; the process died at every refresh after
    that, restart or not. Now the hour is set aside with its reason and the rest goes on."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    h = now_hour_ns() - 2 * 3600 * S
    boot = h - 86400 * S
    store = Store(url, pricing=parse_pricing(PRICING_YAML, "p.yaml"))
    for t in (h + 5 * MIN, h + 10 * MIN):
        for node in ("a", "b"):
            store.write(decode(node_export(t, node=node, boot=boot), now_ns=t + MIN))
    with store.engine.begin() as c:  # what the earlier version stored for node b
        c.execute(sa.insert(points_t), {
            "series_id": series_id("otel_agent.node.cpu.capacity", "gauge", "", "b", "", "", "", ""),
            "start_ns": 0, "time_ns": h + 12 * MIN, "value": 2.0**60, "node_key": node_key("", "b")})
    store.close()
    with serving(tmp_path, ledger=url) as cost:
        cost.settle()
        for t in (h + 20 * MIN, h + 25 * MIN):  # new points: node b's hour is retried at once
            for node in ("a", "b"):
                cost.export(node_export(t, node=node, boot=boot))
        cost.settle()
        assert cost.alive()
        q = query(url, "SELECT node_key, reason, attempts FROM quarantine")
        assert len(q) == 1 and q[0][0] == "/b" and "beyond what a node-hour can cost" in q[0][1]
        assert q[0][2] >= 2  # retried when the new points came, still poisoned
        assert core_hours(url, node="a", kind="node") == pytest.approx(4.0 * 20 / 60)
        log = cost.log()
        assert log.count("rebuild failed, quarantined") == 1  # logged once, not every retry
        assert "refresh:" in log and "quarantined 1" in log
