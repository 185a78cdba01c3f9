"""Reports on a real ledger: OTLP requests as the agent sends them go through the real decode
and store into SQLite; then the CLI runs as a subprocess in every format, and the HTTP API
serves the real query on loopback. Every format must tell the same story as the ledger's
own query, and usage must come out as fed in."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from otel_agent.cost.allocation import allocations, reconcile
from otel_agent.cost.http_api import serve
from otel_agent.cost.ingest import decode
from otel_agent.cost.pricing import default_pricing
from otel_agent.cost.store import Store
from otel_agent.cost.types import IDLE, OVERHEAD, Model, Window
from otel_agent.metrics import metric
from otel_agent.model import Scope

from tests.unit.cost.builders import H, S, T0, Res, container_attrs, node_attrs, request

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[3]
PY = sys.executable
GIB = 2**30
START = datetime.fromtimestamp(T0 // S, tz=timezone.utc)  # 2026-01-01T00:00Z
WINDOW = f"{START:%Y-%m-%dT%H:%M:%SZ},2026-01-01T02:00:00Z"
# core-seconds per hour used by each tenant (two full hours are fed)
CPU_S = {"shop": 5400.0, "search": 1800.0}
NODE_CPU_S = 9000.0  # node total: the tenants plus 1800 s of system work


def _name(key: str, scope: Scope) -> str:
    return metric(key).names[scope]


def _requests():
    # One point a minute, as the agent exports. Counters start a minute before the window:
    # the ledger bills an interval in the hour it ends in, so the points at 00:00 .. 01:59
    # fill exactly the two hours of the window.
    c0 = T0 - 60 * S
    ticks = [T0 + i * 60 * S for i in range(0, 120)]
    node = Res(node_attrs("node-a"))
    node.gauge(_name("k8s.node.cpu.capacity", Scope.NODE), [(t, 4.0) for t in ticks])
    node.gauge(_name("k8s.node.cpu.allocatable", Scope.NODE), [(t, 3.5) for t in ticks])
    node.gauge(_name("k8s.node.memory.capacity", Scope.NODE), [(t, 16.0 * GIB) for t in ticks])
    node.gauge(_name("k8s.node.memory.allocatable", Scope.NODE), [(t, 14.0 * GIB) for t in ticks])
    node.sum(_name("cpu.time", Scope.NODE),
             [(c0, t, NODE_CPU_S * (t - c0) / H) for t in ticks], unit="s")
    out = [node]
    for i, (ns, cpu) in enumerate(CPU_S.items()):
        r = Res(container_attrs(f"uid-{ns}", "app", namespace=ns, deployment=ns))
        r.sum(_name("cpu.time", Scope.CONTAINER), [(c0, t, cpu * (t - c0) / H) for t in ticks], unit="s")
        r.gauge(_name("memory.working_set", Scope.CONTAINER), [(t, (2 + 2 * i) * GIB) for t in ticks])
        out.append(r)
    return request(*out)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    path = tmp_path_factory.mktemp("ledger") / "ledger.db"
    url = f"sqlite:///{path}"
    store = Store(url, pricing=default_pricing())
    batch = decode(_requests(), now_ns=T0 + 3 * H)
    assert batch.rejected == 0, batch.error_message()
    store.write(batch)
    store.refresh()
    yield url, store
    store.close()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-c", "import sys; from otel_agent.cost.report_cli import main; "
                   "sys.exit(main(sys.argv[1:]))", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def _direct(store, **kw):
    w = Window(START, datetime(2026, 1, 1, 2, tzinfo=timezone.utc))
    return allocations(store, w, refresh=False, **kw)


def test_json_matches_the_ledger_and_the_usage_fed_in(ledger):
    url, store = ledger
    p = cli("--ledger", url, "--window", WINDOW, "--by", "namespace", "--step", "1h",
            "--format", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["code"] == 200 and len(doc["data"]) == 2
    direct = _direct(store, step=timedelta(hours=1))
    for step, dset in zip(doc["data"], direct):
        assert set(step) == {a.name for a in dset}
        for a in dset:
            assert step[a.name]["totalCost"] == pytest.approx(a.total_cost, abs=1e-9)
        for ns, cpu in CPU_S.items():
            assert step[ns]["cpuCoreHours"] == pytest.approx(cpu / 3600, rel=1e-6)


def test_table_reconciles_against_the_ledgers_node_rows(ledger):
    url, store = ledger
    p = cli("--ledger", url, "--window", WINDOW, "--format", "table")
    assert p.returncode == 0, p.stderr
    rows = {ln.split()[0]: ln.split()[1:] for ln in p.stdout.splitlines()[3:] if ln.split()}
    assert {"shop", "search", OVERHEAD, IDLE} <= set(rows)
    # 4 cores for 2 h = 8 core-hours: tenants 4, overhead 0.5 core x 2 h, the rest idle
    assert float(rows["shop"][0]) + float(rows["search"][0]) == pytest.approx(4.0, abs=1e-3)
    assert float(rows[OVERHEAD][0]) == pytest.approx(1.0, abs=1e-3)
    assert float(rows[IDLE][0]) == pytest.approx(3.0, abs=1e-3)
    assert float(rows["TOTAL"][0]) == pytest.approx(8.0, abs=1e-3)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("allocated")]
    assert line and "(reconciled" in line[0], p.stdout
    w = Window(START, datetime(2026, 1, 1, 2, tzinfo=timezone.utc))
    assert all(r.balanced for r in reconcile(store, w, refresh=False))


def test_csv_focus_and_html_agree_with_json(ledger, tmp_path):
    url, store = ledger
    direct = {a.name: a.total_cost for a in _direct(store)[0]}
    p = cli("--ledger", url, "--window", WINDOW, "--format", "csv")
    assert p.returncode == 0, p.stderr
    got: dict[str, float] = {}
    for r in csv.DictReader(io.StringIO(p.stdout)):
        got[r["name"]] = got.get(r["name"], 0.0) + float(r["total_cost"])
    assert got == pytest.approx(direct, abs=1e-9)

    p = cli("--ledger", url, "--window", WINDOW, "--format", "focus")
    assert p.returncode == 0, p.stderr
    got = {}
    for r in csv.DictReader(io.StringIO(p.stdout)):  # FOCUS 1.2: the allocation is in x_ columns
        assert r["BilledCost"] == "0.0"  # we split the cluster's bill; we issue none
        got[r["x_AllocatedResourceName"]] = got.get(r["x_AllocatedResourceName"], 0.0) + float(r["EffectiveCost"])
    assert got == pytest.approx({k: v for k, v in direct.items() if v}, abs=1e-9)

    out = tmp_path / "r.html"
    p = cli("--ledger", url, "--window", WINDOW, "--step", "1h", "--format", "html", "--output", str(out))
    assert p.returncode == 0 and p.stdout == "", p.stderr
    text = out.read_text()
    assert 'data-steps="2"' in text and "shop" in text
    assert "(reconciled" in text  # checked against the ledger's node rows


def test_missing_ledger_file_is_a_clear_error(tmp_path):
    p = cli("--ledger", f"sqlite:///{tmp_path}/nope.db", "--window", "today")
    assert p.returncode == 2
    assert "no ledger file" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "nope.db").exists()  # a report never creates a ledger


def test_http_api_serves_the_real_query(ledger):
    url, store = ledger
    h = serve(store, store.pricing, "127.0.0.1:0")
    try:
        with urllib.request.urlopen(f"{h.url}/allocation?window={WINDOW}&aggregate=namespace"
                                    f"&shareIdle=true&model=chargeback", timeout=30) as r:
            doc = json.loads(r.read())
        with urllib.request.urlopen(f"{h.url}/allocation?window={WINDOW}"
                                    f"&aggregate=namespace&filter=namespace:%22shop%22",
                                    timeout=30) as r:
            only_shop = json.loads(r.read())
        with urllib.request.urlopen(f"{h.url}/report.html?window={WINDOW}&step=1h", timeout=30) as r:
            page = r.read().decode()
    finally:
        h.stop()
    [step] = doc["data"]
    for special in (IDLE, OVERHEAD):  # shared onto the tenants: nothing left on them
        assert step.get(special, {"totalCost": 0.0})["totalCost"] == 0.0
    direct = _direct(store, share_idle="proportional", model=Model.CHARGEBACK)[0]
    assert {a.name: a.total_cost for a in direct} == pytest.approx(
        {k: v["totalCost"] for k, v in step.items()}, abs=1e-9)
    assert step["shop"]["sharedCost"] > 0
    assert set(only_shop["data"][0]) == {"shop"}
    assert 'data-steps="2"' in page and "(reconciled" in page
