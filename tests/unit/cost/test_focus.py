"""FOCUS output: each version's columns, the spec's formats, the split-cost-allocation rules
(allocated charges keep their origin's dimensions and add up to it), BilledCost 0 from a party
that issues no invoice, and money that adds up to the same totals as every other format.
The FinOps Foundation's validator runs on real ledgers in tests/e2e/cost/test_focus_validator.py."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from dataclasses import replace
from datetime import timedelta

import pytest

from otel_agent.cost.focus import (COMPONENTS, DEFAULT_FOCUS_VERSION, FOCUS_VERSIONS, MANDATORY,
                                   FocusOptions, header, origin_key, render_focus)
from otel_agent.cost.report import ReportQuery
from otel_agent.cost.types import IDLE, OVERHEAD, Model, SharePolicy
from otel_agent.errors import ConfigError

from tests.unit.cost import test_report_data as D

Q = ReportQuery(window=D.WINDOW, step=timedelta(hours=1), model=Model.CHARGEBACK,
                share_idle=SharePolicy.NONE)
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
DECIMAL = re.compile(r"^-?\d+\.\d+$")  # a point always: typed readers see a Decimal column
MONEY = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")

# The columns FOCUS 1.2 defines (specification/columns, v1.2 tag): anything else must be x_.
FOCUS_1_2 = {
    "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName",
    "BillingAccountType", "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart",
    "CapacityReservationId", "CapacityReservationStatus", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart",
    "CommitmentDiscountCategory", "CommitmentDiscountId", "CommitmentDiscountName",
    "CommitmentDiscountQuantity", "CommitmentDiscountStatus", "CommitmentDiscountType",
    "CommitmentDiscountUnit", "ConsumedQuantity", "ConsumedUnit", "ContractedCost",
    "ContractedUnitPrice", "EffectiveCost", "InvoiceId", "InvoiceIssuerName", "ListCost",
    "ListUnitPrice", "PricingCategory", "PricingCurrency", "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost", "PricingCurrencyListUnitPrice", "PricingQuantity",
    "PricingUnit", "ProviderName", "PublisherName", "RegionId", "RegionName", "ResourceId",
    "ResourceName", "ResourceType", "ServiceCategory", "ServiceName", "ServiceSubcategory",
    "SkuId", "SkuMeter", "SkuPriceDetails", "SkuPriceId", "SubAccountId", "SubAccountName",
    "SubAccountType", "Tags"}
# What 1.3 adds that we write (the split-cost-allocation columns and the provider split).
FOCUS_1_3 = FOCUS_1_2 | {"AllocatedMethodDetails", "AllocatedMethodId", "AllocatedResourceId",
                         "AllocatedResourceName", "AllocatedTags", "HostProviderName",
                         "ServiceProviderName"}
SPEC = {"1.2": FOCUS_1_2, "1.3": FOCUS_1_3}


def _rows(sets=None, q=Q, **opts):
    text = render_focus(D.sets() if sets is None else sets, q, FocusOptions(**opts))
    reader = csv.DictReader(io.StringIO(text))
    return reader.fieldnames, list(reader)


def _shared_sets():
    s = D.sets()
    for step in s:  # idle and overhead shared onto the tenants, 1:3 between shop and search
        pool = sum(a.total_cost for a in step if a.name in (IDLE, OVERHEAD))
        step[:] = [a for a in step if a.name not in (IDLE, OVERHEAD)]
        tenants = [a for a in step if a.name in ("shop", "search")]
        tenants[0].shared_cost, tenants[1].shared_cost = pool / 4, pool * 3 / 4
    return s


def _alloc(r, version):
    return r["AllocatedResourceName" if version == "1.3" else "x_AllocatedResourceName"]


@pytest.mark.parametrize("version", FOCUS_VERSIONS)
def test_each_version_has_its_mandatory_columns_and_only_its_own(version):
    cols, _ = _rows(version=version)
    assert tuple(cols) == header(version)
    assert not [c for c in MANDATORY[version] if c not in cols]
    assert "InvoiceId" in cols  # recommended since 1.2
    # FOCUS columns first, then custom ones; everything not in the spec carries x_
    assert all(c in SPEC[version] for c in cols if not c.startswith("x_"))
    firsts = [c.startswith("x_") for c in cols]
    assert firsts == sorted(firsts)


def test_default_is_1_2_with_the_allocation_as_custom_columns():
    assert DEFAULT_FOCUS_VERSION == "1.2"
    cols, rows = _rows()
    assert "AllocatedResourceName" not in cols and "x_AllocatedResourceName" in cols
    assert "ServiceProviderName" not in cols  # 1.2 has ProviderName
    # a 1.2 reader finds the tenant in Tags
    shop = [r for r in rows if r["x_AllocatedResourceName"] == "shop"]
    assert shop and all(json.loads(r["Tags"])["otel-agent/namespace"] == "shop" for r in shop)


@pytest.mark.parametrize("version", FOCUS_VERSIONS)
def test_nobody_is_billed_we_issue_no_invoice(version):
    _, rows = _rows(version=version, invoice_issuer="Amazon Web Services, Inc.", host_provider="AWS")
    assert rows
    for r in rows:
        assert r["BilledCost"] == "0.0" and r["InvoiceId"] == ""
        # the money: our rates, no discounts
        assert r["EffectiveCost"] == r["ListCost"] == r["ContractedCost"]
        assert r["InvoiceIssuerName"] == "Amazon Web Services, Inc."


@pytest.mark.parametrize("version", FOCUS_VERSIONS)
def test_effective_cost_sums_to_each_tenants_total(version):
    _, rows = _rows(version=version)
    by: dict[str, float] = defaultdict(float)
    for r in rows:
        by[_alloc(r, version)] += float(r["EffectiveCost"])
    for name in D.RAW:
        assert by[name] == pytest.approx(D.expected_cost(name), abs=1e-9)
    assert sum(by.values()) == pytest.approx(D.node_total(), abs=1e-9)


@pytest.mark.parametrize("version", FOCUS_VERSIONS)
@pytest.mark.parametrize("shared", [False, True], ids=["unshared", "shared"])
def test_allocated_charges_keep_their_origins_dimensions_and_add_up_to_it(version, shared):
    """FOCUS 1.3 split cost allocation: grouped by the origin's dimension columns, each group is
    one component of the cluster in one step; its rows' ratios add up to 1 and its money to
    what that component of the node cost."""
    sets = _shared_sets() if shared else D.sets()
    q = replace(Q, share_idle=SharePolicy.PROPORTIONAL) if shared else Q
    cols, rows = _rows(sets, q, version=version)
    details = "AllocatedMethodDetails" if version == "1.3" else "x_AllocatedMethodDetails"
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[origin_key(r, version)].append(r)
    assert len(groups) == len({(r["ChargePeriodStart"], r["x_CostComponent"]) for r in rows})
    for key, members in groups.items():
        ratios = [json.loads(r[details])["Elements"][0]["AllocatedRatio"] for r in members]
        assert sum(ratios) == pytest.approx(1.0, abs=1e-9), key
        assert len({_alloc(r, version) for r in members}) == len(members)
    # per step: cpu and ram of every row add up to the node (capacity x rate); in 1.3 the tenant
    # is in no dimension column of the origin (ChargeDescription, Tags)
    for r in rows:
        assert _alloc(r, version) not in r["ChargeDescription"]
        if version == "1.3":
            assert r["Tags"] == ""
    for i, step in enumerate(D.STEPS):
        ts = f"{step.start:%Y-%m-%dT%H:%M:%SZ}"
        compute = sum(float(r["EffectiveCost"]) for r in rows
                      if r["ChargePeriodStart"] == ts and r["x_CostComponent"] != "network")
        assert compute == pytest.approx(D.NODE_COST_PER_STEP, abs=1e-9)
        cpu = sum(float(r["PricingQuantity"]) for r in rows
                  if r["ChargePeriodStart"] == ts and r["x_CostComponent"] == "cpu")
        if not shared:
            assert cpu == pytest.approx(4.0)  # the node's 4 cores for an hour


def test_shared_rows_carry_the_tenants_fraction_of_the_pool():
    _, rows = _rows(_shared_sets(), replace(Q, share_idle=SharePolicy.PROPORTIONAL))
    shared = [r for r in rows if r["x_CostComponent"] == "shared"]
    assert len(shared) == 6  # two tenants, three steps
    for r in shared:
        assert r["PricingUnit"] == r["ConsumedUnit"] == "Shares"
        want = 0.25 if r["x_AllocatedResourceName"] == "shop" else 0.75
        assert float(r["PricingQuantity"]) == float(r["ConsumedQuantity"]) == pytest.approx(want)
        assert json.loads(r["x_AllocatedMethodDetails"])["Elements"] == [{"AllocatedRatio": want}]
    assert not [r for r in rows if r["x_AllocatedResourceName"] in (IDLE, OVERHEAD)]


def test_a_filtered_report_has_no_ratios_and_refuses_shared_rows():
    q = replace(Q, filter='namespace:"shop"')
    _, rows = _rows(q=q)
    assert rows and all(r["x_AllocatedMethodDetails"] == "" for r in rows)
    with pytest.raises(ConfigError, match="--share-idle none with --filter"):
        render_focus(_shared_sets(), replace(q, share_idle=SharePolicy.EVEN))


def test_formats_follow_the_spec():
    _, rows = _rows()
    for r in rows:
        for col in ("ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingPeriodEnd"):
            assert DATETIME.match(r[col]), (col, r[col])
        for col in (*MONEY, "PricingQuantity", "ConsumedQuantity"):
            assert DECIMAL.match(r[col]), (col, r[col])
        for col in MANDATORY["1.2"]:
            if col != "ChargeClass":  # null: no row is a correction
                assert r[col] != "", col
        assert r["ChargeClass"] == ""
        assert r["ChargeCategory"] == "Usage" and r["ChargeFrequency"] == "Usage-Based"
        assert r["BillingCurrency"] == "USD"
        assert r["BillingPeriodStart"] == "2026-11-01T00:00:00Z"
        assert r["BillingPeriodEnd"] == "2026-12-01T00:00:00Z"
        assert r["ResourceId"] == "k8s://demo" and r["ResourceType"] == "Kubernetes Cluster"
        assert r["PricingUnit"] == r["ConsumedUnit"] and r["PricingQuantity"] == r["ConsumedQuantity"]
        assert r["x_AllocatedMethodId"] == "otel-agent/chargeback/share-idle=none"


def test_tags_keep_user_labels_and_prefix_ours():
    s = D.sets()
    s[0][0].properties = {"label:team": "alpha", "cluster": "demo"}
    _, rows = _rows(s, replace(Q, aggregate="label:team"))
    [r, *_] = [r for r in rows if r["x_AllocatedResourceName"] == s[0][0].name]
    assert json.loads(r["Tags"]) == {"team": "alpha", "otel-agent/cluster": "demo"}
    assert r["x_AllocatedResourceId"] == f"k8s://demo/label:team/{s[0][0].name}"


def test_quantities_and_units():
    _, rows = _rows()
    cpu = [r for r in rows if r["x_CostComponent"] == "cpu" and r["x_AllocatedResourceName"] == "shop"]
    assert [float(r["ConsumedQuantity"]) for r in cpu] == [1.5, 2.0, 1.0]
    assert {r["ConsumedUnit"] for r in cpu} == {"Core-Hours"}
    ram = [r for r in rows if r["x_CostComponent"] == "ram" and r["x_AllocatedResourceName"] == "search"]
    assert [float(r["ConsumedQuantity"]) for r in ram] == [6.0, 6.0, 6.0]
    assert {r["PricingUnit"] for r in ram} == {"GiB-Hours"}
    net = [r for r in rows if r["x_CostComponent"] == "network"]
    assert {r["ConsumedUnit"] for r in net} == {"GiB"}
    assert sum(float(r["ConsumedQuantity"]) for r in net) == pytest.approx(6.5)


def test_zero_components_are_left_out():
    _, rows = _rows()
    batch = [r for r in rows if r["x_AllocatedResourceName"] == "batch"]
    assert {r["x_CostComponent"] for r in batch} == {"cpu", "ram"}
    assert all(r["ChargePeriodStart"] != "2026-11-24T00:00:00Z" for r in batch)


def test_idle_is_an_allocated_charge_of_the_same_origin():
    _, rows = _rows(version="1.3")
    idle = [r for r in rows if r["AllocatedResourceName"] == IDLE]
    assert idle
    for r in idle:
        assert json.loads(r["AllocatedMethodDetails"])["x_AllocationKind"] == "idle"
        assert r["AllocatedResourceId"] == "k8s://demo/__idle__"
        twin = next(t for t in rows if t["AllocatedResourceName"] == "shop"
                    and t["x_CostComponent"] == r["x_CostComponent"]
                    and t["ChargePeriodStart"] == r["ChargePeriodStart"])
        assert origin_key(r, "1.3") == origin_key(twin, "1.3")


def test_options_name_who_is_who():
    _, rows = _rows(version="1.3", billing_account_id="acct-42", host_provider="AWS",
                    service_provider="Platform team")
    r = rows[0]
    assert (r["BillingAccountId"], r["HostProviderName"], r["InvoiceIssuerName"]) == (
        "acct-42", "AWS", "AWS")  # who invoices the machines: by default, who runs them
    assert r["ServiceProviderName"] == r["ProviderName"] == r["PublisherName"] == "Platform team"
    _, rows = _rows()
    assert {r["InvoiceIssuerName"] for r in rows} == {"Kubernetes"} == {r["ProviderName"] for r in rows}


def test_every_component_is_one_table_row():
    # GPU and persistent volumes need no code of their own: a row of COMPONENTS each
    s = D.sets()
    s[0][0].gpu_hours, s[0][0].gpu_cost = 2.0, 1.9
    s[0][0].pv_byte_hours, s[0][0].pv_cost = 10 * D.GIB, 0.01
    _, rows = _rows(s)
    got = {r["x_CostComponent"]: r for r in rows if r["x_AllocatedResourceName"] == s[0][0].name
           and r["ChargePeriodStart"] == "2026-11-24T00:00:00Z"}
    assert {c.key for c in COMPONENTS} - {"shared", "network"} <= set(got)
    assert (got["gpu"]["PricingQuantity"], got["gpu"]["PricingUnit"]) == ("2.0", "GPU-Hours")
    assert (got["pv"]["PricingQuantity"], got["pv"]["PricingUnit"]) == ("10.0", "GiB-Hours")


def test_ratio_model_and_unknown_versions_are_refused_with_what_is_allowed():
    q = ReportQuery(window=D.WINDOW, model=Model.SHOWBACK_RATIO)
    with pytest.raises(ConfigError, match="Allowed models for focus: chargeback"):
        render_focus(D.sets(), q)
    with pytest.raises(ConfigError, match="ISO 4217"):
        render_focus(D.sets(currency="ratio"), Q)
    with pytest.raises(ConfigError, match="allowed: 1.2, 1.3"):
        render_focus(D.sets(), Q, FocusOptions(version="1.0"))


def _cli(*argv: str) -> tuple[int, str, str]:
    from otel_agent.cost.report_cli import main
    out, err = io.StringIO(), io.StringIO()
    code = main(["--ledger", "sqlite:///unused.db", "--window",
                 "2026-11-24T00:00:00Z,2026-11-24T03:00:00Z", *argv], stdout=out, stderr=err,
                open_store_fn=lambda url, pricing: object(),
                query_fn=lambda store, window, **kw: D.sets())
    return code, out.getvalue(), err.getvalue()


def test_cli_selects_the_version_and_says_which_is_default_and_why():
    from otel_agent.cost.report_cli import build_parser
    code, out, err = _cli("--format", "focus", "--step", "1h", "--focus-version", "1.3")
    assert code == 0, err
    assert out.startswith("AllocatedMethodDetails,") and ",ServiceProviderName," in out.splitlines()[0]
    code, out, _ = _cli("--format", "focus", "--step", "1h")
    assert code == 0 and out.startswith("BilledCost,")
    text = " ".join(build_parser().format_help().split())
    assert "1.2 (default)" in text and "validator checks 1.2" in text
    for argv, msg in ((("--format", "focus", "--focus-version", "1.4"), "allowed: 1.2, 1.3"),
                      (("--format", "csv", "--focus-version", "1.3"), "only with --format focus")):
        code, out, err = _cli(*argv)
        assert code == 2 and msg in err and out == "" and "Traceback" not in err
