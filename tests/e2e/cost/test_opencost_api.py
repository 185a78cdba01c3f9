"""The OpenCost `/allocation` API of a real `otel-agent cost serve` on loopback, fed by real
OTLP/gRPC exports, read three ways:

- by a third-party OpenCost client: `unalloc` (PyPI; its OpenCost adapter sends
  `aggregate=namespace,controller,label:team&accumulate=true&includeIdle=true` with a window of
  two days, and attributes spend by `properties.labels`), as a library and as its own CLI;
- with OpenCost's documented example queries (opencost.io "API Examples" and the parameters
  of OpenCost's OpenAPI spec, docs/swagger.json), each answer checked against the response
  shape OpenCost's clients parse (a JSON Schema written from OpenCost's AllocationJSON);
- with a table of grammar cases, error cases included (400 naming what is wrong).

The figures are checked against what was exported, not against the implementation: pods run
at fixed rates on a node of known capacity and price.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from tests.support.cost_process import serving
from tests.support.pipeline import free_port
from tests.unit.cost.builders import S, Res, node_attrs, request

pytestmark = pytest.mark.e2e
unalloc = pytest.importorskip("unalloc", reason="the third-party OpenCost client (pip: unalloc)")

CPU_RATE = 0.031611  # tests/unit/cost/ledger_helpers.PRICING_YAML
H = 3600 * S
CORES = 8.0
# yesterday 10:00-13:00 UTC: inside unalloc's two-day window whatever the time of day. The
# exports stop a second short of 13:00, so figures are rel=1e-4 of the whole hours.
TODAY = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
T0 = int((TODAY - timedelta(days=1) + timedelta(hours=10)).timestamp()) * S
HOURS = 3
BOOT = T0 - 2 * H
# (uid, namespace, pod, container, owner attribute, owner, labels, cores)
PODS = [
    ("u-web1", "shop", "web-1", "nginx", "k8s.deployment.name", "web", {"team": "alpha", "app": "web"}, 1.0),
    ("u-web1", "shop", "web-1", "sidecar", "k8s.deployment.name", "web", {"team": "alpha", "app": "web"}, 0.25),
    ("u-web2", "shop", "web-2", "nginx", "k8s.deployment.name", "web", {"team": "alpha", "app": "web"}, 1.0),
    ("u-db0", "shop", "db-0", "postgres", "k8s.statefulset.name", "db", {"team": "alpha", "app.kubernetes.io/name": "db"}, 0.5),
    ("u-train", "ml", "train-x", "main", "k8s.job.name", "train", {"team": "beta"}, 2.0),
    ("u-debug", "default", "debug", "sh", None, None, {}, 0.25),
]


def _export(t: int):
    used = sum(c for *_, c in PODS) * (t - T0) / S + 0.5 * (t - BOOT) / S
    res = [Res({**node_attrs("n1"), "k8s.cluster.name": "prod"})
           .sum("k8s.node.cpu.time", [(BOOT, t, used)], unit="s")
           .gauge("otel_agent.node.cpu.capacity", [(t, CORES)])
           .gauge("k8s.node.cpu.allocatable", [(t, CORES - 0.5)])]
    for uid, ns, pod, container, owner_attr, owner, labels, cores in PODS:
        attrs = {"k8s.cluster.name": "prod", "k8s.node.name": "n1", "k8s.pod.uid": uid,
                 "k8s.namespace.name": ns, "k8s.pod.name": pod, "k8s.container.name": container,
                 "container.id": f"cid-{uid}-{container}",
                 **{f"k8s.pod.label.{k}": v for k, v in labels.items()}}
        if owner_attr:
            attrs[owner_attr] = owner
        res.append(Res(attrs).sum("container.cpu.time", [(T0, t, cores * (t - T0) / S)], unit="s"))
    return request(*res)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("opencost")
    port = free_port()
    with serving(tmp, args=["--http-listen", f"127.0.0.1:{port}"]) as s:
        # an export every 5 minutes, the last one a second before the window's end (a point
        # bills the interval up to it to the hour it falls in)
        for t in [T0 + i * 300 * S for i in range(HOURS * 12)] + [T0 + HOURS * H - S]:
            r = s.export(_export(t))
            assert not r.partial_success.rejected_data_points, r
        s.settle()
        yield f"http://127.0.0.1:{port}"


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def q(base: str, path: str = "/allocation", **params: str) -> tuple[int, dict]:
    return get(f"{base}{path}?{urllib.parse.urlencode(params)}")


WINDOW = (f"{datetime.fromtimestamp(T0 / S, timezone.utc):%Y-%m-%dT%H:%M:%SZ},"
          f"{datetime.fromtimestamp((T0 + HOURS * H) / S, timezone.utc):%Y-%m-%dT%H:%M:%SZ}")
NUMBER = {"type": "number"}
# The response OpenCost's clients parse: WrapData({code, data: [set, ...]}), each set a map of
# allocation name -> AllocationJSON (core/pkg/opencost/allocation_json.go): the fields we fill.
SCHEMA = {
    "type": "object", "required": ["code", "data"],
    "properties": {
        "code": {"const": 200},
        "data": {"type": "array", "items": {
            "type": "object", "additionalProperties": {
                "type": "object",
                "required": ["name", "properties", "window", "start", "end", "minutes",
                             "cpuCores", "cpuCoreHours", "cpuCost", "ramBytes", "ramByteHours",
                             "ramCost", "gpuHours", "gpuCost", "networkCost",
                             "networkTransferBytes", "pvByteHours", "pvCost", "sharedCost",
                             "externalCost", "loadBalancerCost", "totalCost"],
                "properties": {
                    "name": {"type": "string"},
                    "properties": {"type": "object", "properties": {
                        **{k: {"type": "string"} for k in (
                            "cluster", "node", "namespace", "controllerKind", "controller",
                            "pod", "container")},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "annotations": {"type": "object",
                                        "additionalProperties": {"type": "string"}}},
                        "additionalProperties": False},
                    "window": {"type": "object", "required": ["start", "end"], "properties": {
                        "start": {"type": "string", "format": "date-time"},
                        "end": {"type": "string", "format": "date-time"}}},
                    "start": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
                    "end": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
                    **{k: NUMBER for k in ("minutes", "cpuCores", "cpuCoreHours", "cpuCost",
                                           "ramBytes", "ramByteHours", "ramCost", "gpuHours",
                                           "gpuCost", "networkCost", "networkTransferBytes",
                                           "pvByteHours", "pvCost", "sharedCost",
                                           "externalCost", "loadBalancerCost", "totalCost")},
                }}}}}}


def shaped(doc: dict) -> dict:
    jsonschema.validate(doc, SCHEMA)
    for step in doc["data"]:
        for name, a in step.items():
            assert a["name"] == name
            parts = sum(a[k] for k in ("cpuCost", "ramCost", "gpuCost", "networkCost", "pvCost",
                                       "sharedCost"))
            assert a["totalCost"] == pytest.approx(parts, abs=1e-9)
    return doc


# --- a third-party client ------------------------------------------------------------------------

def test_unalloc_reads_its_own_multi_key_query(api):
    """unalloc's OpenCost adapter, unchanged, against our server: its query is the one this
    issue started from (it used to get 400 "unknown aggregate")."""
    from unalloc.sources.opencost import OpenCostSource

    end = datetime.now(timezone.utc)
    rows = OpenCostSource(base_url=api).fetch(end - timedelta(days=2), end)
    by = {r.name: r for r in rows}
    web = by["shop/deployment:web/alpha"]
    assert web.labels["team"] == "alpha" and web.labels["namespace"] == "shop"
    # unalloc canonicalises keys to snake_case (controllerKind -> controller_kind)
    assert web.labels["controller"] == "web" and web.labels["controller_kind"] == "deployment"
    assert float(web.amount_usd) == pytest.approx(2.25 * HOURS * CPU_RATE, rel=1e-4)
    assert by["shop/statefulset:db/alpha"].labels["team"] == "alpha"
    assert float(by["ml/job:train/beta"].amount_usd) == pytest.approx(2.0 * HOURS * CPU_RATE,
                                                                      rel=1e-4)
    debug = by["default/__unallocated__/__unallocated__"]
    assert "team" not in debug.labels and "controller" not in debug.labels
    assert "__idle__" in by  # includeIdle=true
    assert {r.start for r in rows} == {TODAY - timedelta(days=2)}  # accumulate=true: one set


def test_unalloc_cli_attributes_spend_by_team(api, tmp_path):
    env = {**os.environ, "UNALLOC_OPENCOST_URL": api}
    p = subprocess.run([sys.executable, "-m", "unalloc.cli", "report", "--source", "opencost",
                        "--dimension", "team", "--days", "2", "--json"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    body = json.loads(p.stdout)
    buckets = {b["key"]: Decimal(b["amount_usd"]) for b in body["buckets"]}
    # shop's web (2.25 cores) and db (0.5) are team alpha, ml's train (2.0) beta
    assert float(buckets["alpha"]) == pytest.approx(2.75 * HOURS * CPU_RATE, rel=1e-4)
    assert float(buckets["beta"]) == pytest.approx(2.0 * HOURS * CPU_RATE, rel=1e-4)
    # the debug pod, idle and overhead carry no team: unalloc's "<unallocated>"; its day
    # window also holds the 5 minutes the last capacity reading is held past 13:00 (README)
    assert float(buckets["<unallocated>"]) == pytest.approx(
        ((CORES - 4.75) * HOURS + CORES * 300 / 3600) * CPU_RATE, rel=1e-4)


# --- OpenCost's documented examples --------------------------------------------------------------

@pytest.mark.parametrize("path,params,sets", [
    # opencost.io/docs/integrations/api-examples
    ("/allocation", {"window": "7d", "aggregate": "namespace", "resolution": "1m"}, 1),
    ("/allocation", {"window": "60m", "step": "10m", "resolution": "1m", "aggregate": "namespace"}, 6),
    ("/allocation/compute", {"window": "9d", "step": "3d", "resolution": "10m",
                             "aggregate": "namespace"}, 3),
    ("/allocation", {"window": "1d", "shareIdle": "true"}, 1),
    ("/allocation", {"window": "1d", "shareIdle": "true", "idleByNode": "true"}, 1),
    ("/allocation", {"window": "1d", "includeIdle": "true"}, 1),
    # docs/swagger.json: every window example, and the aggregate examples we serve
    ("/allocation/compute", {"window": "today"}, 1),
    ("/allocation/compute", {"window": "month", "aggregate": "cluster"}, 1),
    ("/allocation/compute", {"window": "lastweek", "aggregate": "node"}, 1),
    ("/allocation/compute", {"window": "30m", "aggregate": "controllerKind"}, 1),
    ("/allocation/compute", {"window": "12h", "aggregate": "controller"}, 1),
    ("/allocation/compute", {"window": "7d", "aggregate": "pod", "step": "1d"}, 7),
    ("/allocation/compute", {"window": "2023-01-18T10:30:00Z,2023-01-19T10:30:00Z",
                             "aggregate": "container"}, 1),
    ("/allocation/compute", {"window": "1674073869,1674193869", "aggregate": "all"}, 1),
    ("/allocation", {"window": "7d", "aggregate": "namespace,label:app"}, 1),
    ("/allocation", {"window": "2d", "aggregate": "namespace", "accumulate": "true",
                     "step": "1h"}, 1),
    # what the OpenCost UI (opencost-ui app/services/allocation.ts) sends
    ("/allocation/compute", {"window": "7d", "aggregate": "namespace", "includeIdle": "true",
                             "accumulate": "day", "metrics": "totalCost,cpuCost"}, 7),
    ("/allocation/compute", {"window": "2d", "aggregate": "namespace", "accumulate": "hour",
                             "filter": 'namespace:"shop"'}, 48),
    ("/allocation/compute", {"window": "lastmonth", "aggregate": "namespace",
                             "accumulate": "month"}, 1),
])
def test_documented_queries_answer_in_opencosts_shape(api, path, params, sets):
    status, doc = q(api, path, **params)
    assert status == 200, doc
    assert len(shaped(doc)["data"]) == sets


def test_figures_match_what_was_exported(api):
    status, doc = q(api, window=WINDOW, aggregate="namespace", includeIdle="true")
    assert status == 200
    [step] = shaped(doc)["data"]
    assert step["shop"]["cpuCoreHours"] == pytest.approx(2.75 * HOURS, rel=1e-4)
    assert step["shop"]["cpuCost"] == pytest.approx(2.75 * HOURS * CPU_RATE, rel=1e-4)
    assert step["ml"]["properties"] == {"cluster": "prod", "node": "n1", "namespace": "ml",
                                        "pod": "train-x", "container": "main",
                                        "controllerKind": "job", "controller": "train",
                                        "labels": {"team": "beta"}}
    assert step["shop"]["properties"]["labels"] == {"team": "alpha"}  # what all shop pods share
    assert "controller" not in step["shop"]["properties"]
    node_cost = CORES * HOURS * CPU_RATE
    assert sum(a["cpuCost"] for a in step.values()) == pytest.approx(node_cost, abs=1e-4)
    assert step["shop"]["cpuCores"] == pytest.approx(2.75, rel=1e-4)
    assert step["shop"]["minutes"] == HOURS * 60
    # the default aggregate is OpenCost's: one allocation per container, idle left out
    status, doc = q(api, window=WINDOW)
    [step] = doc["data"]
    assert "prod/n1/shop/web-1/sidecar" in step and "__idle__" not in step
    assert step["prod/n1/shop/web-1/sidecar"]["cpuCoreHours"] == pytest.approx(0.25 * HOURS, rel=1e-4)


# --- the grammar, as a table ----------------------------------------------------------------------

@pytest.mark.parametrize("params,names", [
    ({"aggregate": "namespace,controller,label:team"},
     {"shop/deployment:web/alpha", "shop/statefulset:db/alpha", "ml/job:train/beta",
      "default/__unallocated__/__unallocated__"}),
    ({"aggregate": "deployment"}, {"web", "__unallocated__"}),
    ({"aggregate": "statefulset"}, {"db", "__unallocated__"}),
    ({"aggregate": "job,daemonset"}, {"train/__unallocated__", "__unallocated__/__unallocated__"}),
    ({"aggregate": "controllerKind"}, {"deployment", "statefulset", "job", "__unallocated__"}),
    ({"aggregate": "label:app"}, {"web", "__unallocated__"}),
    ({"aggregate": "label:app_kubernetes_io_name"}, {"db", "__unallocated__"}),
    ({"aggregate": "team"}, {"alpha", "beta", "__unallocated__"}),
    ({"aggregate": "cluster,node"}, {"prod/n1"}),
    ({"aggregate": "all"}, {""}),
    ({"aggregate": "pod", "filter": 'namespace:"shop"'}, {"web-1", "web-2", "db-0"}),
    ({"aggregate": "pod", "filter": 'namespace:"shop"+controllerKind!:"deployment"'}, {"db-0"}),
    ({"aggregate": "pod", "filter": 'label[team]:"beta"|namespace:"default"'}, {"train-x", "debug"}),
    ({"aggregate": "pod", "filter": 'label[team]:"__unallocated__"'}, {"debug"}),
    ({"aggregate": "pod", "filter": 'controllerName:"web","db"'}, {"web-1", "web-2", "db-0"}),
    ({"aggregate": "pod", "filter": 'pod<~:"web"'}, {"web-1", "web-2"}),
    ({"aggregate": "namespace", "filter": 'cluster:"prod"+node:"n1"+namespace!:"shop","ml"'},
     {"default"}),
    ({"aggregate": "namespace", "filter": 'node:"n1"', "includeIdle": "true"},
     {"shop", "ml", "default", "__idle__", "__overhead__"}),
    ({"aggregate": "namespace", "shareIdle": "true", "includeIdle": "true"}, {"shop", "ml", "default"}),
])
def test_grammar_cases(api, params, names):
    status, doc = q(api, window=WINDOW, **params)
    assert status == 200, doc
    [step] = shaped(doc)["data"]
    assert set(step) == names


def test_shared_idle_is_the_same_with_and_without_a_filter(api):
    _, every = q(api, window=WINDOW, aggregate="namespace", shareIdle="true")
    _, shop = q(api, window=WINDOW, aggregate="namespace", shareIdle="true", filter='namespace:"shop"')
    assert set(shop["data"][0]) == {"shop"}
    assert shop["data"][0]["shop"]["sharedCost"] == pytest.approx(
        every["data"][0]["shop"]["sharedCost"], abs=1e-9) and shop["data"][0]["shop"]["sharedCost"] > 0


@pytest.mark.parametrize("params,needle", [
    ({"aggregate": "colour"}, "unknown aggregate key 'colour'"),
    ({"aggregate": "service"}, "does not know Kubernetes services"),
    ({"aggregate": "namespace,,pod"}, "empty key between commas"),
    ({"filter": "namespace:shop"}, "expected a quoted value"),
    ({"filter": 'namespace:"a"+node:"b"|pod:"c"'}, "'+' and '|' mixed"),
    ({"filter": 'colour:"red"'}, "unknown field 'colour'"),
    ({"filter": 'label[team:"x"'}, "unterminated [key]"),
    ({"shareIdle": "maybe"}, "shareIdle"),
    ({"accumulate": "ture"}, "accumulate='ture': allowed: true or false"),
    ({"accumulateBy": "fortnight"}, "allowed: all, hour, day, week, month, quarter"),
    ({"step": "0h"}, "step"),
    ({"window": "fortnight"}, "allowed: today"),
    ({"window": "2026-11-08,2026-11-01"}, "not after start"),
])
def test_bad_queries_are_400s_naming_what_is_wrong(api, params, needle):
    status, doc = q(api, **{"window": WINDOW, **params})
    assert status == 400 and doc["code"] == 400
    assert needle in doc["message"], doc["message"]
