"""An invoice imported into a real ledger (SQLite, and PostgreSQL 15 when marked): the node's
hours re-priced at the invoice, split by list-cost ratio, the reconciliation exact, re-imports
idempotent, corrections replacing, bad files leaving nothing behind."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from otel_agent.cost import invoice as I
from otel_agent.cost.invoice_cli import main as cli_main
from otel_agent.cost.invoice_import import import_invoice
from otel_agent.cost.ledger import KIND_IDLE, KIND_NODE
from otel_agent.cost.reconcile import UNOBSERVED, reconcile_invoice, render_text
from otel_agent.cost.store import Store, hourly_t, invoice_lines_t, invoice_node_hours_t
from otel_agent.otlp.resources import PROVIDER_ID_ATTR
from tests.unit.cost import scenario
from tests.unit.cost.invoice_fixtures import AWS_ID, AWS_PROVIDER_ID, Line, hourly, write
from tests.unit.cost.ledger_helpers import ingest, pricing, unbalanced
from tests.unit.cost.scenario import per_export

JAN = datetime(2026, 1, 1, tzinfo=timezone.utc)
H0 = int(JAN.timestamp())
NODE_HOUR = "0.0812345678"  # what the invoice says the node cost each hour (a discount)


def with_provider_id(items, provider_id: str):
    out = []
    for it in items:
        attrs = dict(it.attrs)
        if "k8s.pod.uid" not in attrs:
            attrs[PROVIDER_ID_ATTR] = provider_id
        out.append(dataclasses.replace(it, attrs=tuple(attrs.items())))
    return out


@pytest.fixture
def store(ledger_url):
    s = Store(ledger_url, pricing=pricing())
    ingest(s, per_export(with_provider_id(scenario.items(), AWS_PROVIDER_ID)))
    s.refresh()
    yield s
    s.close()


def invoice_lines(node_hour: str = NODE_HOUR) -> list[Line]:
    return hourly(JAN, 3, node_hour, AWS_ID) + [
        # an hour the ledger has no data of the node for
        Line(JAN + timedelta(hours=5), JAN + timedelta(hours=6), "0.07", AWS_ID),
        Line(JAN, JAN + timedelta(days=1), "0.54", "arn:aws:elasticloadbalancing:us-east-1:"
             "123456789012:loadbalancer/net/ingress/50dc6c495c0c9188", service="Elastic Load Balancing"),
        Line(JAN, JAN + timedelta(days=1), "1.08", "arn:aws:ec2:us-east-1:123456789012:natgateway/"
             "nat-0abc", service="Amazon Virtual Private Cloud"),
        Line(JAN, JAN + timedelta(days=1), "2.40", "arn:aws:eks:us-east-1:123456789012:cluster/shop",
             service="Amazon Elastic Kubernetes Service"),
        Line(JAN, JAN + timedelta(hours=1), "0.0960", "i-0fff1234def567890"),
        Line(JAN, JAN + timedelta(days=1), "0.2630", "vol-0abc1234def567890",
             service="Amazon Elastic Block Store"),
        Line(JAN, JAN + timedelta(days=31), "0.33", "", service="Tax", category="Tax"),
    ]


def node_costs(s: Store) -> dict[tuple[int, str], tuple[int, list[tuple]]]:
    """(hour, resource) → (node row micros, [(kind, micros)]) for node n1."""
    out: dict = {}
    with s.engine.connect() as c:
        for h, res, kind, cu in c.execute(sa.select(
                hourly_t.c.period_start, hourly_t.c.resource, hourly_t.c.kind,
                hourly_t.c.cost_usage_micros).where(hourly_t.c.node == "n1")):
            node, parts = out.get((h, res), (0, []))
            if kind == KIND_NODE:
                node = cu
            else:
                parts = parts + [(kind, cu)]
            out[(h, res)] = (node, parts)
    return out


def test_the_invoice_replaces_the_list_rates_split_by_their_ratio(store, tmp_path):
    before = node_costs(store)
    res = import_invoice(store, [write(tmp_path / "aws.csv", "aws", invoice_lines())])
    assert res.by_kind == {"node": 4, "shared": 4, "unmatched": 2} and not res.unchanged
    store.refresh()
    after = node_costs(store)
    with store.engine.connect() as c:
        per_hour = {h: m for h, m in c.execute(sa.select(invoice_node_hours_t.c.hour,
                                                          invoice_node_hours_t.c.micros))}
    # three lines of 0.0812345678: 243704 micro-units in all (rounded once), so the hours get
    # 81235, 81234, 81235 by running-sum rounding
    assert sum(per_hour[h] for h in (H0, H0 + 3600, H0 + 7200)) == I.to_micros(3 * Decimal(NODE_HOUR))
    assert sorted(per_hour.values())[:3] == [70_000, 81_234, 81_235]
    for h in (H0, H0 + 3600, H0 + 7200):
        invoice_micros = per_hour[h]
        list_cpu, list_mem = before[(h, "cpu")][0], before[(h, "memory")][0]
        cpu, mem = after[(h, "cpu")][0], after[(h, "memory")][0]
        assert cpu + mem == invoice_micros  # the node costs what the invoice says
        # split in the ratio of the list costs, to the micro-unit
        assert abs(cpu - invoice_micros * list_cpu / (list_cpu + list_mem)) <= 1
        for res in ("cpu", "memory"):  # and its parts still add up to it
            node, parts = after[(h, res)]
            assert sum(m for _k, m in parts) == node
        # every tenant's share of the node is what it was at list prices, scaled
        scale = invoice_micros / (list_cpu + list_mem)
        for (kind, m0), (kind1, m1) in zip(sorted(before[(h, "cpu")][1]), sorted(after[(h, "cpu")][1])):
            assert kind == kind1
            if kind != KIND_IDLE:
                assert abs(m1 - m0 * scale) <= 2
        # network egress is on the invoice (the instance's lines, NAT): not billed twice
        assert all(m == 0 for _k, m in after.get((h, "network:internet"), (0, []))[1])
    assert unbalanced(store) == []


def test_the_reconciliation_adds_up_to_the_invoice_to_the_micro_unit(store, tmp_path):
    import_invoice(store, [write(tmp_path / "aws.csv", "aws", invoice_lines())])
    store.refresh()
    [r] = reconcile_invoice(store)
    # expected from the invoice's own numbers
    total = (3 * Decimal(NODE_HOUR) + Decimal("0.07") + Decimal("0.54") + Decimal("1.08")
             + Decimal("2.40") + Decimal("0.0960") + Decimal("0.2630") + Decimal("0.33"))
    assert r.invoice_micros == I.to_micros(total)
    assert r.shared == {"load balancer": 540_000, "NAT gateway": 1_080_000,
                        "control plane": 2_400_000, "tax": 330_000}
    assert r.unmatched == {"instance with no node in the ledger": 96_000,
                           "disk (volumes are not matched to PVs yet)": 263_000,
                           UNOBSERVED: 70_000}
    node_part = (r.allocated_micros + r.unallocated_micros + r.idle_micros + r.overhead_micros)
    assert node_part == I.to_micros(3 * Decimal(NODE_HOUR))
    assert r.allocated_micros > 0 and r.idle_micros > 0 and r.overhead_micros > 0
    assert r.balanced and r.difference_micros == 0 and r.mispriced_node_hours == 0
    text = render_text([r])
    assert "balanced: invoice total = allocated + idle + overhead + shared + unmatched" in text
    assert f"{round(total, 2):.2f}" in text


def test_reimporting_the_same_file_changes_nothing(store, tmp_path):
    path = write(tmp_path / "aws.parquet", "aws", invoice_lines())
    import_invoice(store, [path])
    store.refresh()
    snap = _snapshot(store)
    again = import_invoice(store, [path])
    assert again.unchanged
    assert store.pending() == 0  # not even a rebuild was asked for
    assert _snapshot(store) == snap


def test_a_corrected_file_replaces_its_account_and_period_only(store, tmp_path):
    import_invoice(store, [write(tmp_path / "a.csv", "aws", invoice_lines())])
    other = write(tmp_path / "other.csv", "aws", [Line(JAN, JAN + timedelta(days=1), "5", "",
                                                        service="AWS Support (Business)")],
                  account="999999999999")
    import_invoice(store, [other])
    corrected = write(tmp_path / "b.csv", "aws", invoice_lines("0.05")[:3])  # fewer, cheaper lines
    res = import_invoice(store, [corrected])
    assert res.replaced_lines == 10 and res.lines == 3
    store.refresh()
    [r] = reconcile_invoice(store)
    assert r.invoice_micros == 3 * 50_000 + 5_000_000  # the other account's line stays
    assert r.shared == {"support": 5_000_000} and r.unmatched == {}
    assert r.balanced
    assert {h: c for (h, res_), (c, _p) in node_costs(store).items() if res_ == "cpu"
            } != {}  # hours 0-2 priced at 0.05 now:
    nc = node_costs(store)
    for h in (H0, H0 + 3600, H0 + 7200):
        assert nc[(h, "cpu")][0] + nc[(h, "memory")][0] == 50_000


def test_a_bad_file_imports_nothing(store, tmp_path):
    good = write(tmp_path / "good.csv", "aws", invoice_lines())
    bad = write(tmp_path / "bad.csv", "aws", invoice_lines())
    text = bad.read_text().replace("0.2630", "0.26.30")
    bad.write_text(text)
    with pytest.raises(I.InvoiceError, match=r"bad.csv: row 9, column EffectiveCost: '0.26.30' is not a number"):
        import_invoice(store, [good, bad])
    with store.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(invoice_lines_t)).scalar() == 0
        assert c.execute(sa.select(sa.func.count()).select_from(invoice_node_hours_t)).scalar() == 0
    assert store.pending() == 0


def test_an_invoice_in_another_currency_is_refused(store, tmp_path):
    eur = write(tmp_path / "eur.csv", "aws", invoice_lines()[:1], currency="EUR")
    with pytest.raises(I.InvoiceError, match=r"row 1, column BillingCurrency: EUR, but the ledger prices cluster '\(unnamed\)' in USD"):
        import_invoice(store, [eur])


def test_the_cli_imports_reconciles_and_refuses_with_one_line(store, tmp_path, capsys):
    url = store.url
    path = write(tmp_path / "aws.csv", "aws", invoice_lines())
    pricing_file = tmp_path / "pricing.yaml"
    from tests.unit.cost.ledger_helpers import PRICING_YAML

    pricing_file.write_text(PRICING_YAML)
    assert cli_main("import-invoice", [str(path), "--ledger", url, "--pricing", str(pricing_file)]) == 0
    out = capsys.readouterr().out
    assert "imported 10 lines (4 node, 4 shared, 2 unmatched)" in out
    assert cli_main("import-invoice", [str(path), "--ledger", url]) == 0
    assert "already imported, nothing changed" in capsys.readouterr().out
    assert cli_main("reconcile", ["--ledger", url, "--period", "2026-01"]) == 0
    assert "balanced" in capsys.readouterr().out
    assert cli_main("reconcile", ["--ledger", url, "--format", "json"]) == 0
    assert '"balanced": true' in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text(path.read_text().replace(",Usage,", ",Fee,", 1))
    assert cli_main("import-invoice", [str(bad), "--ledger", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "row 1, column ChargeCategory" in err
    assert cli_main("reconcile", ["--ledger", url, "--period", "January"]) == 2
    assert cli_main("import-invoice", [str(path), "--ledger", "sqlite:////nonexistent/l.db"]) == 2


def test_nodes_without_a_provider_id_leave_their_lines_unmatched(ledger_url, tmp_path):
    s = Store(ledger_url, pricing=pricing())
    try:
        ingest(s, per_export(scenario.items()))
        res = import_invoice(s, [write(tmp_path / "aws.csv", "aws", invoice_lines())])
        assert res.by_kind.get("node", 0) == 0
        s.refresh()
        [r] = reconcile_invoice(s)
        assert r.unmatched["instance with no node in the ledger"] == (
            I.to_micros(3 * Decimal(NODE_HOUR)) + 70_000 + 96_000)
        assert r.balanced and r.node_hours == 0
    finally:
        s.close()


def _snapshot(s: Store):
    from tests.unit.cost.ledger_helpers import snapshot

    with s.engine.connect() as c:
        lines = sorted(tuple(r) for r in c.execute(sa.select(invoice_lines_t)))
        hours = sorted(tuple(r) for r in c.execute(sa.select(invoice_node_hours_t)))
    return snapshot(s), lines, hours


def test_the_report_api_serves_the_reconciliation_behind_the_read_token(store, tmp_path):
    import json

    from otel_agent.cost.http_api import serve
    from tests.unit.cost.test_http_api import get

    import_invoice(store, [write(tmp_path / "aws.csv", "aws", invoice_lines())])
    store.refresh()
    h = serve(store, store.pricing, "127.0.0.1:0", auth_token="rt")
    try:
        auth = {"Authorization": "Bearer rt"}
        assert get(f"{h.url}/invoice/reconciliation")[0] == 401
        status, headers, body = get(f"{h.url}/invoice/reconciliation?period=2026-01", auth)
        assert status == 200 and headers["Content-Type"] == "application/json"
        [p] = json.loads(body)["data"]
        assert p["balanced"] and p["invoiceTotalMicros"] == reconcile_invoice(store)[0].invoice_micros
        assert json.loads(get(f"{h.url}/invoice/reconciliation?period=2025-12", auth)[2])["data"] == []
        status, _h, body = get(f"{h.url}/invoice/reconciliation?period=soon", auth)
        assert status == 400 and b"period 'soon': expected YYYY-MM" in body
        assert get(f"{h.url}/invoice/reconciliation?window=today", auth)[0] == 400
    finally:
        h.stop()


def test_with_no_list_price_the_invoice_goes_to_cpu(tmp_path):
    from otel_agent.cost.pricing import parse_pricing

    free = parse_pricing("currency: USD\nrates: {cpu_core_hour: 0, memory_gib_hour: 0}\n", "free")
    s = Store(f"sqlite:///{tmp_path}/l.db", pricing=free)
    try:
        ingest(s, per_export(with_provider_id(scenario.items(), AWS_PROVIDER_ID)))
        import_invoice(s, [write(tmp_path / "aws.csv", "aws", invoice_lines()[:3])])
        s.refresh()
        nc = node_costs(s)
        for h in (H0, H0 + 3600, H0 + 7200):
            assert nc[(h, "memory")][0] == 0 and nc[(h, "cpu")][0] in (81_234, 81_235)
        [r] = reconcile_invoice(s)
        assert r.balanced and r.invoice_micros == I.to_micros(3 * Decimal(NODE_HOUR))
    finally:
        s.close()


def test_a_gpu_nodes_invoice_is_split_over_cpu_memory_and_gpus_by_list_cost(tmp_path):
    """The GPU scenario of test_gpu_ledger (4 GPUs, GPUs only on the node) plus its providerID:
    the invoice's hour goes to the GPU rows, tenants keep their GPU shares."""
    from otel_agent.cost.ingest import decode
    from tests.unit.cost.builders import H, T0, kv
    from tests.unit.cost.test_gpu_ledger import SCENARIOS, _exports

    _name, resource, capacity, allocatable, pods = SCENARIOS[0]
    s = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())
    try:
        for req in _exports(resource, capacity, allocatable, pods):
            for rm in req.resource_metrics:
                keys = {a.key for a in rm.resource.attributes}
                if "k8s.pod.uid" not in keys:
                    rm.resource.attributes.extend(kv({PROVIDER_ID_ATTR: AWS_PROVIDER_ID}))
            b = decode(req, now_ns=T0 + 2 * H)
            assert b.rejected == 0, b.errors
            s.write(b)
        s.refresh()
        h0 = T0 // 1_000_000_000
        before = node_costs_of(s, "gpu-node", h0)
        start = datetime.fromtimestamp(h0, timezone.utc)
        import_invoice(s, [write(tmp_path / "aws.csv", "aws",
                                 [Line(start, start + timedelta(hours=1), "2.1234567", AWS_ID)])])
        s.refresh()
        after = node_costs_of(s, "gpu-node", h0)
        assert sum(after.values()) == 2_123_457
        assert set(after) == set(before) and after["gpu"] > 0
        total = sum(before.values())
        for res, m in after.items():
            assert abs(m - 2_123_457 * before[res] / total) <= 1
        [r] = reconcile_invoice(s)
        assert r.balanced
    finally:
        s.close()


def node_costs_of(s: Store, node: str, hour: int) -> dict[str, int]:
    with s.engine.connect() as c:
        return {res: cu for res, cu in c.execute(sa.select(hourly_t.c.resource, hourly_t.c.cost_usage_micros)
                .where(hourly_t.c.node == node, hourly_t.c.period_start == hour,
                       hourly_t.c.kind == KIND_NODE))}
