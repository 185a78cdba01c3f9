"""A fleet of cost processors on one PostgreSQL ledger: ingest throughput with 1 and 2 replicas
(real `otel-agent cost serve` processes, OTLP/gRPC on loopback), rebuild throughput with 1 and
2 rebuilding processes (node-hours per second), and what the ledger costs on disk.

Run: .venv/bin/python -m bench.fleet   (also part of `make bench`)

What is measured, and against what:
  * ingest: a simulated fleet (tests/support/fleet.py: 50 nodes in 2 clusters, 10 series a
    node, one export every 5 minutes, requests of 25 nodes, ~1,250 points, as a gateway batches
    them) is sent
    by 4 client threads to the replicas round-robin; points/s is wall clock from the first
    request to the last acknowledgement (every point committed). Rebuilds are held off
    (--refresh-seconds 3600) so ingest is measured alone. The CPU seconds of the replicas and
    of the PostgreSQL server (postmaster and its backends) are read from /proc: what the user
    pays per point, on both sides.
  * rebuild: the dirty node-hours that ingest left, rebuilt by 1 or 2 processes running
    `Store.refresh()` at once (the same claim-by-advisory-lock code the replicas run).
  * disk: bytes per stored point (points partitions with their indexes, and series) and per
    hourly ledger row, from pg_total_relation_size.
This machine has 2 cores, shared by the client, the replicas and PostgreSQL: 2 replicas can
at best use what the client and the server leave. Figures taken while other work runs are
noisy; compare within one run.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path

HOURS = 6
NODES_PER_REQUEST = 25  # a gateway's batch: a cluster's export of one interval, ~1,250 points


def _clk() -> int:
    return os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / _clk()


def _pg_pids(url: str) -> list[int]:
    """The postmaster serving `url` and its children (backends, writer, WAL writer...)."""
    import sqlalchemy as sa

    engine = sa.create_engine("postgresql+psycopg://" + url.split("://", 1)[1])
    with engine.connect() as c:
        backend = c.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with open(f"/proc/{backend}/stat") as f:  # while the backend lives
            master = int(f.read().rsplit(")", 1)[1].split()[1])
    engine.dispose()
    out = [master]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                        out.append(int(p))
            except OSError:
                pass
    return out


def _pg_cpu(url: str) -> float:
    """CPU seconds of the server: the postmaster's own and its reaped children's (backends
    that exited: a rebuilder's, once it disconnects), and its live children's."""
    pids = _pg_pids(url)
    total = 0.0
    with open(f"/proc/{pids[0]}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    total += sum(int(x) for x in parts[11:15]) / _clk()  # utime stime cutime cstime
    for pid in pids[1:]:
        try:
            total += _cpu_of(pid)
        except OSError:
            pass
    return total


def _bodies():
    from tests.support import fleet as F

    now = time.time_ns()
    t0 = (now // (3600 * F.S) - HOURS - 1) * 3600 * F.S
    fleet = F.Fleet()
    reqs = F.requests(F.exports(fleet, t0, HOURS * 3600 // fleet.step_s),
                      nodes_per_request=NODES_PER_REQUEST)
    return fleet, [b for _t, b in reqs]


def _points(bodies) -> int:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    n = 0
    for b in bodies:
        req = ExportMetricsServiceRequest.FromString(b)
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    n += len(m.sum.data_points) + len(m.gauge.data_points)
    return n


def bench_ingest(url: str, replicas: int, tmp: Path) -> dict:
    import grpc

    from otel_agent.cost.receiver import SERVICE
    from tests.support import postgres
    from tests.support.cost_serve import Served

    postgres.reset_database(url)
    fleet, bodies = _bodies()
    points = _points(bodies)
    procs = [Served(tmp, "--refresh-seconds", "3600", ledger=url, api=False, otlp_http=False,
                    name=f"bench-r{i}") for i in range(replicas)]
    for p in procs:
        p.start()
    try:
        chans = [grpc.insecure_channel(f"127.0.0.1:{p.grpc_port}") for p in procs]
        calls = [ch.unary_unary(f"/{SERVICE}/Export") for ch in chans]
        # warm-up: every node's first export (anchors, series), not timed
        first = len(fleet.nodes()) // NODES_PER_REQUEST
        for i, b in enumerate(bodies[:first]):
            calls[i % replicas](b, timeout=60)
        work = bodies[first:]
        cpu0 = [p.cpu_seconds() for p in procs]
        pg0 = _pg_cpu(url)
        t0 = time.perf_counter()

        def lane(k: int) -> None:
            for i in range(k, len(work), 4):
                calls[i % replicas](work[i], timeout=60)

        threads = [threading.Thread(target=lane, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        cpu = sum(p.cpu_seconds() - c for p, c in zip(procs, cpu0))
        pg = _pg_cpu(url) - pg0
        for ch in chans:
            ch.close()
    finally:
        for p in procs:
            p.stop()
    timed_points = points * len(work) // len(bodies)
    return {"points": timed_points, "wall_s": wall, "points_per_s": timed_points / wall,
            "replica_cpu_us_per_point": cpu / timed_points * 1e6,
            "pg_cpu_us_per_point": pg / timed_points * 1e6}


def _refresh(url: str, q) -> None:
    from otel_agent.cost.pricing import default_pricing
    from otel_agent.cost.store import Store

    s = Store(url, pricing=default_pricing())
    c0 = time.process_time()
    n = s.refresh()
    q.put((n, time.process_time() - c0))
    s.close()


def bench_rebuild(url: str, rebuilders: int) -> dict:
    import sqlalchemy as sa

    from otel_agent.cost.store import dirty_t, hourly_t

    engine = sa.create_engine("postgresql+psycopg://" + url.split("://", 1)[1])
    with engine.begin() as c:  # every node-hour ingest left dirty, again
        marks = c.execute(sa.select(hourly_t.c.cluster, hourly_t.c.node, hourly_t.c.period_start)
                          .distinct()).all()
        if marks:
            c.execute(sa.delete(dirty_t))
            c.execute(sa.insert(dirty_t), [{"node_key": f"{cl}/{n}", "hour": h, "cluster": cl,
                                            "node": n, "version": 1} for cl, n, h in marks])
        pending = c.execute(sa.select(sa.func.count()).select_from(dirty_t)).scalar_one()
    engine.dispose()
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    pg0 = _pg_cpu(url)
    t0 = time.perf_counter()
    ps = [ctx.Process(target=_refresh, args=(url, q)) for _ in range(rebuilders)]
    for p in ps:
        p.start()
    results = [q.get(timeout=900) for _ in ps]
    for p in ps:
        p.join()
    wall = time.perf_counter() - t0
    done = sum(n for n, _ in results)
    cpu = sum(c for _, c in results)
    return {"node_hours": pending, "rebuilt": done, "wall_s": wall,
            "node_hours_per_s": pending / wall, "cpu_ms_per_node_hour": cpu / max(done, 1) * 1e3,
            "pg_cpu_ms_per_node_hour": (_pg_cpu(url) - pg0) / max(done, 1) * 1e3}


def bench_big_nodes(url: str, pods: int = 100, nodes: int = 4, hours: int = 3) -> dict:
    """Nodes of `pods` pods (the README's sizing unit), written in-process and rebuilt by one
    process: rebuild CPU per node-hour, and bytes per point and per hourly row at that size."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from otel_agent.cost.ingest import decode
    from otel_agent.cost.pricing import default_pricing
    from otel_agent.cost.store import Store
    from tests.support import fleet as F
    from tests.support import postgres

    postgres.reset_database(url)
    fleet = F.Fleet(clusters=("big",), nodes_per_cluster=nodes, pods_per_node=pods)
    now = time.time_ns()
    t0 = (now // (3600 * F.S) - hours - 1) * 3600 * F.S
    store = Store(url, pricing=default_pricing())
    points = 0
    for _t, body in F.requests(F.exports(fleet, t0, hours * 3600 // fleet.step_s), nodes_per_request=1):
        batch = decode(ExportMetricsServiceRequest.FromString(body), now_ns=now)
        store.write(batch, now_ns=now)
        points += len(batch.points)
    pending = store.pending()
    pg0 = _pg_cpu(url)
    c0 = time.process_time()
    t = time.perf_counter()
    store.refresh()
    wall = time.perf_counter() - t
    cpu = time.process_time() - c0
    pg = _pg_cpu(url) - pg0
    store.close()
    d = disk(url)
    return {"series_per_node": pods * 3 + 4, "node_hours": pending, "points": points,
            "cpu_ms_per_node_hour": cpu / pending * 1e3, "pg_cpu_ms_per_node_hour": pg / pending * 1e3,
            "node_hours_per_s": pending / wall, **d}


def disk(url: str) -> dict:
    import sqlalchemy as sa

    engine = sa.create_engine("postgresql+psycopg://" + url.split("://", 1)[1])
    with engine.connect() as c:
        pts = c.execute(sa.text("SELECT count(*) FROM points")).scalar_one()
        pbytes = c.execute(sa.text(
            "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
            "WHERE inhparent = 'points'::regclass")).scalar_one()
        sbytes = c.execute(sa.text("SELECT pg_total_relation_size('series')")).scalar_one()
        rows = c.execute(sa.text("SELECT count(*) FROM ledger_hourly")).scalar_one()
        hbytes = c.execute(sa.text("SELECT pg_total_relation_size('ledger_hourly')")).scalar_one()
        nh = c.execute(sa.text("SELECT count(*) FROM (SELECT DISTINCT cluster, node, period_start "
                               "FROM ledger_hourly) x")).scalar_one()
    engine.dispose()
    return {"points": pts, "bytes_per_point": (pbytes + sbytes) / max(pts, 1),
            "hourly_rows": rows, "bytes_per_hourly_row": hbytes / max(rows, 1),
            "hourly_bytes_per_node_hour": hbytes / max(nh, 1)}


def main() -> None:
    from tests.support import postgres

    reason = postgres.available()
    if reason:
        print(f"fleet bench skipped: {reason}")
        return
    tmp = Path(tempfile.mkdtemp(prefix="otel-agent-fleet-bench-"))
    with postgres.postgres_cluster() as url:
        for n in (1, 2):
            r = bench_ingest(url, n, tmp)
            print(f"fleet ingest, PostgreSQL, {n} replica(s): {r['points_per_s']:,.0f} points/s "
                  f"({r['points']:,} points in {r['wall_s']:.1f} s; CPU per point: replicas "
                  f"{r['replica_cpu_us_per_point']:.0f} us, PostgreSQL {r['pg_cpu_us_per_point']:.0f} us)")
        for n in (1, 2):
            r = bench_rebuild(url, n)
            print(f"fleet rebuild, PostgreSQL, {n} process(es): {r['node_hours_per_s']:,.0f} "
                  f"node-hours/s ({r['node_hours']} node-hours in {r['wall_s']:.1f} s; CPU per "
                  f"node-hour: rebuilder {r['cpu_ms_per_node_hour']:.1f} ms, PostgreSQL "
                  f"{r['pg_cpu_ms_per_node_hour']:.1f} ms)")
        d = disk(url)
        print(f"fleet disk: {d['bytes_per_point']:.0f} bytes per stored point (points with indexes "
              f"+ series, {d['points']:,} points); {d['bytes_per_hourly_row']:.0f} bytes per hourly "
              f"ledger row, {d['hourly_bytes_per_node_hour']:,.0f} bytes per node-hour")
        b = bench_big_nodes(url)
        print(f"fleet rebuild, PostgreSQL, nodes of 100 pods ({b['series_per_node']} series, "
              f"{b['node_hours']} node-hours): {b['cpu_ms_per_node_hour']:.0f} ms CPU per node-hour "
              f"(PostgreSQL {b['pg_cpu_ms_per_node_hour']:.0f} ms), {b['node_hours_per_s']:.1f} "
              f"node-hours/s; {b['bytes_per_point']:.0f} bytes per stored point, "
              f"{b['hourly_bytes_per_node_hour']:,.0f} bytes of hourly rows per node-hour "
              f"({b['hourly_rows'] / b['node_hours']:.0f} rows)")


if __name__ == "__main__":
    main()
