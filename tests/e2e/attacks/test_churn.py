"""Honest churn against a real `otel-agent cost serve` (issue 12, "honest churn fills the
series bound and then real usage is refused"): a CronJob namespace that has had far more pods
than its series bound keeps getting its new pods in, also after a restart; and a node with
100,000 dead series rebuilds a live hour from the series that have points in it.

The dead series are made beforehand through the real ingest (an Ingestor on the same ledger,
its clock set to the hours when those pods ran), as if an earlier run of the processor had
received them: the live window is an hour of wall clock, which a test cannot wait for."""

from __future__ import annotations

import re

import pytest

from otel_agent.cost.pricing import parse_pricing
from otel_agent.cost.receiver import Ingestor
from otel_agent.cost.store import Store
from tests.support.cost_process import now_hour_ns, query, serving
from tests.unit.cost.builders import S, Res, container_attrs, node_attrs, request
from tests.unit.cost.ledger_helpers import PRICING_YAML

pytestmark = pytest.mark.e2e
MIN = 60 * S
BOUND = 50


def jobs(node: str, t: int, uids, containers: int = 1):
    """One export of `node` with CronJob pods that each ran 20 s (their final counters)."""
    res = [Res(node_attrs(node)).gauge("otel_agent.node.cpu.capacity", [(t, 8.0)])]
    for uid in uids:
        for c in range(containers):
            res.append(Res(container_attrs(uid, f"c{c}", node=node, namespace="cron"))
                       .sum("container.cpu.time", [(t - 20 * S, t, 1.5)], unit="s"))
    return request(*res)


class Clock:
    def __init__(self, t: int):
        self.t = t

    def __call__(self) -> int:
        return self.t


def test_a_cronjob_namespace_keeps_getting_its_new_pods_in(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    start = now_hour_ns() - 8 * 3600 * S
    clock = Clock(start)
    store = Store(url, pricing=parse_pricing(PRICING_YAML, "p.yaml"))
    ing = Ingestor(store, max_series_per_namespace=BOUND, now_ns=clock)
    for k in range(150):  # a CronJob every 2 minutes for 5 hours: 3 × the bound of pods
        clock.t = start + k * 2 * MIN
        resp = ing.export(jobs("n1", clock.t, [f"job-{k}"]).SerializeToString())
        assert not resp.HasField("partial_success"), (k, resp.partial_success.error_message)
    store.close()
    assert query(url, "SELECT count(*) FROM series WHERE namespace = 'cron'")[0][0] == 150
    # the processor restarts; the pods above are dead (their last point hours ago)
    with serving(tmp_path, ledger=url, args=("--max-series-per-namespace", str(BOUND))) as cost:
        t = now_hour_ns() + 30 * S
        resp = cost.export(jobs("n1", t, [f"new-{i}" for i in range(40)]))
        assert not resp.HasField("partial_success"), resp.partial_success.error_message
        # the bound still holds for what is live: 40 + 10 fill it, 10 more are refused
        resp = cost.export(jobs("n1", t + MIN, [f"more-{i}" for i in range(20)]))
        assert resp.partial_success.rejected_data_points == 10
        assert f"namespace cron: over its limit of {BOUND} live series" in resp.partial_success.error_message
        cost.settle()
        assert query(url, "SELECT count(*) FROM series WHERE namespace = 'cron'")[0][0] == 200
        assert cost.alive()


def test_a_live_hour_of_a_node_with_100k_dead_series_rebuilds_from_its_own_series(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    start = now_hour_ns() - 6 * 3600 * S
    clock = Clock(start)
    store = Store(url, pricing=parse_pricing(PRICING_YAML, "p.yaml"))
    ing = Ingestor(store, max_series_per_namespace=10**6, now_ns=clock)
    for k in range(10):  # 1,000 pods of 100 containers each, dead for hours
        clock.t = start + k * MIN
        ing.export(jobs("big", clock.t, [f"dead-{k}-{i}" for i in range(100)], containers=100)
                   .SerializeToString())
    store.refresh(now_s=clock.t // S)
    store.close()
    assert query(url, "SELECT count(*) FROM series WHERE node = 'big'")[0][0] == 100_001
    with serving(tmp_path, ledger=url) as cost:
        t = now_hour_ns() + 30 * S
        for i in range(3):
            cost.export(jobs("big", t + i * MIN, ["live-a", "live-b", "live-c"]))
        cost.settle()
        lines = [ln for ln in cost.log().splitlines() if "refresh:" in ln]
        assert lines, cost.log()[-2000:]
        touched = [tuple(map(int, re.search(r"\((\d+) series, (\d+) points\)", ln).groups()))
                   for ln in lines]
        # the live hour: its 3 pods and the node's capacity series, each with its 3 points;
        # before, every rebuild of this node loaded all 100,001 series
        assert max(s for s, _p in touched) <= 4 and max(p for _s, p in touched) <= 12, touched
