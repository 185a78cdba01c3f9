"""The ledger from stored points, on SQLite and on PostgreSQL (same code path)."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from otel_agent.cost.store import Retention, Store, daily_t, monthly_t
from tests.unit.cost import scenario
from tests.unit.cost.ledger_helpers import (first_arrival_in_window, ingest, pricing, snapshot,
                                            totals, unbalanced)
from tests.unit.cost.scenario import EXPECTED_CORE_HOURS as EXP


@pytest.fixture
def store(ledger_url):
    s = Store(ledger_url, pricing=pricing())
    yield s
    s.close()


def test_usage_matches_the_scenario_rates(store):
    ingest(store, scenario.per_export(scenario.items()))
    t = totals(store)
    cpu = {k: v for k, v in t.items() if k[3] == "cpu"}
    assert cpu[("container", "p1", "app", "cpu")] == pytest.approx(EXP["app"])
    assert cpu[("pod", "p1", "", "cpu")] == pytest.approx(EXP["p1-pod-level"])
    # p2 had no metadata: billed by uid, container named by its id
    assert cpu[("container", "p2", "cid-p2-main", "cpu")] == pytest.approx(EXP["p2"])
    assert cpu[("container", "p3", "job", "cpu")] == pytest.approx(EXP["job"])
    assert cpu[("unallocated", "", "", "cpu")] == pytest.approx(EXP["unallocated"])
    net = t[("container", "p1", "app", "network:internet")]
    assert net == pytest.approx(scenario.EXPECTED_NET_BYTES)


def test_every_node_hour_reconciles_to_the_micro_unit(store):
    ingest(store, scenario.per_export(scenario.items()))
    assert unbalanced(store) == []


def test_shuffled_and_duplicated_batches_give_the_same_ledger(ledger_url, tmp_path):
    ref = Store(f"sqlite:///{tmp_path}/ref.db", pricing=pricing())
    ingest(ref, scenario.per_export(scenario.items()))
    expected = snapshot(ref)
    ref.close()

    items = scenario.items()
    rng = random.Random(4)
    batches = []
    for _ in range(2):  # every point twice, in random batches, in random order
        shuffled = items[:]
        rng.shuffle(shuffled)
        batches += [shuffled[i:i + 37] for i in range(0, len(shuffled), 37)]
    rng.shuffle(batches)
    batches = first_arrival_in_window(batches, lambda b: min(it.time for it in b))
    s = Store(ledger_url, pricing=pricing())
    for i, b in enumerate(batches):
        ingest(s, [b])
        if i % 25 == 0:
            s.refresh()  # rebuilds interleaved with late data
    assert snapshot(s) == expected
    s.close()


def test_rollups_equal_the_hourly_sums(store):
    ingest(store, scenario.per_export(scenario.items()))
    hourly = totals(store)
    import sqlalchemy as sa
    for table in (daily_t, monthly_t):
        with store.engine.connect() as c:
            rows = c.execute(sa.select(table.c.kind, table.c.pod_uid, table.c.container,
                                       table.c.resource, sa.func.sum(table.c.usage_qty))
                             .group_by(table.c.kind, table.c.pod_uid, table.c.container,
                                       table.c.resource)).all()
        assert {tuple(r[:4]): pytest.approx(r[4]) for r in rows} == hourly


def test_retention_keeps_the_predecessor_of_the_next_delta(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing(),
              retention=Retention(points_days=1, hourly_days=3, daily_days=65))
    items = scenario.items()
    ingest(s, scenario.per_export(items))
    before = totals(s)
    # cut raw points 1 day before a "now" just after the 2nd hour: keeps each series' last
    # point before the cut, so a late point in hour 3 still gets a delta, not a count from 0
    now = datetime.fromtimestamp((scenario.T0 + 2 * 3600 * 10**9) / 1e9 + 86400, timezone.utc)
    s.apply_retention(now)
    late = [it for it in items if it.time >= scenario.T0 + 2 * 3600 * 10**9]
    ingest(s, [late])  # re-sent: rebuilds hour 2 from the thinned points
    assert totals(s) == pytest.approx(before)
    s.close()
