"""Attack: unbounded work from one report request (issue 12, "the step bomb").

Against a real `cost serve` process with its report API on loopback, on a ledger the size of
a 1,000-pod cluster's last ten days (480,000 hourly rows):

* `/allocation?window=365d&step=1m` (228 CPU-seconds and 487 MB before the fix) answers 400 at
  once, naming `step`; huge steps and windows answer 400, never a 500 or a traceback;
* a legal but expensive query (240 hourly steps over every row: seconds of CPU) whose client
  disconnects stops using CPU within about a second: the process's own CPU time is measured;
* a busy API answers 503 with Retry-After at once instead of queueing.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from otel_agent.cost.pricing import parse_pricing
from otel_agent.cost.store import Store, hourly_t
from tests.support.cost_serve import Served, api_get
from tests.unit.cost.ledger_helpers import PRICING_YAML

pytestmark = pytest.mark.e2e

PODS, HOURS = 1000, 240
EXPENSIVE = "/allocation?window=10d&step=1h&aggregate=namespace&shareIdle=even"


@pytest.fixture(scope="module")
def big_ledger(tmp_path_factory) -> Path:
    """Ten days of hourly rows for 1,000 pods on 50 nodes, written straight into the hourly
    table (building them through ingest would take minutes); one hour is inserted, the others
    are copies of it, made inside the database."""
    d = tmp_path_factory.mktemp("big")
    store = Store(f"sqlite:///{d}/ledger.db", pricing=parse_pricing(PRICING_YAML, "p.yaml"))
    last = int(datetime.now(timezone.utc).timestamp()) // 3600 * 3600 - 3600
    rows = [dict(period_start=last, cluster="c", node=f"node-{p % 50}", namespace=f"ns-{p % 40}",
                 workload_kind="Deployment", workload=f"w-{p % 200}", pod_uid=f"uid-{p}",
                 pod=f"pod-{p}", container="app", kind="container", resource=res, unit=unit,
                 usage_qty=q, request_qty=q, ror_qty=q, cost_usage_micros=1000,
                 cost_ror_micros=1000, currency="USD")
            for p in range(PODS) for res, unit, q in (("cpu", "core-h", 0.5), ("memory", "GiB-h", 1.0))]
    cols = [c for c in hourly_t.c if c.name != "id"]
    with store.engine.begin() as c:
        c.execute(sa.insert(hourly_t), rows)
        for h in range(1, HOURS):
            src = sa.select(*[(hourly_t.c.period_start - h * 3600).label("period_start")
                              if col.name == "period_start" else col for col in cols]
                            ).where(hourly_t.c.period_start == last)
            c.execute(sa.insert(hourly_t).from_select([col.name for col in cols], src))
    store.close()
    return d / "ledger.db"


@pytest.fixture
def served(tmp_path, big_ledger):
    s = Served(tmp_path, otlp_http=False, ledger=f"sqlite:///{big_ledger}",
               *("--refresh-seconds", "30")).start()
    yield s
    s.stop()
    assert "Traceback" not in s.log(1_000_000), s.log()


def test_the_issues_step_bomb_is_refused_at_once(served):
    cpu0, t0 = served.cpu_seconds(), time.monotonic()
    status, _, body = api_get(served.api_port, "/allocation?window=365d&step=1m")
    took, cpu = time.monotonic() - t0, served.cpu_seconds() - cpu0
    doc = json.loads(body)
    print(f"\n/allocation?window=365d&step=1m: {status} in {took * 1000:.0f} ms, "
          f"{cpu:.2f} s CPU: {doc['message']}")
    assert status == 400 and doc["message"].startswith("step: 525600 steps of 1m"), doc
    assert took < 1.0 and cpu < 0.5, (took, cpu)


@pytest.mark.parametrize("query, needle", [
    ("window=7d&step=99999999999999999999w", "step"),
    ("window=7d&step=99999999999999999w", "longer than 10 years"),
    ("window=99999999999999999999d", "window"),
    ("window=999999999999999999,1", "timestamp out of range"),
    ("window=9999-12", "window"),
    ("window=0001-01-01T00:00:00Z,9999-12-31T23:59:59Z", "10 years"),
    ("window=120d&step=2h", "hourly grain"),
    ("window=365d&step=1h", "step"),
])
def test_huge_steps_and_windows_are_400s(served, query, needle):
    status, _, body = api_get(served.api_port, f"/allocation?{query}")
    assert status == 400, body
    assert needle in json.loads(body)["message"]


def test_an_abandoned_query_stops_using_cpu(served):
    # How long the expensive query takes when its client waits (the reference, same run).
    cpu0, t0 = served.cpu_seconds(), time.monotonic()
    status, _, body = api_get(served.api_port, EXPENSIVE, timeout=120)
    full_cpu, full_wall = served.cpu_seconds() - cpu0, time.monotonic() - t0
    assert status == 200 and len(json.loads(body)["data"]) == HOURS
    assert full_cpu > 3.0, f"the query is not expensive enough to measure ({full_cpu:.2f} s)"

    # The same query, its client gone after 0.5 s.
    s = socket.create_connection(("127.0.0.1", served.api_port))
    s.sendall(f"GET {EXPENSIVE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    time.sleep(0.5)
    s.close()
    gone = time.monotonic()
    cpu_at_close = served.cpu_seconds()
    time.sleep(1.5)
    cpu_settle = served.cpu_seconds()
    time.sleep(2.0)
    cpu_after = served.cpu_seconds() - cpu_settle
    print(f"\nexpensive query: {full_cpu:.2f} s CPU, {full_wall:.2f} s wall when awaited; "
          f"abandoned after 0.5 s: {cpu_settle - cpu_at_close:.2f} s CPU in the next 1.5 s, "
          f"{cpu_after:.2f} s CPU in the 2 s after that")
    assert cpu_settle - cpu_at_close < min(1.2, full_cpu / 2)
    assert cpu_after < 0.2, cpu_after  # idle: the query was abandoned, not finished
    assert time.monotonic() - gone < full_wall
    status, _, body = api_get(served.api_port, "/metrics")
    assert status == 200 and "otel_agent_cost_api_abandoned_total 1" in body.decode()
    assert "report query abandoned" in served.log(1_000_000) or "client went away" in served.log(1_000_000)


def test_a_busy_api_answers_503_at_once(served):
    """2 queries run, 2 wait; the fifth concurrent one is refused with Retry-After."""
    results: list[int] = []

    def one() -> None:
        results.append(api_get(served.api_port, EXPENSIVE, timeout=300)[0])

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    status, headers, body = api_get(served.api_port, "/allocation?window=today")
    took = time.monotonic() - t0
    for t in threads:
        t.join(300)
    assert status == 503 and headers.get("Retry-After") and "busy" in json.loads(body)["message"]
    assert took < 1.0
    assert sorted(results) == [200] * 4
    assert api_get(served.api_port, "/healthz")[0] == 200
