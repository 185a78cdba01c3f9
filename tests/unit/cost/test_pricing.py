"""Pricing files: every error names file, line and field; overrides; the shipped defaults."""

from __future__ import annotations

from decimal import Decimal

import pytest

from otel_agent.cost.errors import PricingError
from otel_agent.cost.pricing import default_pricing, load_pricing, money_micros, parse_pricing

OK = """\
currency: USD
rates:
  cpu_core_hour: 0.031611
  memory_gib_hour: 0.004237
  gpu_hour: 0.95
  storage_gib_hour: 0.0000548
  network_gib: {pod-network: 0, cluster-private: 0.01, internet: 0.12}
nodes:
  - match: {node.kubernetes.io/instance-type: m5.xlarge}
    cpu_core_hour: 0.048
  - match: {karpenter.sh/capacity-type: spot}
    spot: true
    cpu_core_hour: 0.006655
"""


def test_the_issue_format_parses_and_first_override_wins():
    p = parse_pricing(OK, "p.yaml")
    assert p.currency == "USD" and p.memory_quantity == "working_set"
    assert p.rates.cpu_core_hour == Decimal("0.031611")
    both = {"node.kubernetes.io/instance-type": "m5.xlarge", "karpenter.sh/capacity-type": "spot"}
    assert p.rates_for(both).cpu_core_hour == Decimal("0.048")
    spot = p.rates_for({"karpenter.sh/capacity-type": "spot"})
    assert spot.spot and spot.memory_gib_hour == Decimal("0.004237")  # unset keys inherited
    assert p.rates_for({}).network_rate("internet") == Decimal("0.12")


@pytest.mark.parametrize("text, where", [
    (OK.replace("cpu_core_hour: 0.031611", "cpu_core_hour: cheap"), "p.yaml:3: rates.cpu_core_hour: must be a number"),
    (OK.replace("cpu_core_hour: 0.031611", "cpu_core_hour: -1"), "p.yaml:3: rates.cpu_core_hour: must be a number >= 0"),
    (OK.replace("cpu_core_hour: 0.031611", "cpu_core_hours: 1"), "p.yaml:3: rates.cpu_core_hours: unknown key"),
    (OK.replace("currency: USD", "currency: dollars"), "p.yaml:1: currency: must be an ISO 4217"),
    (OK.replace("currency: USD\n", ""), "currency: missing"),
    (OK.replace("internet: 0.12", "internet: .nan"), "p.yaml:7: rates.network_gib.internet: must be a number"),
    (OK.replace("  - match: {node.kubernetes.io/instance-type: m5.xlarge}\n", "  - name: x\n"), "p.yaml:9: nodes[0].match: missing"),
    (OK.replace("spot: true", "spot: maybe"), "p.yaml:12: nodes[1].spot: must be true or false"),
    ("currency: USD\nrates: [1, 2]\n", "p.yaml:2: rates: must be a mapping"),
    ("currency: USD\nrates: {cpu_core_hour: 1\n", "p.yaml:"),
])
def test_errors_name_file_line_and_field(text, where):
    with pytest.raises(PricingError) as e:
        parse_pricing(text, "p.yaml")
    assert where in str(e.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PricingError, match="cannot read pricing file"):
        load_pricing(tmp_path / "nope.yaml")


def test_shipped_defaults_are_opencosts():
    p = default_pricing()
    assert (p.rates.cpu_core_hour, p.rates.memory_gib_hour, p.rates.gpu_hour) == (
        Decimal("0.031611"), Decimal("0.004237"), Decimal("0.95"))
    assert p.rates_for({"karpenter.sh/capacity-type": "spot"}).cpu_core_hour == Decimal("0.006655")


def test_money_is_integer_micro_units():
    assert money_micros(1.0, Decimal("0.031611")) == 31611
    assert money_micros(0.5, Decimal("0.000001")) == 0  # half-even
    assert money_micros(1.5, Decimal("0.000001")) == 2
