"""The shipped Grafana dashboards are well-formed and importable unchanged, and deploy/dashboards
renders to the ConfigMap Grafana's sidecar provisions them from.

No Grafana can be installed here (no registry this machine reaches ships the server: not Debian,
PyPI or npm), so the structure Grafana needs is checked field by field: what its importer and
provisioner read (uid, title, schemaVersion, panels with unique ids on the 24-column grid,
templating), data sources only through the `datasource` variable (so an import asks for nothing
else), every `$variable` defined before use. Whether the queries work is
tests/e2e/dashboards/, on a real Prometheus.
"""

from __future__ import annotations

import json
import re
import subprocess

import kubernetes_validate
import pytest
import yaml

from scripts import dashboards as gen
from tests.unit.deploy.conftest import DEPLOY, kubectl

FILES = sorted((DEPLOY / "dashboards").glob("*.json"))
BUILTIN = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}
PANEL_TYPES = {"row", "timeseries", "stat", "bargauge", "heatmap", "table", "gauge"}
DS_REF = {"type": "prometheus", "uid": "${datasource}"}


def _load():
    return {p.name: json.loads(p.read_text()) for p in FILES}


def test_the_files_are_what_the_generator_writes():
    assert {d.file for d in gen.DASHBOARDS} == {p.name for p in FILES}
    for d in gen.DASHBOARDS:
        assert (DEPLOY / "dashboards" / d.file).read_text() == gen.text(d), (
            f"{d.file} is stale: run python scripts/dashboards.py")
    assert gen.main(["--check"]) == 0


def _vars_used(text: str) -> set[str]:
    return {a or b for a, b in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$([A-Za-z_]\w*)", text)}


@pytest.mark.parametrize("name", [p.name for p in FILES])
def test_dashboard_structure(name):
    d = _load()[name]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"])
    assert d["title"] and isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d.get("id") is None  # an import creates its own
    assert d["__inputs"] == []  # nothing to map at import time but the datasource variable
    assert {"from", "to"} <= set(d["time"])

    variables = d["templating"]["list"]
    names = [v["name"] for v in variables]
    assert len(names) == len(set(names))
    [ds] = [v for v in variables if v["type"] == "datasource"]
    assert ds["name"] == "datasource" and ds["query"] == "prometheus"
    for i, v in enumerate(variables):  # defined before use: Grafana resolves them in order
        if v["type"] == "query":
            assert v["datasource"] == DS_REF
            assert v["query"] == v["definition"]
            assert _vars_used(v["definition"]) <= set(names[:i]) | BUILTIN, v["name"]
            assert v["definition"].startswith("label_values(")
        if v["type"] == "custom":
            assert v["current"]["value"] in [o["value"] for o in v["options"]]

    ids, boxes = set(), []
    for p in d["panels"]:
        assert isinstance(p["id"], int) and p["id"] not in ids
        ids.add(p["id"])
        assert p["type"] in PANEL_TYPES, p["type"]
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("h", "w", "x", "y"))
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24
        for (x, y, w, h) in boxes:  # no two panels overlap
            assert x + w <= g["x"] or g["x"] + g["w"] <= x or y + h <= g["y"] or g["y"] + g["h"] <= y, p["title"]
        boxes.append((g["x"], g["y"], g["w"], g["h"]))
        assert _vars_used(p["title"]) <= set(names)
        if p["type"] == "row":
            continue
        assert p["datasource"] == DS_REF
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["datasource"] == DS_REF and t["expr"].strip()
            assert _vars_used(t["expr"]) <= set(names) | BUILTIN, t["expr"]
            assert t["expr"].count("(") == t["expr"].count(")") and t["expr"].count("{") == t["expr"].count("}")
            if p["type"] == "heatmap":
                assert t["format"] == "heatmap" and "by (le)" in t["expr"]


def test_uids_and_titles_are_unique_across_dashboards():
    ds = list(_load().values())
    assert len({d["uid"] for d in ds}) == len(ds) == len({d["title"] for d in ds}) == 3


def test_every_panel_of_the_brief_is_there():
    """CPU, memory and network per namespace and workload, run-queue heatmap, throttling and
    pressure, cost per tenant, the agent's own health and BPF maps."""
    exprs = {d["uid"]: " ".join(t["expr"] for p in d["panels"] for t in p.get("targets", []))
             for d in _load().values()}
    res = exprs["otel-agent-resources"]
    for metric in ("k8s_pod_cpu_time_seconds_total", "k8s_pod_memory_working_set_bytes",
                   "k8s_pod_network_io_bytes_total", "otel_agent_container_cpu_run_queue_delay_seconds_bucket",
                   "otel_agent_container_cpu_throttled_periods_total",
                   "otel_agent_pod_pressure_stall_time_seconds_total"):
        assert metric in res
    assert "by (k8s_namespace_name, $workload_kind" in res
    assert "otel_agent_cost_total" in exprs["otel-agent-cost"]
    for metric in ("otel_agent_cycle_duration_seconds", "otel_agent_export_failures_total",
                   "otel_agent_bpf_map_entries", "otel_agent_bpf_map_update_failures_total"):
        assert metric in exprs["otel-agent-health"]


def test_kustomize_renders_one_config_map_for_the_grafana_sidecar():
    r = subprocess.run([kubectl(), "kustomize", str(DEPLOY / "dashboards")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    [cm] = [o for o in yaml.safe_load_all(r.stdout) if o]
    for version in ("1.30.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(cm, version, strict=True)
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "otel-agent-dashboards"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "namespace" not in cm["metadata"]  # applied into Grafana's namespace with -n
    assert {k: v for k, v in cm["data"].items()} == {p.name: p.read_text() for p in FILES}
    # `kubectl apply` keeps a copy in an annotation, and annotations are capped at 256 KiB
    assert len(json.dumps(cm)) < 200_000
