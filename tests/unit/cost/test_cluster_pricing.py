"""Many clusters in one ledger, each priced by its own section of the pricing file (its region's
rates, its currency): rows carry the cluster's currency, a report within one cluster is in that
currency, and a report that would add two currencies is refused with a clear error."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from otel_agent.cost.allocation import allocations
from otel_agent.cost.errors import PricingError, QueryError
from otel_agent.cost.pricing import parse_pricing
from otel_agent.cost.store import Store
from otel_agent.cost.types import Window
from tests.unit.cost import scenario
from tests.unit.cost.ledger_helpers import PRICING_YAML, ingest, snapshot

CLUSTERS_YAML = PRICING_YAML + """\
clusters:
  eu-prod:
    currency: EUR
    rates: {cpu_core_hour: 0.05}
  us-cheap:
    nodes:
      - match: {k8s.node.name: n1}
        cpu_core_hour: 0.01
"""
T0 = datetime.fromtimestamp(scenario.T0 / 1e9, timezone.utc)
WINDOW = Window(T0, T0 + timedelta(hours=3))


def _in_cluster(cluster: str):
    return [[dataclasses.replace(it, attrs=it.attrs + (("k8s.cluster.name", cluster),)) for it in b]
            for b in scenario.per_export(scenario.items())]


@pytest.fixture
def store(ledger_url):
    s = Store(ledger_url, pricing=parse_pricing(CLUSTERS_YAML, "pricing.yaml"))
    for c in ("eu-prod", "us-cheap", "us-default"):
        ingest(s, _in_cluster(c))
    yield s
    s.close()


def test_each_cluster_is_priced_by_its_section(store):
    rows = snapshot(store)
    cur = {r[1]: r[-1] for r in rows}  # (period, cluster, ...) → currency
    assert cur == {"eu-prod": "EUR", "us-cheap": "USD", "us-default": "USD"}

    def cpu_cost(cluster: str) -> int:
        return sum(r[15] for r in rows if r[1] == cluster and r[9] == "node" and r[10] == "cpu")

    base = cpu_cost("us-default")
    assert base > 0
    assert cpu_cost("eu-prod") == pytest.approx(base * 0.05 / 0.031611, rel=1e-4)
    assert cpu_cost("us-cheap") == pytest.approx(base * 0.01 / 0.031611, rel=1e-4)


def test_a_report_within_a_cluster_is_in_its_currency_and_across_two_currencies_is_refused(store):
    [eu] = allocations(store, WINDOW, aggregate="namespace", filter='cluster:"eu-prod"')
    assert {a.currency for a in eu} == {"EUR"}
    [us] = allocations(store, WINDOW, aggregate="cluster", filter='cluster:"us-cheap","us-default"')
    assert {a.name for a in us} >= {"us-cheap", "us-default"} and {a.currency for a in us} == {"USD"}
    with pytest.raises(QueryError, match=r"EUR and USD.*filter=cluster"):
        allocations(store, WINDOW, aggregate="cluster")


@pytest.mark.parametrize("body, message", [
    ("clusters:\n  eu:\n    currency: euro\n", "clusters.eu.currency: must be an ISO 4217 code"),
    ("clusters:\n  eu:\n    rate: {cpu_core_hour: 1}\n", "clusters.eu.rate: unknown key"),
    ("clusters:\n  eu:\n    rates: {cpu_core_hour: -1}\n", "clusters.eu.rates.cpu_core_hour"),
    ("clusters: [eu]\n", "clusters"),
])
def test_bad_cluster_sections_name_their_field(body, message):
    with pytest.raises(PricingError, match=message.replace(".", r"\.")):
        parse_pricing(PRICING_YAML + body, "pricing.yaml")


def test_storage_classes_per_cluster_inherit_the_top_and_override_by_class():
    from decimal import Decimal

    from otel_agent.cost.pricing import parse_pricing

    p = parse_pricing("""
currency: USD
rates: {cpu_core_hour: 0.03, memory_gib_hour: 0.004, storage_gib_hour: 0.0001}
storage_classes: {gp3: 0.00011, io2: 0.0002}
clusters:
  eu:
    currency: EUR
    rates: {storage_gib_hour: 0.00009}
    storage_classes: {io2: 0.00025}
""", "p.yaml")
    eu = p.for_cluster("eu")
    assert eu.storage_rate("io2") == Decimal("0.00025")
    assert eu.storage_rate("gp3") == Decimal("0.00011")
    assert eu.storage_rate("standard") == Decimal("0.00009")
    assert p.storage_rate("io2") == Decimal("0.0002")
    assert p.for_cluster("other").storage_rate("standard") == Decimal("0.0001")
