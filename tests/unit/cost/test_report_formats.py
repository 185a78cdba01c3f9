"""Table, CSV and OpenCost JSON from one hand-built allocation set, each checked against figures
computed independently from the raw quantities and rates in test_report_data."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest

from otel_agent.cost.report import (ReportError, ReportQuery, accumulate_sets, money_decimals,
                                    parse_aggregate, reconcile, render_csv, render_json,
                                    render_table)
from otel_agent.cost.types import IDLE, OVERHEAD, Model
from otel_agent.errors import ConfigError

from tests.unit.cost import test_report_data as D

Q = ReportQuery(window=D.WINDOW, step=timedelta(hours=1))


def test_json_is_opencosts_shape_one_object_per_step():
    body = json.loads(render_json(D.sets()))
    assert body["code"] == 200
    assert len(body["data"]) == 3
    for i, step in enumerate(body["data"]):
        expected_names = {n for n, rows in D.RAW.items() if any(rows[i])}
        assert set(step) == expected_names
        for name, a in step.items():
            assert a["name"] == name
            assert a["totalCost"] == pytest.approx(D.expected_cost(name, i), abs=1e-12)
            assert a["cpuCoreHours"] == D.RAW[name][i][0]
            assert a["ramByteHours"] == D.RAW[name][i][1] * D.GIB
            assert a["window"] == {"start": f"2026-11-24T0{i}:00:00Z", "end": f"2026-11-24T0{i + 1}:00:00Z"}
            assert a["currency"] == "USD"
            for key in ("cpuCost", "ramCost", "gpuCost", "networkCost", "pvCost", "sharedCost"):
                assert key in a


def test_json_refuses_nan():
    s = D.sets()
    s[0][0].cpu_cost = float("nan")
    with pytest.raises(ReportError, match="non-finite cpuCost"):
        render_json(s)


def test_csv_one_row_per_allocation_and_totals_match():
    rows = list(csv.DictReader(io.StringIO(render_csv(D.sets()))))
    assert len(rows) == sum(1 for rows_ in D.RAW.values() for r in rows_ if any(r))
    by_name: dict[str, float] = {}
    for r in rows:
        by_name[r["name"]] = by_name.get(r["name"], 0.0) + float(r["total_cost"])
        assert "e" not in r["total_cost"].lower()  # plain decimals, no exponent
        parts = sum(float(r[k]) for k in ("cpu_cost", "ram_cost", "gpu_cost", "network_cost",
                                          "pv_cost", "shared_cost"))
        assert parts == pytest.approx(float(r["total_cost"]), abs=1e-9)
        assert json.loads(r["properties"])["cluster"] == "demo"
    for name in D.RAW:
        assert by_name[name] == pytest.approx(D.expected_cost(name), abs=1e-9)
    shop0 = next(r for r in rows if r["name"] == "shop" and r["window_start"] == "2026-11-24T00:00:00Z")
    assert float(shop0["ram_gib_hours"]) == 4.0 and float(shop0["network_gib"]) == 2.0


def _table_rows(text: str) -> dict[str, list[str]]:
    out = {}
    for line in text.splitlines():
        cells = line.split()
        if cells and (cells[0] in D.RAW or cells[0] == "TOTAL"):
            out[cells[0]] = cells[1:]
    return out


def test_table_rows_and_totals_line():
    text = render_table(D.sets(), Q)
    rows = _table_rows(text)
    assert set(rows) == set(D.RAW) | {"TOTAL"}
    grand = sum(D.expected_cost(n) for n in D.RAW)
    assert grand < 10  # so the table shows four decimals
    for name in D.RAW:
        assert float(rows[name][-1]) == pytest.approx(D.expected_cost(name), abs=5e-5)
        assert float(rows[name][0]) == pytest.approx(sum(r[0] for r in D.RAW[name]))
    assert float(rows["TOTAL"][-1]) == pytest.approx(grand, abs=5e-5)
    # largest tenant first; idle and overhead after all tenants
    order = [ln.split()[0] for ln in text.splitlines() if ln.split() and ln.split()[0] in D.RAW]
    assert order == ["shop", "search", "batch", OVERHEAD, IDLE]


def test_table_columns_are_aligned():
    lines = [ln for ln in render_table(D.sets(), Q).splitlines()[1:] if not ln.startswith("allocated")]
    widths = {len(ln) for ln in lines if ln.strip() and not ln.startswith("(")}
    assert len(widths) == 1, lines


def test_reconciliation_line_adds_up_to_the_node():
    r = reconcile(D.sets(), node_total=D.node_total())
    assert r.overhead == pytest.approx(D.expected_cost(OVERHEAD))
    assert r.idle == pytest.approx(D.expected_cost(IDLE))
    assert r.balanced is True
    text = render_table(D.sets(), Q, node_total=D.node_total())
    line = [ln for ln in text.splitlines() if ln.startswith("allocated")][0]
    nums = [float(x.replace(",", "")) for x in re.findall(r"\d[\d,]*\.\d+", line)]
    allocated, overhead, idle, node = nums[0], nums[1], nums[2], nums[3]
    assert allocated + overhead + idle == pytest.approx(node, abs=2e-4)
    assert node == pytest.approx(D.node_total(), abs=5e-5)
    assert "(reconciled)" in line


def test_reconciliation_reports_a_gap_instead_of_hiding_it():
    s = D.sets()
    s[1] = [a for a in s[1] if a.name != IDLE]  # the ledger lost an idle row
    r = reconcile(s, node_total=D.node_total())
    assert r.balanced is False
    assert "!= node total" in r.line() and "off by -" in r.line()


def test_no_reconciliation_line_for_ratio_and_request_models():
    for model in (Model.SHOWBACK_RATIO, Model.REQUEST_OR_USAGE):
        text = render_table(D.sets(), ReportQuery(window=D.WINDOW, model=model))
        assert "allocated" not in text and "node total" not in text


def test_shared_cost_is_counted_once():
    # With idle shared, tenants carry it in shared_cost and no __idle__ row remains.
    s = D.sets()
    for step in s:
        idle = next(a for a in step if a.name == IDLE)
        tenants = [a for a in step if not a.name.startswith("__")]
        for a in tenants:
            a.shared_cost += idle.total_cost / len(tenants)
        step.remove(idle)
    r = reconcile(s, node_total=D.node_total())
    assert r.idle == 0 and r.balanced
    assert r.shared_in == pytest.approx(D.expected_cost(IDLE))
    assert "shared" in r.line()


def test_empty_result_is_a_table_not_an_error():
    text = render_table([[]], Q)
    assert "no allocations" in text and "TOTAL" in text


def test_mixed_currencies_are_refused():
    s = D.sets()
    s[0][0].currency = "EUR"
    with pytest.raises(ReportError, match="more than one currency"):
        render_table(s, Q)


def test_money_precision_grows_for_small_reports():
    assert money_decimals(12.0) == 2 and money_decimals(0.5) == 4


def test_accumulate_sets_sums_steps_and_keeps_common_properties():
    [merged] = accumulate_sets(D.sets())
    by = {a.name: a for a in merged}
    assert by["shop"].total_cost == pytest.approx(D.expected_cost("shop"))
    assert by["shop"].window == D.WINDOW
    assert by["shop"].properties == {"cluster": "demo", "namespace": "shop"}
    assert accumulate_sets([[], []]) == [[]]


@pytest.mark.parametrize("key,canonical", [
    ("namespace", "namespace"), ("Namespace,pod", "namespace,pod"), ("team", "label:team"),
    ("label:app.kubernetes.io/name", "label:app.kubernetes.io/name"), ("all", "all")])
def test_aggregate_keys(key, canonical):
    # the grammar itself is tested in test_grammar.py; this face uses it unchanged
    assert parse_aggregate(key) == canonical


@pytest.mark.parametrize("key", ["", "colour", "label:", "label:-x", "namespace,,pod", "service"])
def test_bad_aggregate_keys(key):
    with pytest.raises(ConfigError, match="aggregate"):
        parse_aggregate(key)


def test_usage_model_reconciles_quantities_and_shows_no_money():
    text = render_table(D.sets(), ReportQuery(window=D.WINDOW, model=Model.USAGE))
    assert "TOTAL USD" not in text.splitlines()[1]
    cpu = [ln for ln in text.splitlines() if ln.startswith("cpu:")][0]
    nums = [float(x) for x in re.findall(r"\d+\.\d+", cpu)]
    assert nums[0] + nums[1] + nums[2] == pytest.approx(nums[3])
    assert nums[3] == pytest.approx(3 * 4.0)  # 4 cores for 3 hours, computed from capacity
    mem = [ln for ln in text.splitlines() if ln.startswith("memory:")][0]
    assert float(re.findall(r"\d+\.\d+", mem)[3]) == pytest.approx(3 * 16.0)


def test_accumulate_by_calendar_periods():
    """OpenCost's accumulate=day|week|month|quarter|hour: step sets summed per period of their
    start; weeks end on Saturday."""
    from datetime import datetime, timedelta, timezone

    from otel_agent.cost.report import accumulate_by
    from otel_agent.cost.types import Allocation, Window

    t0 = datetime(2026, 11, 27, 0, tzinfo=timezone.utc)  # a Friday
    sets = [[Allocation("shop", Window(t0 + timedelta(hours=h), t0 + timedelta(hours=h + 1)),
                        "USD", cpu_cost=1.0)] for h in range(24 * 4)]  # Fri .. Mon
    days = accumulate_by(sets, "day")
    assert len(days) == 4 and all(s[0].cpu_cost == 24.0 for s in days)
    assert days[1][0].window == Window(t0 + timedelta(days=1), t0 + timedelta(days=2))
    weeks = accumulate_by(sets, "week")
    assert [s[0].cpu_cost for s in weeks] == [48.0, 48.0]  # Fri+Sat, then Sun+Mon
    assert [s[0].cpu_cost for s in accumulate_by(sets, "month")] == [96.0]
    assert [s[0].cpu_cost for s in accumulate_by(sets, "quarter")] == [96.0]
    assert len(accumulate_by(sets, "hour")) == 96
    assert accumulate_by([[], []], "day") == [[]]
    with pytest.raises(ConfigError, match="allowed: all, hour"):
        accumulate_by(sets, "fortnight")


def test_accumulate_by_keeps_empty_periods_when_it_knows_the_steps():
    from datetime import datetime, timedelta, timezone

    from otel_agent.cost.report import accumulate_by
    from otel_agent.cost.types import Allocation, Window
    from otel_agent.cost.window import split

    t0 = datetime(2026, 11, 27, 0, tzinfo=timezone.utc)
    grid = split(Window(t0, t0 + timedelta(days=3)), timedelta(hours=1))
    sets = [[Allocation("shop", w, "USD", cpu_cost=1.0)] if w.start.day == 28 else [] for w in grid]
    days = accumulate_by(sets, "day", grid)
    assert [sum(a.cpu_cost for a in s) for s in days] == [0.0, 24.0, 0.0] and days[0] == []
