"""Cost processor figures (not timed tests): ingest rate on one core, and report latency over a
year of ledger for 1,000 workloads on SQLite and PostgreSQL.

Run: .venv/bin/python -c "import bench.cost as b; b.main()"   (or `make bench`)

Ingest is measured as the receiver does it (decode an OTLP request, validate, one committed
transaction per request), in CPU seconds of this one process; the ledger rebuild runs in the
background in the server and is reported separately.

The report figure measures `allocations()` over ledger rows as the roll-ups hold them after a
year: per workload and month 2 resources on the monthly table, and the same per day in the daily
table. The rows are inserted directly (the equivalent hourly history is 1,000 × 8,760 × 2 rows,
whose ingest alone takes longer than this benchmark should).
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from otel_agent.cost.allocation import MONTH, allocations
from otel_agent.cost.ingest import decode
from otel_agent.cost.pricing import default_pricing
from otel_agent.cost.store import Store, daily_t, monthly_t
from otel_agent.cost.types import Model, SharePolicy, Window


def _requests(n_batches: int, containers: int = 400):
    """What agents send: levels as UpDownCounters (non-monotonic sums), as semconv has them."""
    from tests.unit.cost.builders import S, Res, container_attrs, node_attrs, request

    t0 = (time.time_ns() // (3600 * S) - 2) * 3600 * S
    out = []
    for b in range(1, n_batches + 1):
        t = t0 + b * 15 * S
        res = [Res(node_attrs("bench-node")).sum("k8s.node.cpu.time", [(t0, t, 3.0 * b)], unit="s")
               .updown("otel_agent.node.cpu.capacity", [(t0, t, 64.0)], unit="{cpu}")]
        for c in range(containers):
            uid = f"pod{c // 2}"
            r = Res(container_attrs(uid, f"c{c % 2}", deployment=f"wl{c // 4}"))
            r.sum("container.cpu.time", [(t0, t, 0.1 * b)], unit="s")
            r.updown("container.memory.working_set", [(t0, t, 1e8)], unit="By")
            r.updown("container.memory.usage", [(t0, t, 2e8)], unit="By")
            r.updown("k8s.container.cpu.request.desired", [(t0, t, 0.1)], unit="{cpu}")
            r.sum("container.network.io", [(t0, t, 1000.0 * b)], unit="By",
                  dp_attrs={"network.io.direction": "transmit", "otel_agent.network.class": "internet"})
            res.append(r)
        out.append(request(*res).SerializeToString())
    return out


def bench_ingest(url: str) -> tuple[float, float]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    bodies = _requests(40)
    store = Store(url, pricing=default_pricing())
    now = time.time_ns()
    points = 0
    c0 = time.process_time()
    for body in bodies:
        batch = decode(ExportMetricsServiceRequest.FromString(body), now_ns=now)
        store.write(batch)
        points += len(batch.points)
    ingest_rate = points / (time.process_time() - c0)
    c0 = time.process_time()
    store.refresh()
    refresh_rate = points / (time.process_time() - c0)
    store.close()
    return ingest_rate, refresh_rate


def _fill_year(store: Store, workloads: int, year: int) -> None:
    cols = dict(cluster="", node="", namespace="", workload_kind="deployment", workload="",
                pod_uid="", pod="", container="app", kind="container", resource="cpu",
                unit="core-hour", usage_qty=0.0, request_qty=0.0, ror_qty=0.0,
                cost_usage_micros=0, cost_ror_micros=0, currency="USD")
    with store.engine.begin() as c:
        for month in range(1, 13):
            start = datetime(year, month, 1, tzinfo=timezone.utc)
            end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=timezone.utc)
            days = (end - start).days
            monthly, daily = [], []
            for w in range(workloads):
                base = {**cols, "node": f"node{w % 50}", "namespace": f"ns{w % 40}",
                        "workload": f"wl{w}", "pod_uid": f"uid-{w}-{month}", "pod": f"wl{w}-{month}"}
                for res, unit, q, price in (("cpu", "core-hour", 0.5, 31611), ("memory", "byte-hour", 2**30, 4237)):
                    r = {**base, "resource": res, "unit": unit}
                    monthly.append({**r, "period_start": int(start.timestamp()), "usage_qty": q * 24 * days,
                                    "ror_qty": q * 24 * days, "cost_usage_micros": int(price * 0.5 * 24 * days),
                                    "cost_ror_micros": int(price * 0.5 * 24 * days)})
                    for d in range(days):
                        daily.append({**r, "period_start": int((start + timedelta(days=d)).timestamp()),
                                      "usage_qty": q * 24, "ror_qty": q * 24,
                                      "cost_usage_micros": int(price * 0.5 * 24),
                                      "cost_ror_micros": int(price * 0.5 * 24)})
            c.execute(sa.insert(monthly_t), monthly)
            c.execute(sa.insert(daily_t), daily)


def bench_report(url: str, workloads: int = 1000) -> dict[str, float]:
    store = Store(url, pricing=default_pricing())
    year = 2025
    _fill_year(store, workloads, year)
    out = {}
    month = Window(datetime(year, 11, 1, tzinfo=timezone.utc), datetime(year, 12, 1, tzinfo=timezone.utc))
    yearw = Window(datetime(year, 1, 1, tzinfo=timezone.utc), datetime(year + 1, 1, 1, tzinfo=timezone.utc))
    for name, kw in (("month by workload", dict(window=month, aggregate="workload")),
                     ("month by namespace, idle shared", dict(window=month, aggregate="namespace",
                                                               share_idle=SharePolicy.PROPORTIONAL)),
                     ("12 months by workload, step month", dict(window=yearw, aggregate="workload", step=MONTH)),
                     ("30 days by namespace, step day (daily table)",
                      dict(window=Window(month.start, month.start + timedelta(days=30)),
                           aggregate="namespace", step=timedelta(days=1)))):
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            allocations(store, model=Model.CHARGEBACK, **kw)
            best = min(best, time.perf_counter() - t)
        out[name] = best
    store.close()
    return out


def main() -> None:
    d = tempfile.mkdtemp(prefix="otel-agent-bench-")
    rate, refresh = bench_ingest(f"sqlite:///{d}/ingest.db")
    print(f"cost ingest (SQLite, decode+validate+commit): {rate:,.0f} data points/s per core")
    print(f"cost ledger rebuild (SQLite): {refresh:,.0f} data points/s per core")
    for label, url, cm in _backends(d):
        with cm:
            for name, secs in bench_report(url() if callable(url) else url).items():
                print(f"cost report {label}, 1,000 workloads x 12 months, {name}: {secs * 1000:.0f} ms")


def _backends(d: str):
    from contextlib import nullcontext

    yield "SQLite", f"sqlite:///{d}/report.db", nullcontext()
    try:
        from tests.support import postgres
    except ImportError:
        return
    if postgres.available() is None:
        holder: dict[str, str] = {}

        class _PG:
            def __enter__(self):
                self._cm = postgres.postgres_cluster()
                holder["url"] = self._cm.__enter__()

            def __exit__(self, *exc):
                return self._cm.__exit__(*exc)

        yield "PostgreSQL", lambda: holder["url"], _PG()


if __name__ == "__main__":
    main()
