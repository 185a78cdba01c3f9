"""Series have a life: the per-namespace bound counts live series (also across a restart),
series with no point for the points retention are pruned with their pods and nodes and from
the process's caches, and a rebuild loads only the series that have points in its hour."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from otel_agent.cost.receiver import Ingestor
from otel_agent.cost.store import (LIVE_WINDOW_S, Retention, Store, node_facts_t, node_first_t,
                                   pod_ns_t, points_t, series_t)
from tests.unit.cost.builders import H, S, T0, Res, container_attrs, node_attrs, request
from tests.unit.cost.ledger_helpers import pricing

BOUND = 100  # above the ~60 pods a CronJob a minute has alive within the live window


class Clock:
    def __init__(self, t: int):
        self.t = t

    def __call__(self) -> int:
        return self.t


def job_pods(first: int, n: int, t: int, node: str = "n1"):
    """n CronJob pods, each seen in one export with one CPU series, at time t."""
    res = [Res(node_attrs(node)).gauge("otel_agent.node.cpu.capacity", [(t, 8.0)])]
    for i in range(first, first + n):
        res.append(Res(container_attrs(f"job-{i}", "main", node=node, namespace="cron"))
                   .sum("container.cpu.time", [(t - 20 * S, t, 1.5)], unit="s"))
    return request(*res).SerializeToString()


def count(store, table) -> int:
    with store.engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_a_cronjob_namespace_is_never_refused_for_its_dead_pods(ledger_url):
    clock = Clock(T0 + H)
    store = Store(ledger_url, pricing=pricing())
    ing = Ingestor(store, max_series_per_namespace=BOUND, now_ns=clock)
    # a CronJob a minute for five hours: 300 pods, 3 times the bound, never more than 1 alive
    for k in range(300):
        clock.t = T0 + H + k * 60 * S
        resp = ing.export(job_pods(k, 1, clock.t))
        assert not resp.HasField("partial_success"), (k, resp.partial_success.error_message)
    assert count(store, series_t) == 301  # 300 pods and the node's capacity
    # live: the last hour's pods, which the bound counts
    assert 55 <= store.live_series(clock.t // S)["cron"] <= 61 < BOUND < 300
    # a burst of more new pods than the bound at once is still refused, with the reason
    clock.t += 3 * H  # everything above is dead now
    resp = ing.export(job_pods(1000, BOUND + 5, clock.t))
    assert resp.partial_success.rejected_data_points == 5
    assert "namespace cron: over its limit of 100 live series" in resp.partial_success.error_message
    # a restart counts from the ledger: the same answer, not "300 series ever seen"
    ing2 = Ingestor(store, max_series_per_namespace=BOUND, now_ns=clock)
    clock.t += 2 * H
    assert not ing2.export(job_pods(2000, BOUND, clock.t)).HasField("partial_success")
    store.close()


def test_known_series_are_never_refused_and_memory_follows_live_series(tmp_path):
    clock = Clock(T0 + H)
    store = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())
    ing = Ingestor(store, max_series_per_namespace=10**6, now_ns=clock)
    ing.export(job_pods(0, BOUND, clock.t))
    clock.t += 30 * 60 * S
    ing.max_series = 1  # known series are never refused, even over the bound
    assert ing.export(job_pods(0, BOUND, clock.t)).partial_success.rejected_data_points == 0
    ing.max_series = 10**6
    for k in range(200):  # 4,000 more pods over 10 h, 20 at a time
        clock.t = T0 + 2 * H + k * 180 * S
        ing.export(job_pods(100 + 20 * k, 20, clock.t))
    # the caches hold what was used in the last two live windows, not the 4,000 series seen
    live_now = 20 * (2 * LIVE_WINDOW_S // 180 + 1)
    assert len(ing._known) <= live_now + 1
    assert store.cached_entries() <= 3 * (live_now + 10)
    store.close()


def test_series_with_no_point_for_the_retention_are_pruned_with_pods_and_nodes(ledger_url):
    ret = Retention(points_days=2, hourly_days=4, daily_days=66)
    store = Store(ledger_url, pricing=pricing(), retention=ret)
    clock = Clock(T0 + H)
    ing = Ingestor(store, now_ns=clock)
    ing.export(job_pods(0, 50, clock.t, node="gone"))  # a node and its pods, then nothing
    for day in range(4):
        clock.t = T0 + H + day * 86400 * S
        ing.export(job_pods(100 + day, 1, clock.t, node="n1"))
    store.refresh(now_s=clock.t // S)
    now = datetime.fromtimestamp(clock.t / S, timezone.utc)
    out = store.apply_retention(now)
    # "gone" (its last point 3 days ago: 50 pods and its capacity) and day 0's pod on n1:
    # pruned (day 1's pod has its point right at the cut, two days ago)
    assert out["series"] == 51 + 1 and out["nodes"] == 1
    with store.engine.connect() as c:
        assert {n for (n,) in c.execute(sa.select(series_t.c.node).distinct())} == {"n1"}
        assert {u for (u,) in c.execute(sa.select(pod_ns_t.c.pod_uid))} == {"job-101", "job-102", "job-103"}
        assert {n for (n,) in c.execute(sa.select(node_facts_t.c.node_key))} == {"/n1"}
        assert {n for (n,) in c.execute(sa.select(node_first_t.c.node_key))} == {"/n1"}
        assert c.execute(sa.select(sa.func.count()).select_from(points_t).where(
            points_t.c.node_key == "/gone")).scalar_one() == 0
    assert store.health.snapshot()["pruned_series"] == 52
    store.close()


def test_a_rebuild_loads_the_series_of_its_hour_not_every_series_the_node_had(ledger_url):
    store = Store(ledger_url, pricing=pricing())
    clock = Clock(T0 + H)
    ing = Ingestor(store, max_series_per_namespace=10**6, now_ns=clock)
    for k in range(20):  # 2,000 pods that lived and died in the first hours
        clock.t = T0 + H + k * 60 * S
        ing.export(job_pods(100 * k, 100, clock.t))
    store.refresh(now_s=clock.t // S)
    before = store.health.snapshot()["rebuild"]
    clock.t = T0 + 5 * H + 600 * S  # a later hour: 3 live pods
    ing.export(job_pods(10**6, 3, clock.t))
    assert store.refresh(now_s=clock.t // S) == 1
    after = store.health.snapshot()["rebuild"]
    # the 3 pods' series and the node's own (capacity): nothing of the 2,000 dead pods
    assert after["series"] - before["series"] == 4
    assert after["points"] - before["points"] == 4
    store.close()


@pytest.mark.parametrize("n", [1])
def test_the_live_count_is_the_ledgers(tmp_path, n):
    store = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())
    ing = Ingestor(store, now_ns=Clock(T0 + H))
    ing.export(job_pods(0, 5, T0 + H))
    assert store.live_series((T0 + H) // S) == {"": 1, "cron": 5}
    assert store.live_series((T0 + H) // S + LIVE_WINDOW_S + 1) == {}
    store.close()
