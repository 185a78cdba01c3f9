"""Soak: 30 simulated days of a 100-node cluster's churn through the real ingest, store and
refresh, to show that what the cost processor keeps stays flat while pods come and go.

Run: .venv/bin/python -m bench.soak   (or `make bench`; PASS/FAIL at the end, exit 1 on FAIL)

What runs: every request goes through `Ingestor.export()` (protobuf decode, validation, the
live-series bound, one committed SQLite transaction), the ledger is rebuilt with
`Store.refresh()` and retention applied with `Store.apply_retention()`, all on the simulated
clock (the process's caches expire on it too). No row is inserted by hand.

The cluster: 100 nodes of 16 cores; per node 3 pods of a deployment (container and pod CPU,
working set, requests); every deployment rolled out once a day (new pod uids); a CronJob
every minute whose pod runs 40 s on one node and is seen in one export, as the agent sends a
dead container's final counters. 43,200 job pods and 9,000 deployment pods in 30 days.

What is compressed, and why it still tests what grows:
  * exports once a simulated hour instead of every 10-60 s, one request carrying all 100 nodes
    (as a gateway batches). What grows with churn is the number of series, pods and the points
    of dead series; each job pod still arrives as its own series in exactly one export (60 of
    them in each export) and each rollout still makes 300 new pods a day, so the series, pods
    and nodes the ledger must create, count, bound and prune are the real ones. Only points
    per live series per hour are fewer (1 instead of 60-360), which is what makes 30 days fit
    in minutes; every node-hour is still rebuilt from its points;
  * the refresh loop and retention run every 6 simulated hours instead of every few seconds
    and every hour: each node's 6-7 dirty hours are rebuilt in one pass, as the real loop
    does with a backlog;
  * retention: raw points kept 3 days instead of 14 (hourly rows 5 days, the shortest the
    rules allow, daily 67), so the ledger reaches its steady state by day 6 and stays in it
    for 24 more days.

Measured at the end of day 6 (steady state reached) and of day 30, compared:
  * rows of the tables that must not grow (points, series, pods, nodes, dirty marks, hourly
    rows) and the bytes they use (SQLite dbstat): within ±15%;
  * the history tables (daily, monthly rows) grow by design, by as many rows each day: the
    rows added on day 30 within ±15% of those added on day 6;
  * the process's RSS: day 30 at most 10% + 8 MiB above day 6;
  * entries in the process's caches: within ±15%;
  * rebuild work per node-hour (series and points loaded): within ±15%; rebuild time per
    node-hour: at most 1.5× (CPU time of this process; the machine is shared);
  * points refused: none (before series had a life, the CronJob namespace reached the default
    bound of 50,000 series on day 18 and its new pods were refused from then on).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from otel_agent.cost.pricing import default_pricing
from otel_agent.cost.receiver import Ingestor
from otel_agent.cost.store import Retention, Store

S = 1_000_000_000
MIN = 60 * S
H = 3600 * S
DAY = 86400 * S
NODES = 100
DEPLOY_PODS_PER_NODE = 3
CORES = 16.0
EXPORT_EVERY = H
REFRESH_EVERY = 6 * H
RETENTION_EVERY = 6 * H
DAYS = 30
BASELINE_DAY = 6
STEADY_TABLES = ("points", "series", "pod_namespaces", "pod_labels", "node_facts", "node_first",
                 "dirty_hours", "quarantine", "ledger_hourly")
HISTORY_TABLES = ("ledger_daily", "ledger_monthly")
TOL = 0.15


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class Snapshot:
    day: int
    rows: dict[str, int]
    table_bytes: dict[str, int]
    db_bytes: int
    rss_kib: int
    cached: int
    rebuild_s_per_nh: float
    series_per_nh: float
    points_per_nh: float
    rejected: int


class Cluster:
    """The simulated cluster: what every node's agent would export at a given time."""

    def __init__(self, t0: int):
        from tests.unit.cost.builders import Res, container_attrs, node_attrs, pod_attrs

        self.Res, self.container_attrs, self.node_attrs, self.pod_attrs = (
            Res, container_attrs, node_attrs, pod_attrs)
        self.t0 = t0
        self.boot = t0 - 7 * DAY
        self.next_job = 0  # index of the next CronJob pod (one a minute from t0)

    def _deploy_pods(self, node: int, t: int) -> list[tuple[str, int]]:
        """(uid, created) of the node's deployment pods at t: a new set every day."""
        day = (t - self.t0) // DAY
        created = self.t0 + day * DAY + node * 30 * S  # rolled node by node
        if t < created:
            day, created = day - 1, created - DAY
        return [(f"d{node}-{day}-{i}", max(created, self.t0 - DAY)) for i in range(DEPLOY_PODS_PER_NODE)]

    def export(self, t: int):
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest)
        from tests.unit.cost.builders import request

        Res = self.Res
        res = []
        jobs: dict[int, list[tuple[str, int]]] = {}
        while self.t0 + self.next_job * MIN + 40 * S <= t:  # jobs that ended since the last export
            k = self.next_job
            jobs.setdefault(k % NODES, []).append((f"job-{k}", self.t0 + k * MIN))
            self.next_job += 1
        for n in range(NODES):
            node = f"node-{n:03d}"
            busy = 0.0
            pods = []
            for uid, created in self._deploy_pods(n, t):
                cpu = 0.5 * (t - created) / S
                busy += cpu
                pods.append((uid, cpu, f"team-{n % 10}", "web"))
            for uid, started in jobs.get(n, ()):
                busy += 40.0 * 0.8
                pods.append((uid, 40.0 * 0.8, "cron", None))
            r = (Res(self.node_attrs(node))
                 .sum("k8s.node.cpu.time", [(self.boot, t, 2.0 * (t - self.boot) / S + busy)], unit="s")
                 .gauge("otel_agent.node.cpu.capacity", [(t, CORES)])
                 .gauge("k8s.node.cpu.allocatable", [(t, CORES - 1)]))
            res.append(r)
            for uid, cpu, ns, deploy in pods:
                ca = self.container_attrs(uid, "main", node=node, namespace=ns, deployment=deploy,
                                          labels={"team": ns})
                c = Res(ca).sum("container.cpu.time", [(self.boot, t, cpu)], unit="s")
                if deploy:
                    c.gauge("container.memory.working_set", [(t, 2.0**28)], unit="By")
                    c.gauge("k8s.container.cpu.request.desired", [(t, 0.25)])
                res.append(c)
                res.append(Res(self.pod_attrs(uid, node=node, namespace=ns, deployment=deploy))
                           .sum("k8s.pod.cpu.time", [(self.boot, t, cpu)], unit="s"))
        req: ExportMetricsServiceRequest = request(*res)
        return req.SerializeToString()


def _measure(day: int, store: Store, ing: Ingestor, db: str, work: dict) -> Snapshot:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
                for t in STEADY_TABLES + HISTORY_TABLES}
        table_bytes: dict[str, int] = {}
        for name, tbl, size in con.execute("SELECT name, tbl_name, sum(pgsize) FROM dbstat "
                                           "JOIN sqlite_schema USING (name) GROUP BY name"):
            table_bytes[tbl] = table_bytes.get(tbl, 0) + size
    finally:
        con.close()
    db_bytes = sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
    nh = max(1, work["node_hours"])
    return Snapshot(day, rows, table_bytes, db_bytes, _rss_kib(),
                    store.cached_entries() + len(ing._known), work["cpu_s"] / nh,
                    work["series"] / nh, work["points"] / nh, work["rejected"])


def run(days: int = DAYS) -> tuple[list[Snapshot], float]:
    d = tempfile.mkdtemp(prefix="otel-agent-soak-")
    db = f"{d}/ledger.db"
    t0 = (time.time_ns() // DAY - days - 1) * DAY  # the simulation ends before today
    clock = [t0]
    store = Store(f"sqlite:///{db}", pricing=default_pricing(),
                  retention=Retention(points_days=3, hourly_days=5, daily_days=67))
    ing = Ingestor(store, now_ns=lambda: clock[0])
    cluster = Cluster(t0)
    snaps: list[Snapshot] = []
    work = {"node_hours": 0, "series": 0, "points": 0, "cpu_s": 0.0, "rejected": 0}
    last_retention = t0
    wall0 = time.monotonic()
    t = t0 + EXPORT_EVERY
    end = t0 + days * DAY
    while t <= end:
        clock[0] = t + 2 * S  # arrives two seconds after it was collected
        resp = ing.export(cluster.export(t))
        work["rejected"] += resp.partial_success.rejected_data_points
        if (t - t0) % REFRESH_EVERY == 0:  # the refresh loop
            before = store.health.snapshot()["rebuild"]
            c0 = time.process_time()
            store.refresh(now_s=clock[0] / S)
            work["cpu_s"] += time.process_time() - c0
            after = store.health.snapshot()["rebuild"]
            for k in ("node_hours", "series", "points"):
                work[k] += after[k] - before[k]
        if t - last_retention >= RETENTION_EVERY:
            store.apply_retention(datetime.fromtimestamp(clock[0] / S, timezone.utc))
            last_retention = t
        if (t - t0) % DAY == 0:
            day = (t - t0) // DAY
            if day in (BASELINE_DAY - 1, days - 1):
                work = {**work, "node_hours": 0, "series": 0, "points": 0, "cpu_s": 0.0}
            if day in (BASELINE_DAY, days):
                snaps.append(_measure(day, store, ing, db, work))
            if day in (BASELINE_DAY - 1, BASELINE_DAY, days - 1):
                prev_rows = _history_rows(db)
                snaps_rows_before[day] = prev_rows
            print(f"  day {day:2d}: {time.monotonic() - wall0:6.1f} s, RSS "
                  f"{_rss_kib() / 1024:.0f} MiB, series {store.live_series(int(clock[0] / S)).get('cron', 0)} "
                  f"live in cron", file=sys.stderr)
        t += EXPORT_EVERY
    store.close()
    return snaps, time.monotonic() - wall0


snaps_rows_before: dict[int, dict[str, int]] = {}


def _history_rows(db: str) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in HISTORY_TABLES}  # noqa: S608
    finally:
        con.close()


def _within(a: float, b: float, tol: float = TOL) -> bool:
    return abs(b - a) <= tol * max(abs(a), 1.0)


def main() -> int:
    print(f"soak: {DAYS} simulated days, {NODES} nodes, a CronJob a minute, a rollout a day "
          f"(compressed: see bench/soak.py)")
    snaps, wall = run()
    a, b = snaps
    checks: list[tuple[str, str, str, bool]] = []
    for t in STEADY_TABLES:
        checks.append((f"rows {t}", f"{a.rows[t]:,}", f"{b.rows[t]:,}", _within(a.rows[t], b.rows[t])))
    steady_a = sum(a.table_bytes.get(t, 0) for t in STEADY_TABLES)
    steady_b = sum(b.table_bytes.get(t, 0) for t in STEADY_TABLES)
    checks.append(("bytes of those tables", f"{steady_a / 2**20:.1f} MiB", f"{steady_b / 2**20:.1f} MiB",
                   _within(steady_a, steady_b)))
    for t in HISTORY_TABLES:
        day_a = snaps_rows_before[BASELINE_DAY][t] - snaps_rows_before[BASELINE_DAY - 1][t]
        day_b = b.rows[t] - snaps_rows_before[DAYS - 1][t]
        checks.append((f"rows {t} added that day", f"{day_a:,}", f"{day_b:,}", _within(day_a, day_b)))
    checks.append(("database file (history included)", f"{a.db_bytes / 2**20:.1f} MiB",
                   f"{b.db_bytes / 2**20:.1f} MiB", True))
    checks.append(("process RSS", f"{a.rss_kib / 1024:.0f} MiB", f"{b.rss_kib / 1024:.0f} MiB",
                   b.rss_kib <= a.rss_kib * 1.10 + 8 * 1024))
    checks.append(("entries in the caches", f"{a.cached:,}", f"{b.cached:,}", _within(a.cached, b.cached)))
    checks.append(("series loaded per node-hour rebuilt", f"{a.series_per_nh:.1f}", f"{b.series_per_nh:.1f}",
                   _within(a.series_per_nh, b.series_per_nh)))
    checks.append(("points loaded per node-hour rebuilt", f"{a.points_per_nh:.1f}", f"{b.points_per_nh:.1f}",
                   _within(a.points_per_nh, b.points_per_nh)))
    checks.append(("rebuild CPU time per node-hour", f"{a.rebuild_s_per_nh * 1000:.2f} ms",
                   f"{b.rebuild_s_per_nh * 1000:.2f} ms", b.rebuild_s_per_nh <= 1.5 * a.rebuild_s_per_nh))
    checks.append(("points refused (30 days)", "", f"{b.rejected:,}", b.rejected == 0))
    w = max(len(c[0]) for c in checks)
    print(f"{'':{w}}  {'day ' + str(BASELINE_DAY):>14}  {'day ' + str(DAYS):>14}")
    for name, va, vb, ok in checks:
        print(f"{name:{w}}  {va:>14}  {vb:>14}  {'ok' if ok else 'NOT FLAT'}")
    passed = all(ok for *_x, ok in checks)
    print(f"soak ({wall:.0f} s): {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
