"""The processor's own health: JSON for a health endpoint, Prometheus text for a scrape, filled
by the real ingestor, store and refresh loop; and a refresh loop that no input can stop."""

from __future__ import annotations

import json
import logging
import re

from otel_agent.cost.cli import RefreshLoop
from otel_agent.cost.health import ProcessorHealth
from otel_agent.cost.receiver import Ingestor
from otel_agent.cost.store import Store
from tests.unit.cost.builders import H, S, T0, Res, container_attrs, node_attrs, request
from tests.unit.cost.ledger_helpers import pricing

_SAMPLE = re.compile(r'(otel_agent_cost_[a-z_]+)(\{reason="[a-z_]+"\})? (-?[0-9.e+-]+|NaN)$')


def parse(text: str) -> dict[str, float]:
    """Prometheus text exposition 0.0.4, strictly: HELP and TYPE before each family's samples."""
    out: dict[str, float] = {}
    typed: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge") and name.startswith("otel_agent_cost_")
            typed[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, line
        assert m.group(1) in typed, line
        assert typed[m.group(1)] != "counter" or m.group(1).endswith("_total")
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    assert text.endswith("\n")
    return out


def test_health_follows_what_the_processor_did(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())
    now = T0 + 2 * H
    ing = Ingestor(store, now_ns=lambda: now)
    good = Res(container_attrs("u1", "app", node="n1")).sum("container.cpu.time", [(T0, now, 5.0)], unit="s")
    bad = Res(node_attrs("n1")).gauge("otel_agent.node.cpu.capacity", [(now, 2.0**60)])
    relabel = Res(container_attrs("u1", "app", node="n1", namespace="beta")).sum(
        "container.cpu.time", [(T0, now + S, 5.0)], unit="s")
    ing.export(request(good, bad).SerializeToString())
    try:
        ing.export(request(relabel).SerializeToString())
    except Exception:  # noqa: BLE001 - all rejected: INVALID_ARGUMENT
        pass
    loop = RefreshLoop(store, 5.0, live_series=ing.live_series)
    loop.turn()
    snap = store.health.snapshot()
    json.dumps(snap)
    assert snap["points"] == {"accepted": 1, "rejected": {"namespace_changed": 1, "out_of_range": 1}}
    assert snap["refresh_loop_alive"] and snap["last_refresh_time"] is not None
    assert snap["backlog_node_hours"] == 0 and snap["quarantined"] == []
    assert snap["rebuild"]["node_hours"] >= 1 and snap["live_series"] == 1
    m = parse(store.health.prometheus())
    assert m["otel_agent_cost_points_accepted_total"] == 1
    assert m['otel_agent_cost_points_rejected_total{reason="out_of_range"}'] == 1
    assert m['otel_agent_cost_points_rejected_total{reason="namespace_changed"}'] == 1
    assert m['otel_agent_cost_points_rejected_total{reason="start_before_boot"}'] == 0
    assert m["otel_agent_cost_refresh_loop_alive"] == 1
    assert m["otel_agent_cost_backlog_node_hours"] == 0
    assert m["otel_agent_cost_live_series"] == 1
    store.close()


def test_the_loop_is_dead_when_it_stops_beating():
    t = [1000.0]
    h = ProcessorHealth(clock=lambda: t[0], loop_deadline_s=60)
    assert not h.snapshot()["refresh_loop_alive"]
    h.beat()
    t[0] += 59
    assert h.snapshot()["refresh_loop_alive"]
    t[0] += 2
    assert not h.snapshot()["refresh_loop_alive"]
    assert parse(h.prometheus())["otel_agent_cost_refresh_loop_alive"] == 0


def test_the_refresh_loop_survives_anything_and_says_it_once(tmp_path, caplog):
    store = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())

    def broken(**_kw):
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    store.refresh = broken
    loop = RefreshLoop(store, 1.0)
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            loop.turn()
    assert [r.message for r in caplog.records].count(
        "ledger refresh failed (logged once), the loop goes on") == 1
    assert store.health.snapshot()["refresh_failures"] == 3
    assert store.health.loop_alive()
    store.close()


def test_not_ready_once_refreshes_fail_past_the_deadline_and_ready_again_after_one_succeeds():
    t = [1000.0]
    h = ProcessorHealth(clock=lambda: t[0], loop_deadline_s=60.0)
    h.beat()
    assert h.snapshot()["ready"]
    h.record_refresh_failure(OSError("connection refused"))
    t[0] += 30
    h.beat()
    assert h.snapshot()["ready"]  # a blip is not an outage
    t[0] += 31
    h.record_refresh_failure(OSError("connection refused"))
    h.beat()
    snap = h.snapshot()
    assert not snap["ready"] and snap["refresh_loop_alive"]
    assert snap["last_error"] == "OSError: connection refused"
    h.record_refresh(backlog=0, quarantined=[], quarantined_count=0)
    assert h.snapshot()["ready"] and h.snapshot()["last_error"] == ""
