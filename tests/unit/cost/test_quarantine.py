"""One bad node-hour never stops the others: a rebuild that fails is quarantined (kept, with
its reason, retried on new points or after a back-off), the other nodes are rebuilt, and the
processor's health shows it. The poison is put in the database directly, as a ledger written
by an earlier version (before validation) holds it: ingest refuses it today."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from otel_agent.cost.ingest import decode, node_key, series_id
from otel_agent.cost.store import QUARANTINE_FIRST_RETRY_S, Store, hourly_t, points_t, quarantine_t, series_t
from tests.unit.cost.builders import H, S, T0, Res, container_attrs, node_attrs, request
from tests.unit.cost.ledger_helpers import pricing

NOW = T0 + 10 * H
T = T0 + 2 * H
HOUR = T // S // 3600 * 3600


@pytest.fixture
def store(ledger_url):
    s = Store(ledger_url, pricing=pricing())
    yield s
    s.close()


def export(node: str, t: int, v: float | None = None):
    v = (t - T0) / S * 0.5 if v is None else v
    return request(Res(node_attrs(node)).gauge("otel_agent.node.cpu.capacity", [(t, 4.0)]),
                   Res(container_attrs("u-" + node, "app", node=node)).sum(
                       "container.cpu.time", [(T0, t, v)], unit="s"))


def write(store, req):
    b = decode(req, now_ns=NOW)
    assert b.rejected == 0, b.errors
    store.write(b, now_ns=NOW)


def poison(store, node: str, *, meta_pod: str | None = None, capacity: float | None = None):
    """What an earlier version stored: a capacity of 2^60 cores, or a NUL in a pod's name."""
    nk = node_key("", node)
    with store.engine.begin() as c:
        if capacity is not None:
            sid = series_id("otel_agent.node.cpu.capacity", "gauge", "", node, "", "", "", "")
            c.execute(sa.insert(points_t), {"series_id": sid, "start_ns": 0, "time_ns": T + 5 * S,
                                            "value": capacity, "node_key": nk})
        if meta_pod is not None:
            sid = series_id("container.cpu.time", "cumulative", "", node, "u-" + node,
                            "cid-u-" + node + "-app", "", "")
            meta = json.dumps({"namespace": "team-a", "pod": meta_pod, "container": "app",
                               "workload_kind": "", "workload": "", "labels": {}})
            c.execute(sa.update(series_t).where(series_t.c.series_id == sid).values(meta=meta))
        c.execute(sa.update(sa.table("dirty_hours", sa.column("version"))).values(version=5))


def hours_of(store, node):
    with store.engine.connect() as c:
        return {h for (h,) in c.execute(sa.select(hourly_t.c.period_start).where(
            hourly_t.c.node == node).distinct())}


def quarantined(store):
    with store.engine.connect() as c:
        return c.execute(sa.select(quarantine_t)).all()


@pytest.mark.parametrize("kind", ["overflow", "nul"])
def test_a_poisoned_node_hour_is_quarantined_and_the_others_go_on(store, ledger_url, kind):
    if kind == "nul" and not ledger_url.startswith("postgresql"):
        pytest.skip("SQLite stores NUL bytes; PostgreSQL refuses them (the issue's case)")
    for node in ("bad", "good"):
        write(store, export(node, T0 + H))
        write(store, export(node, T))
    poison(store, "bad", capacity=2.0**60 if kind == "overflow" else None,
           meta_pod="web\x00evil" if kind == "nul" else None)
    store.refresh(now_s=NOW // S)  # does not raise
    assert HOUR in hours_of(store, "good")
    q = quarantined(store)
    # the capacity poisons its hour; the pod's name every hour the pod has points in
    bad_hours = [HOUR] if kind == "overflow" else [HOUR - 3600, HOUR]
    assert [(r.node_key, r.hour, r.attempts) for r in q] == [("/bad", h, 1) for h in bad_hours]
    assert ("beyond what a node-hour can cost" if kind == "overflow" else "NUL") in q[0].reason
    snap = store.health.snapshot()
    assert snap["quarantined_node_hours"] == len(bad_hours)
    assert snap["quarantine_events"] == len(bad_hours)
    assert snap["quarantined"][0]["node"] == "/bad" and snap["backlog_node_hours"] >= 1
    json.dumps(snap)

    # not retried before its back-off; retried after it; retried at once when points arrive
    store.refresh(now_s=NOW // S + 1)
    assert quarantined(store)[-1].attempts == 1
    store.refresh(now_s=NOW // S + QUARANTINE_FIRST_RETRY_S + 1)
    assert quarantined(store)[-1].attempts == 2
    write(store, export("bad", T + 60 * S))
    store.refresh(now_s=NOW // S + QUARANTINE_FIRST_RETRY_S + 2)
    assert quarantined(store)[-1].attempts == 3
    # the cause removed: the next retry rebuilds it and the quarantine is lifted
    with store.engine.begin() as c:
        if kind == "overflow":
            c.execute(sa.delete(points_t).where(points_t.c.value > 1e15))
        else:
            c.execute(sa.update(series_t).values(meta=sa.func.replace(series_t.c.meta, "\\u0000", "")))
    write(store, export("bad", T + 120 * S))
    store.refresh(now_s=NOW // S + 10 * 3600)
    assert quarantined(store) == [] and HOUR in hours_of(store, "bad")
    assert store.health.snapshot()["quarantined_node_hours"] == 0


def test_a_ledger_that_cannot_write_stops_the_pass_without_quarantining(tmp_path):
    from otel_agent.cost.errors import StoreUnavailable

    s = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())
    write(s, export("n1", T))

    @sa.event.listens_for(s.engine, "connect")
    def _cap(dbapi_conn, _rec):  # the database refuses every write (SQLITE_READONLY)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA query_only=ON")
        cur.close()

    s.engine.dispose()
    with pytest.raises(StoreUnavailable):
        s.refresh()
    sa.event.remove(s.engine, "connect", _cap)
    s.engine.dispose()
    assert quarantined(s) == []
    assert s.health.snapshot()["refresh_failures"] == 1
    s.refresh()
    assert HOUR in hours_of(s, "n1")
    s.close()


def test_a_series_the_database_refuses_is_rejected_alone_not_the_batch(tmp_path):
    """The backstop behind validation: if the database still refuses something of a batch
    (here a trigger refuses one series, as a constraint would), that series' points are
    rejected with the database's reason and the rest of the batch is stored; never a
    retryable error that would have the client resend the same batch forever."""
    from otel_agent.cost.validate import R_STORAGE

    s = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())
    with s.engine.begin() as c:
        c.execute(sa.text("CREATE TRIGGER refuse BEFORE INSERT ON series WHEN NEW.pod_uid = 'u-bad' "
                          "BEGIN SELECT RAISE(ABORT, 'refused by the database'); END"))
    req = export("good", T)
    req.resource_metrics.extend(export("bad", T).resource_metrics)
    b = decode(req, now_ns=NOW)
    s.write(b, now_ns=NOW)
    assert b.codes == {R_STORAGE: 1} and "refused by the database" in b.error_message()
    with s.engine.connect() as c:
        stored = {n for (n,) in c.execute(sa.select(series_t.c.pod_uid).distinct())}
    assert stored == {"", "u-good"}  # both nodes' capacity, the good pod; not u-bad
    s.close()
