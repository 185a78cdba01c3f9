"""FOCUS output: the 1.3 mandatory columns are there, values follow the spec's formats, and the
money adds up to the same totals as every other format."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest

from otel_agent.cost.focus import COLUMNS, MANDATORY, FocusOptions, render_focus
from otel_agent.cost.report import ReportQuery
from otel_agent.cost.types import IDLE, Model, SharePolicy

from tests.unit.cost import test_report_data as D

Q = ReportQuery(window=D.WINDOW, step=timedelta(hours=1), model=Model.CHARGEBACK,
                share_idle=SharePolicy.NONE)
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


def _rows(**kw):
    text = render_focus(D.sets(), Q, **kw)
    reader = csv.DictReader(io.StringIO(text))
    return reader.fieldnames, list(reader)


def test_every_mandatory_focus_1_3_column_is_present():
    header, _ = _rows()
    missing = [c for c in MANDATORY if c not in header]
    assert not missing
    # custom columns must carry the x_ prefix; everything else is a FOCUS column id
    assert all(c[0].isupper() or c.startswith("x_") for c in header)
    assert tuple(header) == COLUMNS


def test_costs_sum_to_each_tenants_total():
    _, rows = _rows()
    by: dict[str, float] = {}
    for r in rows:
        by[r["AllocatedResourceName"]] = by.get(r["AllocatedResourceName"], 0.0) + float(r["BilledCost"])
        # no discounts: all four cost columns agree
        assert r["BilledCost"] == r["EffectiveCost"] == r["ListCost"] == r["ContractedCost"]
    for name in D.RAW:
        assert by[name] == pytest.approx(D.expected_cost(name), abs=1e-9)


def test_formats_follow_the_spec():
    _, rows = _rows()
    assert rows
    for r in rows:
        for col in ("ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingPeriodEnd"):
            assert DATETIME.match(r[col]), (col, r[col])
        for col in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"):
            assert DECIMAL.match(r[col]), (col, r[col])
        for col in MANDATORY:
            if col not in ("ChargeClass", "PricingQuantity", "PricingUnit", "BillingAccountName",
                           "ChargeDescription"):  # the nullable ones
                assert r[col] != "", col
        assert r["ChargeCategory"] == "Usage"
        assert r["ChargeClass"] == ""  # not a correction
        assert r["BillingCurrency"] == "USD"
        assert r["BillingPeriodStart"] == "2026-11-01T00:00:00Z"
        assert r["BillingPeriodEnd"] == "2026-12-01T00:00:00Z"
        json.loads(r["Tags"])
        json.loads(r["AllocatedTags"])
        assert r["AllocatedMethodId"] == "otel-agent/chargeback/share-idle=none"


def test_quantities_and_units():
    _, rows = _rows()
    cpu = [r for r in rows if r["x_CostComponent"] == "cpu" and r["AllocatedResourceName"] == "shop"]
    assert [float(r["ConsumedQuantity"]) for r in cpu] == [1.5, 2.0, 1.0]
    assert {r["ConsumedUnit"] for r in cpu} == {"Core-Hours"}
    ram = [r for r in rows if r["x_CostComponent"] == "ram" and r["AllocatedResourceName"] == "search"]
    assert [float(r["ConsumedQuantity"]) for r in ram] == [6.0, 6.0, 6.0]
    assert {r["PricingUnit"] for r in ram} == {"GiB-Hours"}
    net = [r for r in rows if r["x_CostComponent"] == "network"]
    assert {r["ConsumedUnit"] for r in net} == {"GiB"}
    assert sum(float(r["ConsumedQuantity"]) for r in net) == pytest.approx(6.5)


def test_zero_components_are_left_out():
    _, rows = _rows()
    # batch did not run in step 0 and never sent network traffic
    batch = [r for r in rows if r["AllocatedResourceName"] == "batch"]
    assert {r["x_CostComponent"] for r in batch} == {"cpu", "ram"}
    assert all(r["ChargePeriodStart"] != "2026-11-24T00:00:00Z" for r in batch)


def test_idle_is_described_as_idle():
    _, rows = _rows()
    idle = [r for r in rows if r["AllocatedResourceName"] == IDLE]
    assert idle and all("idle capacity" in r["ChargeDescription"] for r in idle)


def test_options_name_the_accounts():
    _, rows = _rows(opts=FocusOptions(billing_account_id="acct-42", host_provider="AWS",
                                      invoice_issuer="Platform team"))
    r = rows[0]
    assert (r["BillingAccountId"], r["HostProviderName"], r["InvoiceIssuerName"]) == (
        "acct-42", "AWS", "Platform team")
    assert r["ServiceProviderName"] == "Kubernetes" and r["ResourceId"] == "k8s://demo"


def test_shared_cost_rows_have_no_quantity():
    s = D.sets()
    s[0][0].shared_cost = 0.125
    rows = list(csv.DictReader(io.StringIO(render_focus(s, Q))))
    shared = [r for r in rows if r["x_CostComponent"] == "shared"]
    assert len(shared) == 1
    assert shared[0]["BilledCost"] == "0.125" and shared[0]["ConsumedQuantity"] == ""


def test_ratio_model_is_refused_with_what_is_allowed():
    from otel_agent.errors import ConfigError
    q = ReportQuery(window=D.WINDOW, model=Model.SHOWBACK_RATIO)
    with pytest.raises(ConfigError, match="Allowed models for focus: chargeback"):
        render_focus(D.sets(), q)
    with pytest.raises(ConfigError, match="ISO 4217"):
        render_focus(D.sets(currency="ratio"), Q)
