"""Attack: CSV formula injection (issue 12). A namespace or label value such as
`=HYPERLINK("http://evil","x")` reached the CSV and FOCUS exports as is, and a spreadsheet
opening the report ran it. Every text cell starting with = + - @ tab or CR (the OWASP rule) is
now prefixed with a single quote, in every CSV the project writes; numbers are left alone."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest

from otel_agent.cost.focus import render_focus
from otel_agent.cost.pricing import parse_pricing
from otel_agent.cost.receiver import Ingestor, Rejected
from otel_agent.cost.report import csv_safe, render_csv
from otel_agent.cost.report_cli import main as report_main
from otel_agent.cost.store import Store
from otel_agent.cost.types import Allocation, Window
from tests.support.cost_serve import export_body
from tests.unit.cost.ledger_helpers import PRICING_YAML

HOSTILE = ['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "-2+3+cmd|'/C calc'!A0",
           "@SUM(1+1)*cmd|' /C calc'!A0", "\t=1+1"]
W = Window(datetime(2026, 11, 24, tzinfo=timezone.utc), datetime(2026, 11, 25, tzinfo=timezone.utc))


def _cells(text: str) -> list[str]:
    return [c for row in csv.reader(io.StringIO(text)) for c in row]


def _unsafe(cells: list[str]) -> list[str]:
    return [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")
            or (c[:1] == "-" and not c[1:].replace(".", "", 1).isdigit())]


def test_the_guard_itself():
    assert csv_safe(["=1+1", "-0.5", "-1e-05", "+7", "x=1", "@a", "\tb", "\rc", "plain"]) == [
        "'=1+1", "-0.5", "-1e-05", "+7", "x=1", "'@a", "'\tb", "'\rc", "plain"]
    assert csv_safe({"a": "=x", "b": 1.5}) == {"a": "'=x", "b": 1.5}


@pytest.mark.parametrize("render", [render_csv, render_focus])
def test_every_csv_writer_guards_names_and_properties(render):
    sets = [[Allocation(name=h, window=W, currency="USD", cpu_core_hours=1.0, cpu_cost=0.5,
                        properties={"namespace": h, "cluster": h}) for h in HOSTILE]]
    text = render(sets)
    cells = _cells(text)
    assert _unsafe(cells) == []
    for h in HOSTILE:  # nothing lost: the value is there behind its quote
        assert any(c == "'" + h or h in c for c in cells), h


def test_through_ingest_and_the_report_cli(tmp_path, capsys):
    """The real path: an OTLP point naming a hostile namespace, the ledger, `cost report`."""
    store = Store(f"sqlite:///{tmp_path}/l.db", pricing=parse_pricing(PRICING_YAML, "p.yaml"))
    ing = Ingestor(store)
    accepted = []
    for i, h in enumerate(HOSTILE):
        try:
            ing.export(export_body(f"u{i}", namespace=h))
            accepted.append(h)
        except Rejected:
            pass  # refusing the name at ingest is a fine answer too
    store.refresh()
    store.close()
    for fmt in ("csv", "focus"):
        assert report_main(["--ledger", f"sqlite:///{tmp_path}/l.db", "--window", "today",
                            "--by", "namespace", "--format", fmt]) == 0
        out = capsys.readouterr().out
        assert _unsafe(_cells(out)) == [], fmt
        for h in accepted:
            assert "'" + h.split('"')[0] in out.replace('""', '"'), (fmt, h)
