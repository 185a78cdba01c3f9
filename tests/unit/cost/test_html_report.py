"""HTML report structure without a browser: self-contained, escaped, tenants folded into
"other" past the limit, bar heights proportional to cost. (The real-browser check is in
tests/e2e/cost/test_html_chromium.py.)"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from otel_agent.cost.html_report import OTHER, render_html
from otel_agent.cost.report import ReportQuery
from otel_agent.cost.types import Allocation

from tests.unit.cost import test_report_data as D

Q = ReportQuery(window=D.WINDOW, step=timedelta(hours=1))


def test_self_contained():
    page = render_html(D.sets(), Q)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "@media print" in page


def test_bar_heights_are_proportional_to_cost():
    page = render_html(D.sets(), Q)
    bars = re.findall(r'<g class="series" data-series="([^"]+)"[^>]*>(.*?)</g>', page, re.S)
    heights: dict[tuple[str, int], float] = {}
    for name, block in bars:
        for h, step in re.findall(r'height="([\d.]+)" data-step="(\d+)"', block):
            heights[(name, int(step))] = float(h)
    ratio = heights[("shop", 1)] / heights[("search", 1)]
    assert ratio == pytest.approx(D.expected_cost("shop", 1) / D.expected_cost("search", 1), rel=0.02)
    assert ("batch", 0) not in heights  # batch did not run in the first hour


def test_names_are_escaped():
    s = D.sets()
    s[0][0].name = '<img src=x onerror="alert(1)">'
    page = render_html(s, Q)
    assert "<img" not in page and "&lt;img" in page


def test_many_tenants_fold_into_other():
    w = D.WINDOW
    allocs = [[Allocation(name=f"ns-{i:02d}", window=w, currency="USD", cpu_cost=100 - i)
               for i in range(15)]]
    page = render_html(allocs, ReportQuery(window=w), max_series=5)
    series = re.findall(r'<g class="series" data-series="([^"]+)"', page)
    assert series == ["ns-00", "ns-01", "ns-02", "ns-03", OTHER]
    assert "other (11 more)" in page
    assert page.count('<tr class="tenant"') == 15  # the table still lists everyone


def test_empty_window_renders_a_page():
    page = render_html([[]], Q)
    assert "No allocations in this window" in page and 'data-series="0"' in page
