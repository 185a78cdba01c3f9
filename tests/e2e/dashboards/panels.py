"""What the dashboard tests share: a panel query run as Grafana runs it, held to its labels."""

from __future__ import annotations

import math
import re
from typing import Callable, Iterator

import pytest

from scripts.dashboards import DASHBOARDS, Target
from tests.support.prometheus import Prometheus

# Grafana's own variables, as it would set them for a 15 s scrape interval and a short range.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}


def substitute(text: str, values: dict[str, str]) -> str:
    allv = {**BUILTINS, **values}

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in allv:
            raise AssertionError(f"template variable ${name} is not defined: {text}")
        return allv[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, text)


def targets(keep: Callable[[Target], bool] = lambda t: True) -> Iterator:
    for d in DASHBOARDS:
        for row in d.rows:
            for p in row.panels:
                for i, t in enumerate(p.targets):
                    if keep(t):
                        yield pytest.param(t, id=f"{d.uid}:{p.title}:{chr(65 + i)}")


def check_target(prom: Prometheus, target: Target, values: dict, start: float, end: float, *,
                 chosen: bool) -> list[dict]:
    """Run one panel query as Grafana would (a range query, variables substituted) and hold
    it to the labels it groups by. `chosen`: each variable is set to one value (not "All"),
    and that value is what must come back."""
    expr = substitute(target.expr, values)
    expect = {substitute(k, values) for k in target.expect}
    result = prom.query_range(expr, start, end, 1)
    assert result, f"no data: {expr}"
    for series in result:
        assert any(math.isfinite(float(v)) for _, v in series["values"]), f"{expr}: {series}"
        if chosen:
            assert set(series["metric"]) == expect, f"{expr}: labels {series['metric']}"
        else:  # "All" (.*) also matches pods the metadata source does not know: no namespace
            assert set(series["metric"]) <= expect, f"{expr}: labels {series['metric']}"
    assert any(set(s["metric"]) == expect for s in result), f"{expr}: {result}"
    if chosen:  # a chosen namespace or workload is what comes back
        for key, var in (("k8s_namespace_name", "namespace"), ("k8s_node_name", "node"),
                         ("k8s_cluster_name", "cluster"), (values["workload_kind"], "workload")):
            got = {s["metric"][key] for s in result if key in s["metric"]}
            if got and "__idle__" not in got and "__overhead__" not in got:
                assert got == {values[var]}, f"{expr}: {key} {got}"
    return result
