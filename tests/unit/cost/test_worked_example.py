"""README "The cost processor", Allocation models: the worked example, built through the real
ingest, ledger and allocation code.

One hour of a node with 4 cores of capacity and 3.5 allocatable at 0.031611 per core-hour. The
machine used 3.0 cores, pods (kubepods) 2.5 of them; team-a used 1.5 and requested 2.0; a pod
with no metadata used 0.5; the other 0.5 ran in kubepods under no live pod. The agent exports
every minute; counters start at the hour (a node booted then), so the hour holds all of it.

Every expected figure is derived here from those parameters and the rate: quantities × rate,
rounded half-even to micro-units (the ledger's money), with __idle__ taking the rounding
remainder so that the parts add up to the node exactly.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest

from otel_agent.cost.allocation import allocations, reconcile
from otel_agent.cost.ingest import decode
from otel_agent.cost.store import Store
from otel_agent.cost.types import IDLE, OVERHEAD, UNALLOCATED, Model, SharePolicy, Window
from tests.unit.cost.builders import H, S, T0, Res, container_attrs, node_attrs, request
from tests.unit.cost.ledger_helpers import pricing

RATE = Decimal("0.031611")  # per core-hour, as in ledger_helpers.PRICING_YAML
CAPACITY, ALLOCATABLE = 4.0, 3.5
MACHINE, KUBEPODS = 3.0, 2.5
TEAM_A, TEAM_A_REQUEST = 1.5, 2.0
NO_META = 0.5
UNKNOWN_NS = "__unknown__"
STEP_S = 60
WINDOW = Window(datetime.fromtimestamp(T0 / 1e9, timezone.utc),
                datetime.fromtimestamp(T0 / 1e9, timezone.utc) + timedelta(hours=1))

# --- what the README's table should say, from the parameters alone --------------------------

UNALLOCATED_CORES = KUBEPODS - TEAM_A - NO_META
OVERHEAD_CORES = max(CAPACITY - ALLOCATABLE, MACHINE - KUBEPODS)


def micros(core_hours: float) -> int:
    return int((Decimal(repr(core_hours)) * RATE * 1_000_000).to_integral_value(ROUND_HALF_EVEN))


NODE_MICROS = micros(CAPACITY)


def usage_micros() -> dict[str, int]:
    parts = {"team-a": micros(TEAM_A), UNKNOWN_NS: micros(NO_META),
             UNALLOCATED: micros(UNALLOCATED_CORES), OVERHEAD: micros(OVERHEAD_CORES)}
    parts[IDLE] = NODE_MICROS - sum(parts.values())
    return parts


def ror_micros() -> dict[str, int]:
    parts = {"team-a": micros(max(TEAM_A, TEAM_A_REQUEST)), UNKNOWN_NS: micros(NO_META),
             UNALLOCATED: micros(UNALLOCATED_CORES), OVERHEAD: micros(OVERHEAD_CORES)}
    parts[IDLE] = NODE_MICROS - sum(parts.values())
    return parts


# --- the scenario, as the agent exports it ------------------------------------------------------

def _exports():
    na = node_attrs("n1")
    team = container_attrs("pa", "app", node="n1", namespace="team-a")
    nometa = container_attrs("pb", "main", node="n1", namespace=None)
    out = []
    # counters: every minute from the hour's start; the last reading closes the hour (1 ns
    # before it, so its interval is billed in this hour)
    times = [T0 + k * STEP_S * S for k in range(3600 // STEP_S)] + [T0 + H - 1]
    for t in times:
        e = round((t - T0) / S)  # elapsed seconds (the last reading: the whole hour)
        out.append(request(
            Res(na).sum("k8s.node.cpu.time", [(T0, t, MACHINE * e)], unit="s")
                   .sum("k8s.node.system_container.cpu.time", [(T0, t, KUBEPODS * e)], unit="s")
                   .gauge("otel_agent.node.cpu.capacity", [(t, CAPACITY)])
                   .gauge("k8s.node.cpu.allocatable", [(t, ALLOCATABLE)]),
            Res(team).sum("container.cpu.time", [(T0, t, TEAM_A * e)], unit="s")
                     .gauge("k8s.container.cpu.request.desired", [(t, TEAM_A_REQUEST)]),
            Res(nometa).sum("container.cpu.time", [(T0, t, NO_META * e)], unit="s")))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(f"sqlite:///{tmp_path_factory.mktemp('readme')}/l.db", pricing=pricing())
    for req in _exports():
        b = decode(req, now_ns=T0 + 2 * H)
        assert b.rejected == 0, b.errors
        s.write(b)
    s.refresh()
    yield s
    s.close()


def _by_name(store, **kw):
    [res] = allocations(store, WINDOW, aggregate="namespace", **kw)
    return {a.name: a for a in res}


def test_the_ledger_reconciles_to_the_nodes_cost(store):
    [rec] = reconcile(store, WINDOW)
    assert rec.balanced and rec.node_micros == NODE_MICROS


def test_usage(store):
    got = _by_name(store, model=Model.USAGE)
    idle = CAPACITY - TEAM_A - NO_META - UNALLOCATED_CORES - OVERHEAD_CORES
    expected = {"team-a": TEAM_A, UNKNOWN_NS: NO_META, UNALLOCATED: UNALLOCATED_CORES,
                OVERHEAD: OVERHEAD_CORES, IDLE: idle}
    assert {n: pytest.approx(a.cpu_core_hours) for n, a in got.items()} == expected
    assert all(a.total_cost == 0 for a in got.values())


def test_chargeback(store):
    got = _by_name(store, model=Model.CHARGEBACK)
    assert {n: round(a.total_cost * 1e6) for n, a in got.items()} == usage_micros()
    assert all(a.currency == "USD" for a in got.values())


def test_chargeback_shared_proportionally(store):
    got = _by_name(store, model=Model.CHARGEBACK, share_idle=SharePolicy.PROPORTIONAL)
    own = usage_micros()
    pool = own[IDLE] + own[OVERHEAD]
    tenants = ("team-a", UNKNOWN_NS)
    weight = sum(own[t] for t in tenants)
    assert set(got) == {*tenants, UNALLOCATED}  # idle and overhead are gone, shared
    for t in tenants:
        assert got[t].shared_cost * 1e6 == pytest.approx(pool * own[t] / weight, abs=1)
        assert round(got[t].total_cost * 1e6) == own[t] + round(got[t].shared_cost * 1e6)
    assert round(sum(got[t].shared_cost for t in tenants) * 1e6) == pool
    assert round(got[UNALLOCATED].total_cost * 1e6) == own[UNALLOCATED]


def test_chargeback_shared_evenly(store):
    got = _by_name(store, model=Model.CHARGEBACK, share_idle=SharePolicy.EVEN)
    own = usage_micros()
    pool = own[IDLE] + own[OVERHEAD]
    shares = sorted(round(got[t].shared_cost * 1e6) for t in ("team-a", UNKNOWN_NS))
    assert sum(shares) == pool and shares == [pool // 2, pool - pool // 2]


def test_request_or_usage(store):
    got = _by_name(store, model=Model.REQUEST_OR_USAGE)
    assert {n: round(a.total_cost * 1e6) for n, a in got.items()} == ror_micros()
    assert got["team-a"].cpu_core_hours == pytest.approx(max(TEAM_A, TEAM_A_REQUEST))
    assert got[IDLE].cpu_core_hours == pytest.approx(
        CAPACITY - max(TEAM_A, TEAM_A_REQUEST) - NO_META - UNALLOCATED_CORES - OVERHEAD_CORES)


def test_showback_ratio(store):
    got = _by_name(store, model=Model.SHOWBACK_RATIO)
    own = usage_micros()
    for name, a in got.items():
        assert a.total_cost == pytest.approx(own[name] / NODE_MICROS)
        assert a.currency == "ratio"
    assert sum(a.total_cost for a in got.values()) == pytest.approx(1.0)


def _derived(store) -> dict[tuple[str, str], float]:
    """(README row, column) → the figure as the ledger computes it, from the parameters above."""
    own, ror = usage_micros(), ror_micros()
    prop = _by_name(store, model=Model.CHARGEBACK, share_idle=SharePolicy.PROPORTIONAL)
    cols = ("team-a", UNKNOWN_NS, UNALLOCATED, OVERHEAD, IDLE)
    usage = _by_name(store, model=Model.USAGE)
    out = {}
    for c in cols:
        out[("usage", c)] = usage[c].cpu_core_hours
        out[("chargeback", c)] = own[c] / 1e6
        out[("request-or-usage", c)] = ror[c] / 1e6
        if c in prop:
            out[("proportional", c)] = prop[c].total_cost
    out[("showback-ratio", "team-a")] = own["team-a"] / NODE_MICROS
    pool = own[IDLE] + own[OVERHEAD]
    out[("even", "pool")] = pool / 1e6
    out[("even", "shares")] = (pool // 2 / 1e6, (pool - pool // 2) / 1e6)
    return out


def _readme_figures() -> dict[tuple[str, str], object]:
    """The worked example as README.md states it: each cell's first number, as written."""
    text = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    start = text.index("**Allocation models**, on one worked example")
    section = text[start:text.index("**Reports.**", start)]
    rows = [ln for ln in section.splitlines() if ln.startswith("| `")]
    cols = ("team-a", UNKNOWN_NS, UNALLOCATED, OVERHEAD, IDLE)
    names = {"`usage`": "usage", "`chargeback` ($)": "chargeback",
             "`chargeback`, `--share-idle proportional`": "proportional",
             "`request-or-usage`": "request-or-usage", "`showback-ratio`": "showback-ratio"}
    out: dict[tuple[str, str], object] = {}
    for ln in rows:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        label = next(v for k, v in names.items() if cells[0].startswith(k))
        for col, cell in zip(cols, cells[1:]):
            m = re.match(r"[≈~]?\$?([0-9]+\.[0-9]+)", cell)
            if m:
                out[(label, col)] = m.group(1)
    m = re.search(r"idle \+ overhead \(\$([0-9.]+)\).*?\(\$([0-9.]+) /\s+\$([0-9.]+)", section, re.S)
    assert m, "README: the even-sharing sentence is gone"
    out[("even", "pool")] = m.group(1)
    out[("even", "shares")] = (m.group(2), m.group(3))
    return out


# Cells of README.md's table known to differ from the ledger (none: keep it that way).
README_KNOWN_WRONG: set = set()


def test_the_readme_states_the_ledgers_figures(store):
    derived = _derived(store)
    stated = _readme_figures()
    assert len(stated) >= 20, stated  # the table was read, not skipped over
    wrong = {}
    for key, text in stated.items():
        want = derived[key]
        if isinstance(text, tuple):
            ok = sorted(float(x) for x in text) == pytest.approx(sorted(want), abs=1e-9)
        else:
            places = len(text.split(".")[1])
            ok = float(text) == pytest.approx(round(want, places), abs=10 ** -(places + 2))
        if not ok:
            wrong[key] = (text, want)
    assert set(wrong) == README_KNOWN_WRONG, wrong
