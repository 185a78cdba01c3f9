"""Property tests: any interleaving, duplication or reordering of export batches yields the
same ledger, and money is conserved (allocated + overhead + idle = node, to the micro-unit).

"Any" within the first-seen rule (validate.FIRST_SEEN_WINDOW_NS): the node's first arrival
lies within the window of its first point; after it, any order."""

from __future__ import annotations

import itertools
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from otel_agent.cost.allocation import allocations
from otel_agent.cost.store import Store
from otel_agent.cost.types import Model, SharePolicy, Window
from tests.unit.cost import scenario
from tests.unit.cost.ledger_helpers import (first_arrival_in_window, ingest, pricing, snapshot,
                                            unbalanced)

ITEMS = scenario.items(duration_s=2 * 3600, step_s=300)
_counter = itertools.count()


def _reference() -> list[tuple]:
    d = tempfile.mkdtemp()
    s = Store(f"sqlite:///{d}/ref.db", pricing=pricing())
    ingest(s, scenario.per_export(ITEMS))
    snap = snapshot(s)
    s.close()
    return snap


REFERENCE = _reference()


@st.composite
def deliveries(draw):
    """Each point delivered 1-3 times, in batches of random size, in random order, with ledger
    rebuilds at random moments in between."""
    idx = []
    for i in range(len(ITEMS)):
        idx += [i] * draw(st.integers(1, 3))
    order = first_arrival_in_window(draw(st.permutations(idx)), lambda j: ITEMS[j].time)
    cuts = sorted(set(draw(st.lists(st.integers(1, len(order) - 1), max_size=12))))
    bounds = [0, *cuts, len(order)]
    batches = [[ITEMS[j] for j in order[a:b]] for a, b in zip(bounds, bounds[1:])]
    refresh_after = draw(st.sets(st.integers(0, len(batches) - 1), max_size=4))
    return batches, refresh_after


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_any_delivery_order_gives_the_same_ledger(plan):
    batches, refresh_after = plan
    d = tempfile.mkdtemp()
    s = Store(f"sqlite:///{d}/l{next(_counter)}.db", pricing=pricing())
    for i, b in enumerate(batches):
        ingest(s, [b])
        if i in refresh_after:
            s.refresh()
    assert snapshot(s) == REFERENCE
    assert unbalanced(s) == []
    s.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(share=st.sampled_from(list(SharePolicy)), by_node=st.booleans(),
       aggregate=st.sampled_from(["namespace", "workload", "pod", "container", "label:team"]),
       model=st.sampled_from([Model.CHARGEBACK, Model.REQUEST_OR_USAGE]),
       step_h=st.sampled_from([None, 1, 2]))
def test_money_is_conserved_by_every_query(share, by_node, aggregate, model, step_h):
    from datetime import datetime, timedelta, timezone

    d = tempfile.mkdtemp()
    s = Store(f"sqlite:///{d}/m{next(_counter)}.db", pricing=pricing())
    ingest(s, scenario.per_export(ITEMS))
    t0 = datetime.fromtimestamp(scenario.T0 / 1e9, timezone.utc)
    w = Window(t0, t0 + timedelta(hours=3))
    from otel_agent.cost.allocation import reconcile

    rec = reconcile(s, w, model=model)
    node_micros = sum(r.node_micros for r in rec)
    net_micros = 0
    res = allocations(s, w, aggregate=aggregate, model=model, share_idle=share,
                      idle_by_node=by_node, step=timedelta(hours=step_h) if step_h else None)
    total = sum(a.total_cost for step in res for a in step)
    net_micros = sum(a.network_cost for step in res for a in step)
    assert round((total - net_micros) * 1_000_000) == node_micros
    s.close()
