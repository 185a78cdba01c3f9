"""FOCUS invoices: reading, matching, splitting and reconciling, to the micro-unit (tables)."""

from __future__ import annotations

import gzip
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from otel_agent.cost import invoice as I
from otel_agent.cost.reconcile import cents_adding_up, round_cents
from tests.unit.cost.invoice_fixtures import (AWS_ID, AWS_PROVIDER_ID, AZURE_PATH,
                                              AZURE_PROVIDER_ID, GCP_PROVIDER_ID, GCP_RESOURCE,
                                              Line, hourly, write)

JAN = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("resource_id, provider_id", [
    (AWS_ID, AWS_PROVIDER_ID),
    (f"arn:aws:ec2:us-east-1:123456789012:instance/{AWS_ID}", AWS_PROVIDER_ID),
    (AZURE_PATH, AZURE_PROVIDER_ID),  # resource group case differs: ARM ids are case-insensitive
    ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1",
     "azure:///subscriptions/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm-1"),
    (GCP_RESOURCE, GCP_PROVIDER_ID),
])
def test_an_invoice_resource_id_and_the_nodes_provider_id_name_the_same_machine(resource_id, provider_id):
    assert I.instance_key(resource_id) is not None
    assert I.instance_key(resource_id) == I.provider_key(provider_id)


@pytest.mark.parametrize("resource_id", [
    "vol-0abc1234def567890", "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/x/1",
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss",
    "//compute.googleapis.com/projects/p/zones/z/disks/d", "", "i-xyz",
])
def test_what_is_not_a_machine_has_no_instance_key(resource_id):
    assert I.instance_key(resource_id) is None


@pytest.mark.parametrize("provider_id", ["", "i-0abc1234def567890", "kind://docker/x/y",
                                         "gce://p/z", "aws:///us-east-1a/"])
def test_provider_ids_naming_no_cloud_machine_match_nothing(provider_id):
    assert I.provider_key(provider_id) is None


@pytest.mark.parametrize("provider", ["aws", "azure", "gcp"])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_each_providers_export_reads_to_the_same_lines(tmp_path, provider, suffix):
    rid = {"aws": AWS_ID, "azure": AZURE_PATH, "gcp": GCP_RESOURCE}[provider]
    lines = hourly(JAN, 2, "0.0812345678", rid) + [
        Line(JAN, JAN + timedelta(days=1), "-1.25", "", service="Tax", category="Tax")]
    path = write(tmp_path / f"{provider}{suffix}", provider, lines)
    got = I.read_invoice(path)
    assert [(g.charge_period_start, g.charge_period_end) for g in got] == [
        (int(JAN.timestamp()), int(JAN.timestamp()) + 3600),
        (int(JAN.timestamp()) + 3600, int(JAN.timestamp()) + 7200),
        (int(JAN.timestamp()), int(JAN.timestamp()) + 86400)]
    assert [g.effective_cost for g in got] == [Decimal("0.0812345678")] * 2 + [Decimal("-1.25")]
    assert got[0].billing_period_start == int(JAN.timestamp())
    assert got[0].billing_period_end == int(datetime(2026, 2, 1, tzinfo=timezone.utc).timestamp())
    assert got[0].currency == "USD" and got[0].billing_account == "123456789012"
    assert I.instance_key(got[0].resource_id) is not None
    assert got[2].charge_category == "Tax"


def test_a_gzipped_csv_reads_too(tmp_path):
    p = write(tmp_path / "aws.csv", "aws", hourly(JAN, 1, "1", AWS_ID))
    gz = tmp_path / "aws.csv.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    assert len(I.read_invoice(gz)) == 1


def _edit(path, old: str, new: str, count: int = 1):
    text = path.read_text(encoding="utf-8-sig")
    assert old in text
    path.write_text(text.replace(old, new, count), encoding="utf-8")


@pytest.mark.parametrize("edit, message", [
    (("EffectiveCost", "Cost"), "missing column(s) EffectiveCost"),
    ((",0.5,", ",abc,"), "row 2, column BilledCost: 'abc' is not a number"),
    (("2026-01-01T01:00:00.000Z,", "yesterday,"), "row 1, column ChargePeriodEnd: 'yesterday' is not a UTC date-time"),
    ((",Usage,", ",Fee,"), "row 1, column ChargeCategory: 'Fee' is not one of"),
    ((",USD,", ",usd,"), "row 1, column BillingCurrency: 'usd' is not an ISO 4217 code"),
    ((",123456789012,", ",,"), "row 1, column BillingAccountId: empty"),
    ((",i-0abc1234def567890,", ",i-0abc\x07,"), "row 1, column ResourceId: holds a control character"),
    (("0.5", "1e400"), "is not a plausible cost"),
    (("0.5", "NaN"), "is not a number"),
    ((",Usage,", ",Usage,extra,"), "row 1: more fields than the header has columns"),
    (("m5.xlarge\n", "m5.xlarge,"), "row 1: more fields than the header has columns"),
    ((",SKU-1,", ","), "row 1: 35 fields, the header has 36 (a cut or malformed file)"),
])
def test_a_bad_file_names_its_row_and_column(tmp_path, edit, message):
    p = write(tmp_path / "aws.csv", "aws", [Line(JAN, JAN + timedelta(hours=1), "0.25", AWS_ID),
                                            Line(JAN, JAN + timedelta(hours=1), "0.5", AWS_ID)])
    _edit(p, *edit)
    with pytest.raises(I.InvoiceError) as e:
        I.read_invoice(p)
    assert message in str(e.value) and str(e.value).startswith(str(p))
    assert "\n" not in str(e.value)


def test_mixed_currencies_and_unknown_files_are_refused(tmp_path):
    p = write(tmp_path / "a.csv", "aws", [Line(JAN, JAN + timedelta(hours=1), "1", AWS_ID)])
    q = write(tmp_path / "b.csv", "aws", [Line(JAN, JAN + timedelta(hours=1), "1", AWS_ID)],
              currency="EUR")
    text = p.read_text() + q.read_text().split("\n", 1)[1]
    p.write_text(text)
    with pytest.raises(I.InvoiceError, match=r"row 2, column BillingCurrency: EUR in a file billed in USD"):
        I.read_invoice(p)
    with pytest.raises(I.InvoiceError, match="unknown file type"):
        I.read_invoice(tmp_path / "x.json")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(I.InvoiceError, match="not a Parquet file"):
        I.read_invoice(bad)
    gz = tmp_path / "cut.csv.gz"
    gz.write_bytes(gzip.compress(p.read_bytes())[:40])
    with pytest.raises(I.InvoiceError, match="cannot read"):
        I.read_invoice(gz)


def _line(cost: str, rid: str = AWS_ID, category: str = "Usage", service: str = "Compute",
          start: datetime = JAN, hours: int = 1, account: str = "a") -> I.InvoiceLine:
    t0 = int(start.timestamp())
    return I.InvoiceLine(row=1, source="t", billing_account=account,
                         billing_period_start=int(JAN.timestamp()),
                         billing_period_end=int(JAN.timestamp()) + 31 * 86400,
                         charge_period_start=t0, charge_period_end=t0 + hours * 3600,
                         charge_category=category, charge_class="", service_name=service,
                         service_category="", resource_id=rid, sku_id="", currency="USD",
                         effective_cost=Decimal(cost), billed_cost=Decimal(cost))


def test_line_micro_units_add_up_to_the_periods_exact_total_rounded_once():
    # 7 × 0.0000014 = 0.0000098: rounding each line would give 7 × 1 = 7 micro-units, not 10
    lines = [_line("0.0000014", start=JAN + timedelta(hours=i)) for i in range(7)]
    k = I.keyed(lines)
    assert sum(x.micros for x in k) == 10 == I.to_micros(Decimal("0.0000098"))
    assert sorted(x.micros for x in k) == [1, 1, 1, 1, 2, 2, 2]


def test_identical_lines_are_kept_apart_and_keys_are_stable():
    lines = [_line("0.5"), _line("0.5"), _line("0.25")]
    a, b = I.keyed(lines), I.keyed(list(lines))
    assert len({x.key for x in a}) == 3
    assert [x.key for x in a] == [x.key for x in b] and [x.micros for x in a] == [x.micros for x in b]
    assert sum(x.micros for x in a) == 1_250_000


@pytest.mark.parametrize("micros, start, end, expected", [
    (24_000_001, 0, 86400, {h * 3600: 1_000_000 + (1 if h == 0 else 0) for h in range(24)}),
    (900, 1800, 5400, {0: 450, 3600: 450}),  # half of each of two hours
    (1000, 0, 3600, {0: 1000}),
    (-300, 0, 10800, {0: -100, 3600: -100, 7200: -100}),
    (7, 3600, 3600, {3600: 7}),  # an instant lands in its hour
])
def test_a_line_spreads_over_its_hours_exactly(micros, start, end, expected):
    got = I.spread_hours(micros, start, end)
    assert got == expected and sum(got.values()) == micros


NODES = {I.instance_key(AWS_ID): ("c1", "n1")}


@pytest.mark.parametrize("line, kind, label", [
    (_line("1"), I.MATCH_NODE, ""),
    (_line("1", rid=f"arn:aws:ec2:us-east-1:1:instance/{AWS_ID}"), I.MATCH_NODE, ""),
    (_line("1", category="Purchase"), I.MATCH_UNMATCHED, "purchase line of an instance (not usage)"),
    (_line("1", rid="i-0fff1234def567890"), I.MATCH_UNMATCHED, "instance with no node in the ledger"),
    (_line("1", hours=24 * 40), I.MATCH_UNMATCHED, "node line longer than a billing period"),
    (_line("1", rid="arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/net/ingress/1",
           service="Elastic Load Balancing"), I.MATCH_SHARED, "load balancer"),
    (_line("1", rid="arn:aws:ec2:us-east-1:1:natgateway/nat-0abc", service="Amazon Virtual Private Cloud"),
     I.MATCH_SHARED, "NAT gateway"),
    (_line("1", rid="arn:aws:eks:us-east-1:1:cluster/shop", service="Amazon Elastic Kubernetes Service"),
     I.MATCH_SHARED, "control plane"),
    (_line("1", rid="/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks",
           service="Azure Kubernetes Service"), I.MATCH_SHARED, "control plane"),
    (_line("1", rid="", service="AWS Support (Business)"), I.MATCH_SHARED, "support"),
    (_line("1", rid="", category="Tax", service="Tax"), I.MATCH_SHARED, "tax"),
    (_line("-1", rid="", category="Credit"), I.MATCH_SHARED, "credit"),
    (_line("1", rid="vol-0abc1234def567890"), I.MATCH_UNMATCHED, "disk (volumes are not matched to PVs yet)"),
    (_line("1", rid="//compute.googleapis.com/projects/p/zones/z/disks/pvc-1"), I.MATCH_UNMATCHED,
     "disk (volumes are not matched to PVs yet)"),
    (_line("1", rid="", service="Amazon Route 53"), I.MATCH_UNMATCHED, "no ResourceId: Amazon Route 53"),
    (_line("1", rid="arn:aws:s3:::bucket", service="Amazon S3"), I.MATCH_UNMATCHED, "other resource: Amazon S3"),
])
def test_where_each_line_goes(line, kind, label):
    m = I.classify(line, NODES)
    assert (m.kind, m.label) == (kind, label)
    if kind == I.MATCH_NODE:
        assert (m.cluster, m.node) == ("c1", "n1")


def test_node_hours_carry_only_matched_lines_exactly():
    k = I.keyed([_line("0.10", hours=2), _line("0.05", start=JAN + timedelta(hours=1)),
                 _line("9", rid="", category="Tax")])
    I.match_all(k, NODES)
    h0 = int(JAN.timestamp())
    assert I.node_hours(k) == {("c1", "n1", "a", h0, h0): 50_000,
                               ("c1", "n1", "a", h0, h0 + 3600): 100_000}


@pytest.mark.parametrize("parts, total_cents", [
    ([333_333, 333_333, 333_334], 100),
    ([5_000, 5_000], 1),  # 0.5 + 0.5 cent: the total rounds half-even to 1 cent
    ([1_234_567, -234_567, 10], 100),
    ([0, 0, 0], 0),
])
def test_printed_cents_add_up_to_the_printed_total(parts, total_cents):
    cents = cents_adding_up(parts, sum(parts))
    assert sum(cents) == round_cents(sum(parts)) == total_cents
    assert all(abs(c * 10_000 - p) < 10_000 for c, p in zip(cents, parts))


def test_the_agent_exports_the_nodes_provider_id_and_the_ledger_keeps_it_validated():
    from otel_agent.cost.ingest import decode
    from otel_agent.k8s.convert import node_meta
    from otel_agent.otlp.resources import PROVIDER_ID_ATTR, node_attributes
    from tests.unit.cost.builders import T0, Res, node_attrs, request

    meta = node_meta({"metadata": {"name": "n1", "uid": "u1"},
                      "spec": {"providerID": AWS_PROVIDER_ID},
                      "status": {"capacity": {"cpu": "4"}, "allocatable": {"cpu": "3500m"}}})
    assert meta.provider_id == AWS_PROVIDER_ID
    assert node_attributes("n1", meta)[PROVIDER_ID_ATTR] == AWS_PROVIDER_ID
    assert PROVIDER_ID_ATTR not in node_attributes("n1", node_meta({"metadata": {"name": "n1"}}))
    with pytest.raises(ValueError):
        node_meta({"metadata": {"name": "n1"}, "spec": {"providerID": 7}})

    def send(pid: str):
        r = Res({**node_attrs("n1"), PROVIDER_ID_ATTR: pid})
        r.gauge("k8s.node.cpu.allocatable", [(T0, 3.5)])
        return decode(request(r), now_ns=T0)

    ok = send(AWS_PROVIDER_ID)
    assert ok.rejected == 0
    [s] = ok.series.values()
    assert f'"{PROVIDER_ID_ATTR}":"{AWS_PROVIDER_ID}"' in s.meta
    bad = send("aws:///us-east-1a/i-0abc\nforged")
    assert bad.rejected == 1 and "control character" in bad.error_message()
    bad = send("not a provider id")
    assert bad.rejected == 1 and "is not a providerID" in bad.error_message()
