"""Shared by the ledger tests: ingest batches, snapshot the ledger, sum it independently."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa

from otel_agent.cost.ingest import decode
from otel_agent.cost.pricing import parse_pricing
from otel_agent.cost.store import LEDGER_COLUMNS, Store, hourly_t
from tests.unit.cost.scenario import NOW_NS, pack

PRICING_YAML = """\
currency: USD
rates:
  cpu_core_hour: 0.031611
  memory_gib_hour: 0.004237
  gpu_hour: 0.95
  storage_gib_hour: 0.0000548
  network_gib: {pod-network: 0, cluster-private: 0.01, internet: 0.12}
"""


def first_arrival_in_window(seq: list, time_of) -> list:
    """`seq` reordered so that its first element is within the first-seen window of the
    earliest (validate.FIRST_SEEN_WINDOW_NS): ingest is order-independent as long as a node's
    first arrival is that close to its first point, which is what retries and queues produce.
    Everything else keeps its order. `time_of(x)` is the earliest point time of an element."""
    from otel_agent.cost.validate import FIRST_SEEN_WINDOW_NS

    earliest = min(time_of(x) for x in seq)
    j = next(i for i, x in enumerate(seq) if time_of(x) <= earliest + FIRST_SEEN_WINDOW_NS)
    return [seq[j], *seq[:j], *seq[j + 1:]]


def pricing():
    return parse_pricing(PRICING_YAML, "test-pricing.yaml")


def ingest(store: Store, batches, now_ns: int = NOW_NS) -> None:
    for b in batches:
        store.write(decode(pack(b), now_ns=now_ns))


def snapshot(store: Store, table=hourly_t) -> list[tuple]:
    store.refresh()
    cols = [table.c[n] for n in LEDGER_COLUMNS]
    with store.engine.connect() as c:
        rows = c.execute(sa.select(*cols)).all()
    out = []
    for r in rows:
        out.append(tuple(round(v, 6) if isinstance(v, float) else v for v in r))
    return sorted(out)


def totals(store: Store) -> dict[tuple[str, str, str, str], float]:
    """(kind, pod_uid, container, resource) → usage summed over every hour."""
    store.refresh()
    acc: dict[tuple[str, str, str, str], float] = defaultdict(float)
    with store.engine.connect() as c:
        for kind, uid, cont, res, q in c.execute(sa.select(
                hourly_t.c.kind, hourly_t.c.pod_uid, hourly_t.c.container, hourly_t.c.resource,
                hourly_t.c.usage_qty)):
            acc[(kind, uid, cont, res)] += q
    return dict(acc)


def unbalanced(store: Store) -> list[tuple]:
    """Node-hours whose parts do not add up to the node, per model column (should be [])."""
    store.refresh()
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    with store.engine.connect() as c:
        for cl, node, h, res, kind, cu, cr in c.execute(sa.select(
                hourly_t.c.cluster, hourly_t.c.node, hourly_t.c.period_start, hourly_t.c.resource,
                hourly_t.c.kind, hourly_t.c.cost_usage_micros, hourly_t.c.cost_ror_micros)):
            if res.startswith("network:"):
                continue
            s = sums[(cl, node, h, res)]
            if kind == "node":
                s[2] += cu
                s[3] += cr
            else:
                s[0] += cu
                s[1] += cr
    return [(k, v) for k, v in sums.items() if v[0] != v[2] or v[1] != v[3]]
