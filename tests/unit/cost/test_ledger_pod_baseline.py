"""Pods that already ran when the ledger first saw their node are a baseline; every other pod
counts from zero.

The agent exports cgroup-file counters with the node's boot time as start, so a pod that has run
for a day arrives with a day of CPU-seconds in its first point. If the ledger first sees the node
in that same export (agent just installed, or a new ledger), that day is not this hour's usage:
only what the pod used after that first point is billed. A pod first seen in any later export
(created after the first export, or while the agent was down) is billed from zero: all of its
usage happened on a node the ledger was watching. Expected figures come from the scenario's
parameters (cores × seconds), not from the ledger code.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings, strategies as st

from otel_agent.cost.ingest import decode
from otel_agent.cost.store import Store, hourly_t, node_first_t
from otel_agent.cost.validate import counter_allowance
from tests.unit.cost.builders import H, S, T0, Res, container_attrs, node_attrs, request
from tests.unit.cost.ledger_helpers import first_arrival_in_window, pricing, snapshot, unbalanced

CAPACITY, ALLOCATABLE, SYSTEM_CORES = 4.0, 3.5, 0.75  # system above the 0.5 reserved
STEP_S = 60
NOW_NS = T0 + 30 * H


@dataclass(frozen=True)
class Pod:
    uid: str
    created_s: float  # seconds after T0 (negative: before the agent came)
    cores: float

    def cpu(self, t_s: float) -> float:
        return self.cores * max(0.0, t_s - self.created_s)


@dataclass(frozen=True)
class Node:
    boot_s: float  # seconds after T0
    pods: tuple[Pod, ...]
    name: str = "node-a"

    @property
    def boot_ns(self) -> int:
        return T0 + int(self.boot_s * S)

    def export(self, t_s: int):
        """What the agent sends at T0 + t_s: every counter starts at boot (cgroup files)."""
        t = T0 + t_s * S
        alive = [p for p in self.pods if p.created_s <= t_s]
        kubepods = sum(p.cpu(t_s) for p in self.pods)  # dead-or-alive usage stays in kubepods
        res = [Res(node_attrs(self.name))
               .sum("k8s.node.cpu.time", [(self.boot_ns, t, kubepods + SYSTEM_CORES * (t_s - self.boot_s))], unit="s")
               .sum("k8s.node.system_container.cpu.time", [(self.boot_ns, t, kubepods)], unit="s")
               .gauge("otel_agent.node.cpu.capacity", [(t, CAPACITY)])
               .gauge("k8s.node.cpu.allocatable", [(t, ALLOCATABLE)])]
        for p in alive:
            res.append(Res(container_attrs(p.uid, "main", node=self.name))
                       .sum("container.cpu.time", [(self.boot_ns, t, p.cpu(t_s))], unit="s"))
        return request(*res)


def _write(store: Store, req) -> None:
    b = decode(req, now_ns=NOW_NS)
    assert b.rejected == 0, b.errors
    store.write(b)


def _hourly(store: Store) -> dict[tuple[int, str, str], float]:
    """(hour index after T0, kind, pod uid) → CPU core-hours."""
    store.refresh()
    out: dict[tuple[int, str, str], float] = defaultdict(float)
    with store.engine.connect() as c:
        for h, kind, uid, q in c.execute(sa.select(hourly_t.c.period_start, hourly_t.c.kind,
                                                   hourly_t.c.pod_uid, hourly_t.c.usage_qty)
                                         .where(hourly_t.c.resource == "cpu")):
            out[((h * S - T0) // H, kind, uid)] += q
    return dict(out)


@pytest.fixture
def store(ledger_url):
    s = Store(ledger_url, pricing=pricing())
    yield s
    s.close()


# A node up for two days; "old" has burned 1.5 cores for a day when the agent is installed at
# T0 + 10 min. The agent exports every minute until the last minute of hour 1.
FIRST_S, LAST_S = 600, 2 * 3600 - STEP_S
OLD = Pod("old", -86400, 1.5)
INSTALL = Node(-2 * 86400, (OLD,))
EXPORTS = range(FIRST_S, LAST_S + 1, STEP_S)


def _last_export_before(t_s: int) -> int:
    return max(e for e in EXPORTS if e < t_s)


def test_fresh_install_bills_pre_existing_pods_only_after_the_first_point(store):
    for t_s in EXPORTS:
        _write(store, INSTALL.export(t_s))
    got = _hourly(store)
    # Hour 0 holds the intervals ending in it: from the first export to the last one before 1 h.
    h0_s = _last_export_before(3600) - FIRST_S
    assert got[(0, "container", "old")] == pytest.approx(OLD.cores * h0_s / 3600)
    assert got[(1, "container", "old")] == pytest.approx(OLD.cores * (LAST_S - FIRST_S - h0_s) / 3600)
    # The node's parts fit its capacity: nothing from before the install is in the hour.
    for h in (0, 1):
        assert got[(h, "idle", "")] > 0
        assert got[(h, "node", "")] == pytest.approx(
            CAPACITY * (min(3600 * (h + 1), LAST_S + 300) - max(3600 * h, FIRST_S)) / 3600)
    assert unbalanced(store) == []


def test_pods_created_after_the_first_export_are_billed_from_zero(store):
    # "early" starts 10 s after the first export, before the second; "job" lives 20 s between
    # two exports and is seen once; "late" starts half an hour in.
    early, job, late = Pod("early", FIRST_S + 10, 1.0), Pod("job", 1810, 2.0), Pod("late", 1800 + 30, 0.5)
    node = Node(INSTALL.boot_s, (OLD, early, late))
    for t_s in EXPORTS:
        req = node.export(t_s)
        if t_s == 1860:  # the only export that saw the job (its cgroup's last counters)
            req.resource_metrics.extend(request(Res(container_attrs("job", "main")).sum(
                "container.cpu.time", [(node.boot_ns, T0 + t_s * S, job.cores * 20)], unit="s")
            ).resource_metrics)
        _write(store, req)
    got = _hourly(store)
    end_h0 = _last_export_before(3600)
    assert got[(0, "container", "early")] == pytest.approx(early.cpu(end_h0) / 3600)
    assert got[(0, "container", "early")] + got[(1, "container", "early")] == pytest.approx(
        early.cores * (LAST_S - early.created_s) / 3600)
    assert got[(0, "container", "job")] == pytest.approx(job.cores * 20 / 3600)
    assert got[(0, "container", "late")] == pytest.approx(late.cpu(end_h0) / 3600)
    assert got[(0, "container", "late")] + got[(1, "container", "late")] == pytest.approx(
        late.cores * (LAST_S - late.created_s) / 3600)
    assert unbalanced(store) == []


def test_agent_restart_neither_double_counts_nor_loses(ledger_url):
    # The agent is down from T0 + 40 min to T0 + 50 min (no exports); "gap" is created at
    # T0 + 45 min. The cost processor restarts too (a new Store on the same ledger).
    gap = Pod("gap", 2700, 1.0)
    node = Node(INSTALL.boot_s, (OLD, gap))
    down = range(2400 + STEP_S, 3000, STEP_S)
    s = Store(ledger_url, pricing=pricing())
    for t_s in EXPORTS:
        if t_s in down:
            continue
        if t_s == 3000:
            s.close()
            s = Store(ledger_url, pricing=pricing())
        _write(s, node.export(t_s))
    got = _hourly(s)
    s.close()
    # the old pod: every second after the first point once, the outage included
    assert got[(0, "container", "old")] + got[(1, "container", "old")] == pytest.approx(
        OLD.cores * (LAST_S - FIRST_S) / 3600)
    # the pod created while the agent was down: from its creation
    assert got[(0, "container", "gap")] + got[(1, "container", "gap")] == pytest.approx(
        gap.cores * (LAST_S - gap.created_s) / 3600)
    assert got[(0, "container", "gap")] == pytest.approx(gap.cpu(_last_export_before(3600)) / 3600)


def test_a_new_node_is_billed_from_boot(store):
    # Booted a minute before its first export; its pods started with it.
    boot_s = FIRST_S - 60
    a, b = Pod("a", boot_s + 5, 1.0), Pod("b", boot_s + 20, 0.25)
    node = Node(boot_s, (a, b))
    for t_s in EXPORTS:
        _write(store, node.export(t_s))
    got = _hourly(store)
    for p in (a, b):
        assert got[(0, "container", p.uid)] + got[(1, "container", p.uid)] == pytest.approx(
            p.cores * (LAST_S - p.created_s) / 3600)
    # the machine's own use since boot is overhead (above the reserved): none of it is lost
    system = got[(0, "overhead", "")] + got[(1, "overhead", "")]  # hour 2: the gauges' tail
    assert SYSTEM_CORES > CAPACITY - ALLOCATABLE
    assert system == pytest.approx(SYSTEM_CORES * (LAST_S - boot_s) / 3600)
    assert unbalanced(store) == []


# --- order independence ------------------------------------------------------------------------

# "edge" is created 10 s before the first export of hour 1: when hour 1 arrives first, it looks
# like a pod of the node's first export.
ORDER_NODE = Node(INSTALL.boot_s, (OLD, Pod("early", FIRST_S + 10, 1.0), Pod("late", 1830, 0.5),
                                   Pod("edge", 3590, 0.25)))
ORDER_EXPORTS = list(range(FIRST_S, 2 * 3600 + 1, 300))


def _reference(tmp_path) -> list[tuple]:
    ref = Store(f"sqlite:///{tmp_path}/ref.db", pricing=pricing())
    for t_s in ORDER_EXPORTS:
        _write(ref, ORDER_NODE.export(t_s))
    snap = snapshot(ref)
    ref.close()
    return snap


def test_the_first_hour_arriving_last_gives_the_same_ledger(ledger_url, tmp_path):
    # Until hour 0's exports arrive, hour 1's first export looks like the node's first: a
    # rebuild in between takes its pods ("edge" too) as a baseline; hour 0 must undo that.
    expected = _reference(tmp_path)
    s = Store(ledger_url, pricing=pricing())
    for t_s in ORDER_EXPORTS:
        if t_s >= 3600:
            _write(s, ORDER_NODE.export(t_s))
    s.refresh()
    for t_s in reversed(ORDER_EXPORTS):
        if t_s < 3600:
            _write(s, ORDER_NODE.export(t_s))
    assert snapshot(s) == expected
    got = _hourly(s)
    end_h1 = max(e for e in ORDER_EXPORTS if e < 2 * 3600)
    assert got[(1, "container", "edge")] == pytest.approx(0.25 * (end_h1 - 3590) / 3600)
    with s.engine.connect() as c:
        assert c.execute(sa.select(node_first_t.c.first_ns)).scalar_one() == T0 + FIRST_S * S
    s.close()


def test_a_late_first_point_of_another_series_undoes_the_baselines(ledger_url, tmp_path):
    # Only a capacity reading from T0 + 10 min comes late (a split request): no counter has a
    # point before hour 1, yet hour 1's pods were not in the node's first export after all.
    early_gauge = request(Res(node_attrs()).gauge("otel_agent.node.cpu.capacity",
                                                  [(T0 + FIRST_S * S, CAPACITY)]))
    hour1 = [ORDER_NODE.export(t_s) for t_s in ORDER_EXPORTS if t_s >= 3600]
    ref = Store(f"sqlite:///{tmp_path}/ref.db", pricing=pricing())
    for r in [early_gauge, *hour1]:
        _write(ref, r)
    expected = snapshot(ref)
    ref.close()
    s = Store(ledger_url, pricing=pricing())
    for r in hour1:
        _write(s, r)
    s.refresh()
    _write(s, early_gauge)
    assert snapshot(s) == expected
    got = _hourly(s)
    # "edge" counts from its creation. "old" missed the node's first export, so it is not a
    # baseline; its first point claims its whole life, but no counter can claim more than the
    # node's cores since the node's previous point (the capacity reading at FIRST_S): that is
    # what is billed for it, then its own usage after its first point.
    end_h1 = max(e for e in ORDER_EXPORTS if e < 2 * 3600)
    assert got[(1, "container", "edge")] == pytest.approx(0.25 * (end_h1 - 3590) / 3600)
    bound = counter_allowance(CAPACITY, (3600 - FIRST_S) * S) / 3600
    assert OLD.cpu(3600) / 3600 > 10 * bound
    assert got[(1, "container", "old")] == pytest.approx(bound + OLD.cores * (end_h1 - 3600) / 3600)
    s.close()


def test_shuffled_duplicated_batches_give_the_same_ledger(ledger_url, tmp_path):
    expected = _reference(tmp_path)
    times = ORDER_EXPORTS * 2
    random.Random(7).shuffle(times)
    times = first_arrival_in_window(times, lambda t_s: T0 + t_s * S)
    reqs = [ORDER_NODE.export(t_s) for t_s in times]
    s = Store(ledger_url, pricing=pricing())
    for i, r in enumerate(reqs):
        _write(s, r)
        if i % 5 == 0:
            s.refresh()
    assert snapshot(s) == expected
    s.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(len(ORDER_EXPORTS))), refresh_every=st.integers(1, 6),
       reopen_at=st.integers(0, len(ORDER_EXPORTS)))
def test_any_order_and_any_restart_give_the_same_ledger(tmp_path_factory, order, refresh_every,
                                                         reopen_at):
    d = tmp_path_factory.mktemp("order")
    expected = _reference(d)
    order = first_arrival_in_window(list(order), lambda j: T0 + ORDER_EXPORTS[j] * S)
    url = f"sqlite:///{d}/l.db"
    s = Store(url, pricing=pricing())
    for i, j in enumerate(order):
        if i == reopen_at:  # the cost processor restarts: its caches start empty
            s.close()
            s = Store(url, pricing=pricing())
        _write(s, ORDER_NODE.export(ORDER_EXPORTS[j]))
        if i % refresh_every == 0:
            s.refresh()
    assert snapshot(s) == expected
    assert unbalanced(s) == []
    s.close()


def test_a_ledger_from_before_node_first_learns_it_from_its_points(tmp_path):
    url = f"sqlite:///{tmp_path}/l.db"
    s = Store(url, pricing=pricing())
    for t_s in ORDER_EXPORTS[:3]:
        _write(s, ORDER_NODE.export(t_s))
    with s.engine.begin() as c:
        c.execute(sa.delete(node_first_t))
    s.close()
    s = Store(url, pricing=pricing())
    with s.engine.connect() as c:
        assert c.execute(sa.select(node_first_t.c.first_ns)).scalar_one() == T0 + FIRST_S * S
    s.close()
