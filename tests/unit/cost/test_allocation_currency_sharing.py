"""Reports label money with the ledger's currency, not the currency of whatever pricing the
report was opened with; and with idle shared, the shared __idle__/__overhead__ rows are gone."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest

from otel_agent.cost.allocation import allocations
from otel_agent.cost.errors import QueryError
from otel_agent.cost.ingest import decode
from otel_agent.cost.pricing import default_pricing, parse_pricing
from otel_agent.cost.report_cli import main as report_main
from otel_agent.cost.store import Store
from otel_agent.cost.types import IDLE, OVERHEAD, UNALLOCATED, Model, SharePolicy, Window
from tests.unit.cost import scenario
from tests.unit.cost.builders import S, Res, node_attrs, request
from tests.unit.cost.ledger_helpers import PRICING_YAML, ingest, pricing

EUR = parse_pricing(PRICING_YAML.replace("currency: USD", "currency: EUR"), "eur.yaml")
T0 = datetime.fromtimestamp(scenario.T0 / 1e9, timezone.utc)
HOUR0 = Window(T0, T0 + timedelta(hours=1))
HOUR1 = Window(T0 + timedelta(hours=1), T0 + timedelta(hours=2))
BOTH = Window(T0, T0 + timedelta(hours=2))
MONEY_MODELS = [Model.CHARGEBACK, Model.REQUEST_OR_USAGE]


def _items_before(t_s: int):
    return [it for it in scenario.items(duration_s=2 * 3600, step_s=300)
            if it.time < scenario.T0 + t_s * S]


def test_a_eur_ledger_read_with_default_pricing_is_labelled_eur(ledger_url):
    assert default_pricing().currency != "EUR"
    s = Store(ledger_url, pricing=EUR)
    ingest(s, scenario.per_export(_items_before(2 * 3600)))
    s.refresh()
    s.close()
    s = Store(ledger_url, pricing=default_pricing())
    try:
        for model in MONEY_MODELS:
            [res] = allocations(s, BOTH, model=model, refresh=False)
            assert res and {a.currency for a in res} == {"EUR"}
    finally:
        s.close()


def test_a_window_priced_in_two_currencies_is_refused(ledger_url):
    # Hour 0 was priced in EUR; then the pricing file switched to USD and hour 1 was built.
    s = Store(ledger_url, pricing=EUR)
    ingest(s, scenario.per_export(_items_before(3600)))
    s.refresh()
    s.close()
    s = Store(ledger_url, pricing=pricing())
    try:
        ingest(s, scenario.per_export([it for it in _items_before(2 * 3600)
                                       if it.time >= scenario.T0 + 3600 * S]))
        s.refresh()
        assert {a.currency for a in allocations(s, HOUR0, refresh=False)[0]} == {"EUR"}
        assert {a.currency for a in allocations(s, HOUR1, refresh=False)[0]} == {"USD"}
        for model in MONEY_MODELS:
            with pytest.raises(QueryError, match="EUR and USD"):
                allocations(s, BOTH, model=model, step=timedelta(hours=1), refresh=False)
        # quantities alone do not add money up: the usage model still answers
        [usage] = allocations(s, BOTH, model=Model.USAGE, refresh=False)
        assert usage and all(a.total_cost == 0 for a in usage)
    finally:
        s.close()
    if not ledger_url.startswith("sqlite:///"):
        return
    out, err = io.StringIO(), io.StringIO()
    window = f"{BOTH.start.isoformat()},{BOTH.end.isoformat()}".replace("+00:00", "Z")
    code = report_main(["--ledger", ledger_url, "--window", window, "--format", "json"],
                       stdout=out, stderr=err)
    assert code == 2
    assert "EUR and USD" in err.getvalue() and "Traceback" not in err.getvalue()
    assert out.getvalue() == ""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(f"sqlite:///{tmp_path_factory.mktemp('share')}/l.db", pricing=pricing())
    ingest(s, scenario.per_export(_items_before(2 * 3600)))
    yield s
    s.close()


@pytest.mark.parametrize("policy", [SharePolicy.PROPORTIONAL, SharePolicy.EVEN])
@pytest.mark.parametrize("by_node", [False, True])
@pytest.mark.parametrize("model", MONEY_MODELS + [Model.SHOWBACK_RATIO])
def test_shared_idle_and_overhead_rows_are_dropped(store, policy, by_node, model):
    [none] = allocations(store, BOTH, model=model)
    names = {a.name for a in none}
    assert {IDLE, OVERHEAD, UNALLOCATED} <= names  # the scenario has all three, with money
    assert all(a.total_cost > 0 for a in none if a.name in (IDLE, OVERHEAD))
    [shared] = allocations(store, BOTH, model=model, share_idle=policy, idle_by_node=by_node)
    left = {a.name for a in shared}
    assert not any(n.endswith((IDLE, OVERHEAD)) for n in left), left
    assert any(n.endswith(UNALLOCATED) for n in left)  # never shared
    assert sum(a.total_cost for a in shared) == pytest.approx(sum(a.total_cost for a in none))


def test_a_pool_with_no_tenant_stays_on_its_rows(tmp_path):
    # A node with capacity and its own usage but no pod: nobody to share idle/overhead with.
    s = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())
    try:
        for k in range(1, 13):
            t = scenario.T0 + k * 300 * S
            b = request(Res(node_attrs("lonely"))
                        .sum("k8s.node.cpu.time", [(scenario.T0, t, 0.5 * k * 300)], unit="s")
                        .gauge("otel_agent.node.cpu.capacity", [(t, 2.0)])
                        .gauge("k8s.node.cpu.allocatable", [(t, 1.8)]))
            s.write(decode(b, now_ns=scenario.NOW_NS))
        [none] = allocations(s, BOTH)
        [shared] = allocations(s, BOTH, share_idle=SharePolicy.PROPORTIONAL)
        assert {a.name for a in shared} == {a.name for a in none} == {IDLE, OVERHEAD}
        assert {a.name: a.total_cost for a in shared} == {a.name: a.total_cost for a in none}
    finally:
        s.close()
