"""`otel-agent cost report` as users run it: bad arguments exit 2 with one clear line and no
traceback (checked in a real subprocess); good ones write the chosen format to stdout or to
--output."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_agent.cost.report import accumulate_sets
from otel_agent.cost.report_cli import main

from tests.unit.cost import test_report_data as D

ROOT = Path(__file__).resolve().parents[3]
W = "2026-11-24T00:00:00Z,2026-11-24T03:00:00Z"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from otel_agent.cost.report_cli import main; "
                               "sys.exit(main(sys.argv[1:]))", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


BAD = [
    (["--ledger", "sqlite:///x.db", "--window", "fortnight"], "--window", "allowed: today"),
    (["--ledger", "sqlite:///x.db", "--window", "today", "--by", "colour"], "--by",
     "allowed: comma-separated keys from cluster, node, namespace"),
    (["--ledger", "sqlite:///x.db", "--window", "today", "--format", "xml"], "--format",
     "allowed: table, csv, json, focus, html"),
    (["--ledger", "sqlite:///x.db", "--window", "today", "--model", "cheap"], "--model",
     "allowed: usage, request-or-usage, showback-ratio, chargeback"),
    (["--ledger", "sqlite:///x.db", "--window", "today", "--share-idle", "all"], "--share-idle",
     "allowed: none, proportional, even"),
    (["--ledger", "sqlite:///x.db", "--window", "today", "--step", "1y"], "--step",
     "allowed: a positive duration"),
    (["--ledger", "mysql://x", "--window", "today"], "--ledger", "sqlite:///"),
    (["--window", "today"], "--ledger", "required"),
    (["--ledger", "sqlite:///x.db"], "--window", "required"),
    (["--ledger", "sqlite:///x.db", "--window", "today", "--bogus"], "--bogus", "unrecognized"),
    (["--ledger", "sqlite:///x.db", "--window", "today", "--now", "yesterday"], "--now", "RFC 3339"),
]


@pytest.mark.parametrize("argv,names,allowed", BAD, ids=[b[1] + ":" + b[0][-1] for b in BAD])
def test_bad_arguments_exit_2_with_a_clear_message(argv, names, allowed):
    p = run_cli(*argv)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert names in p.stderr and allowed in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def _ledger():
    calls = []

    def query(store, window, **kw):
        calls.append((window, kw))
        sets = [s for s in D.sets() if window.start <= s[0].window.start < window.end]
        return sets if kw["step"] else accumulate_sets(sets)

    return calls, query


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    calls, query = _ledger()
    code = main(["--ledger", "sqlite:///unused.db", "--window", W, *argv], stdout=out, stderr=err,
                open_store_fn=lambda url, pricing: object(), query_fn=query)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("fmt,check", [
    ("table", lambda t: "TOTAL" in t and "shop" in t),
    ("csv", lambda t: t.startswith("window_start,window_end,name,")),
    ("json", lambda t: json.loads(t)["code"] == 200),
    ("focus", lambda t: t.startswith("BilledCost,") and "x_AllocatedResourceName" in t.splitlines()[0]),
    ("html", lambda t: t.startswith("<!DOCTYPE html>")),
])
def test_each_format_to_stdout(fmt, check):
    code, out, err = _run("--format", fmt, "--step", "1h")
    assert code == 0, err
    assert check(out)


def test_json_total_matches_independent_figures():
    code, out, _ = _run("--format", "json", "--step", "1h")
    doc = json.loads(out)
    total = sum(a["totalCost"] for step in doc["data"] for a in step.values())
    assert total == pytest.approx(sum(D.expected_cost(n) for n in D.RAW))


def test_table_asks_the_ledger_for_the_whole_window():
    out, err = io.StringIO(), io.StringIO()
    calls, query = _ledger()
    main(["--ledger", "sqlite:///u.db", "--window", W, "--step", "1h", "--format", "table"],
         stdout=out, stderr=err, open_store_fn=lambda u, p: object(), query_fn=query)
    assert calls[0][1]["step"] is None  # shares and ratios do not add up across steps


def test_output_file_is_written_whole(tmp_path):
    target = tmp_path / "report.csv"
    code, out, err = _run("--format", "csv", "--output", str(target))
    assert code == 0 and out == ""
    assert target.read_text().startswith("window_start,")
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]  # no temp file left


def test_unwritable_output_is_a_usage_error(tmp_path):
    code, out, err = _run("--format", "csv", "--output", str(tmp_path / "missing-dir" / "r.csv"))
    assert code == 2 and "--output" in err


def test_missing_sqlite_ledger_exit_2_no_traceback(tmp_path):
    p = run_cli("--ledger", f"sqlite:///{tmp_path}/absent.db", "--window", "today")
    assert p.returncode == 2 and "no ledger file" in p.stderr and "Traceback" not in p.stderr
