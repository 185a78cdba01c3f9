"""Several processes on one PostgreSQL ledger (store.py's `_NodeLocks`): each test holds two or
three Store objects on the same real PostgreSQL 15 database, as replicas would, and shows what
one replica's memory can no longer be trusted for. The multi-process proof with SIGKILLs is
tests/e2e/cost/test_fleet.py."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from otel_agent.cost.store import (_LOCK_REBUILD, _LOCK_RETENTION, Store, _node_lock_key,
                                   dirty_t)
from tests.unit.cost import scenario
from tests.unit.cost.ledger_helpers import ingest, pricing, snapshot

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(ledger_url):
    if not ledger_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL ledger; SQLite is one process")
    return ledger_url


def _replicas(url: str, n: int) -> list[Store]:
    return [Store(url, pricing=pricing()) for _ in range(n)]


def test_a_late_point_through_a_replica_with_a_stale_cache_rebuilds_its_successor(pg_url, tmp_path):
    """Replica B stores the first export (and caches it as its series' newest point); replica A
    stores every later export but one, the last of hour 0, and the ledger is built. Then B gets
    that late export: its own memory says it is the newest point of each series, but A stored
    newer ones. Hour 1's first deltas must be recomputed against it, as one process would."""
    exports = scenario.per_export(scenario.items())
    late = next(i for i, b in enumerate(exports) if (b[0].time - scenario.T0) // scenario.H == 1) - 1
    ref = Store(f"sqlite:///{tmp_path}/ref.db", pricing=pricing())
    ingest(ref, exports)
    expected = snapshot(ref)
    ref.close()

    a, b = _replicas(pg_url, 2)
    try:
        ingest(b, exports[:1])
        ingest(a, [e for i, e in enumerate(exports[1:], 1) if i != late])
        a.refresh()
        ingest(b, [exports[late]])
        assert snapshot(b) == expected
    finally:
        a.close()
        b.close()


def test_a_node_another_replica_is_rebuilding_is_left_to_it_and_its_marks_survive(pg_url):
    a, b = _replicas(pg_url, 2)
    try:
        ingest(a, scenario.per_export(scenario.items(node="n1"))[:60])
        ingest(a, scenario.per_export(scenario.items(node="n2"))[:60])
        n1 = "/n1"
        with a._locks.claim(_LOCK_REBUILD, _node_lock_key(n1)) as mine:
            assert mine
            b.refresh()  # rebuilds n2 only: n1 is "being rebuilt" by a
            with b.engine.connect() as c:
                left = {nk for (nk,) in c.execute(sa.select(dirty_t.c.node_key).distinct())}
            assert left == {n1}
        assert b.refresh() > 0  # a "died" or finished without committing: the marks are due
        assert b.pending() == 0
    finally:
        a.close()
        b.close()


def test_retention_runs_in_one_replica_at_a_time(pg_url):
    from datetime import datetime, timezone

    a, b = _replicas(pg_url, 2)
    try:
        now = datetime.now(timezone.utc)
        with a._locks.claim(_LOCK_RETENTION, 0) as mine:
            assert mine
            assert b.apply_retention(now) == {"skipped": 1}
        assert "skipped" not in b.apply_retention(now)
    finally:
        a.close()
        b.close()


def test_three_replicas_writing_and_rebuilding_at_once_build_the_one_process_ledger(pg_url, tmp_path):
    """Every export of two nodes, twice, dealt to three replicas writing in parallel threads,
    each also rebuilding between its writes: no rebuild is lost or doubled."""
    import random

    exports = [e for n in ("n1", "n2") for e in scenario.per_export(scenario.items(node=n))]
    ref = Store(f"sqlite:///{tmp_path}/ref.db", pricing=pricing())
    ingest(ref, exports)
    expected = snapshot(ref)
    ref.close()

    stores = _replicas(pg_url, 3)
    # node first arrivals first (the first-seen window), then everything twice, shuffled
    rng = random.Random(15)
    rest = exports[:] + exports[:]
    rng.shuffle(rest)
    firsts = [exports[0], exports[len(exports) // 2]]
    ingest(stores[0], firsts)
    lanes = [rest[i::3] for i in range(3)]
    errors: list[BaseException] = []

    def run(store: Store, lane) -> None:
        try:
            for i, e in enumerate(lane):
                ingest(store, [e])
                if i % 7 == 0:
                    store.refresh()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s, lane)) for s, lane in zip(stores, lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    try:
        assert not errors, errors
        for s in stores:
            s.refresh()
        assert snapshot(stores[1]) == expected
    finally:
        for s in stores:
            s.close()


def test_an_unpartitioned_points_table_is_migrated_into_partitions(pg_url, tmp_path):
    """A PostgreSQL ledger made before partitioning: its points become one partition (up to the
    end of the newest point's day), nothing is lost, the ledger rebuilds the same, and
    retention later drops that partition whole, keeping each counter's predecessor."""
    from datetime import datetime, timedelta, timezone

    from otel_agent.cost.store import NANOS_PER_SECOND, metadata, points_t

    exports = scenario.per_export(scenario.items())
    ref = Store(f"sqlite:///{tmp_path}/ref.db", pricing=pricing())
    ingest(ref, exports)
    with ref.engine.connect() as c:
        old = {t.name: [dict(r._mapping) for r in c.execute(sa.select(t))] for t in metadata.sorted_tables}
    expected = snapshot(ref)
    ref.close()

    engine = sa.create_engine("postgresql+psycopg://" + pg_url.split("://", 1)[1])
    md = sa.MetaData()
    for t in metadata.sorted_tables:
        copy = t.to_metadata(md)
        copy.dialect_options["postgresql"]._non_defaults.pop("partition_by", None)
    md.create_all(engine)
    with engine.begin() as c:
        for t in md.sorted_tables:
            if old[t.name]:
                c.execute(sa.insert(t), old[t.name])
        assert c.execute(sa.text("SELECT count(*) FROM pg_partitioned_table")).scalar_one() == 0

    s = Store(pg_url, pricing=pricing())
    try:
        with s.engine.connect() as c:
            parts = {name: (lo, hi) for name, lo, hi in s._partitions(c)}
            n_points = c.execute(sa.select(sa.func.count()).select_from(points_t)).scalar_one()
        assert parts["points_legacy"][0] is None and parts["points_legacy"][1] > max(
            r["time_ns"] for r in old["points"])
        assert "points_default" in parts
        assert n_points == len(old["points"])
        assert old["dirty_hours"]  # copied before the reference was built: rebuilt from here
        assert snapshot(s) == expected

        later = datetime.fromtimestamp(parts["points_legacy"][1] // NANOS_PER_SECOND, timezone.utc)
        out = s.apply_retention(later + timedelta(days=s.retention.points_days + 1))
        with s.engine.connect() as c:
            names = {name for name, _lo, _hi in s._partitions(c)}
        assert "points_legacy" not in names
        # dropped whole, but for each counter's newest point (moved to the default partition,
        # then pruned with its series: none had a point within the retention)
        keys = {(r["series_id"], r["start_ns"]) for r in old["points"]}
        assert out["partition_points"] == n_points - len(keys)
        assert out["series"] == len(old["series"])
    finally:
        s.close()
        engine.dispose()
