"""Three `otel-agent cost serve` processes on one real PostgreSQL 15 ledger, fed a day of a
simulated 50-node, 2-cluster fleet by a client that sends every request to a random replica,
with duplicates and local reordering, retrying elsewhere whatever was not acknowledged (as a
gateway's OTLP exporter behind a Service does). Two replicas are SIGKILLed mid-stream (and
restarted), each while it may be writing or rebuilding. Once the backlog has drained, the
ledger (hourly, daily and monthly rows, by every key) must equal the one a single process
builds from one clean delivery, to the micro-unit; and a report-only replica (--no-otlp)
serves /allocation per cluster from it."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import timedelta

import grpc
import pytest
import sqlalchemy as sa
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest, ExportMetricsServiceResponse)

from otel_agent.cost.ingest import decode
from otel_agent.cost.receiver import SERVICE
from otel_agent.cost.store import Store, daily_t, dirty_t, hourly_t, monthly_t, quarantine_t
from tests.support import fleet as F
from tests.support import postgres
from tests.support.cost_serve import Served, api_get
from tests.unit.cost.ledger_helpers import pricing

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

REPLICAS = 3
STEPS = 288  # a day of one export every 5 minutes


def _channel(port: int):
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    return ch, ch.unary_unary(f"/{SERVICE}/Export", request_serializer=None,
                              response_deserializer=ExportMetricsServiceResponse.FromString)


class Client:
    """Sends each body to a random live replica until one acknowledges it."""

    def __init__(self, replicas: list[Served]):
        self.replicas = replicas
        self.lock = threading.Lock()
        self.rng = random.Random(7)
        self.retries = 0
        self.channels: dict[int, tuple] = {}

    def send(self, body: bytes) -> None:
        deadline = time.monotonic() + 120
        while True:
            with self.lock:
                ports = [r.grpc_port for r in self.replicas if r.grpc_port and r.alive()]
                port = self.rng.choice(ports) if ports else 0
                if port and port not in self.channels:
                    self.channels[port] = _channel(port)
            if port:
                try:
                    resp = self.channels[port][1](body, timeout=30)
                    assert not resp.partial_success.rejected_data_points, resp.partial_success
                    return
                except grpc.RpcError as e:
                    assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                        grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                                        grpc.StatusCode.INTERNAL), e
            self.retries += 1
            assert time.monotonic() < deadline, "no replica acknowledged a request for 120 s"
            time.sleep(0.05)

    def close(self) -> None:
        for ch, _ in self.channels.values():
            ch.close()


@pytest.fixture(scope="module")
def pg_url():
    reason = postgres.available()
    if reason:
        pytest.skip(reason)
    with postgres.postgres_cluster() as url:
        yield url


def _rows(engine, table) -> list[tuple]:
    """Every row by every key; money (integer micro-units) exact, quantities to 12 significant
    digits (the daily and monthly roll-ups are SQL sums, whose float rounding depends on the
    order the database adds the hourly rows in)."""
    from otel_agent.cost.store import LEDGER_COLUMNS

    with engine.connect() as c:
        rows = c.execute(sa.select(*[table.c[n] for n in LEDGER_COLUMNS])).all()
    return sorted(tuple(float(f"{v:.12g}") if isinstance(v, float) else v for v in r) for r in rows)


def test_three_replicas_with_two_sigkills_build_the_one_process_ledger(pg_url, tmp_path):
    t_start = time.monotonic()
    now_ns = time.time_ns()
    t0 = (now_ns // (3600 * F.S) - 26) * 3600 * F.S
    fleet = F.Fleet()
    reqs = F.requests(F.exports(fleet, t0, STEPS), nodes_per_request=10)
    bodies = F.delivery(reqs)

    # the reference: one process, one clean delivery (one request per export time)
    ref = Store(f"sqlite:///{tmp_path}/ref.db", pricing=pricing())
    by_t: dict[int, list] = {}
    for t, body in reqs:
        by_t.setdefault(t, []).append(body)
    for t in sorted(by_t):
        req = ExportMetricsServiceRequest()
        for body in by_t[t]:
            req.MergeFromString(body)
        batch = decode(req, now_ns=now_ns)
        ref.write(batch, now_ns=now_ns)
        assert not batch.rejected, batch.error_message()
    ref.refresh()
    expected = {name: _rows(ref.engine, t) for name, t in
                (("hourly", hourly_t), ("daily", daily_t), ("monthly", monthly_t))}
    # what one process reports per cluster over the day (the report-only replica must agree)
    from datetime import datetime, timezone

    from otel_agent.cost.allocation import allocations
    from otel_agent.cost.types import Window

    w0 = datetime.fromtimestamp(t0 // F.S, timezone.utc)
    [ref_alloc] = allocations(ref, Window(w0, w0 + timedelta(hours=27)), aggregate="cluster")
    ref_by_cluster = {a.name: a.total_cost for a in ref_alloc if a.name in fleet.clusters}
    ref.close()
    assert set(ref_by_cluster) == set(fleet.clusters) and all(ref_by_cluster.values())

    phases = {"reference": time.monotonic() - t_start}
    replicas = [Served(tmp_path, "--refresh-seconds", "0.5", ledger=pg_url, api=False,
                       otlp_http=False, name=f"r{i}") for i in range(REPLICAS)]
    client = Client(replicas)
    try:
        for r in replicas:
            r.start()
        sent = [0]
        errors: list[BaseException] = []
        killed: list[int] = []

        def worker(lane: list[bytes]) -> None:
            try:
                for body in lane:
                    client.send(body)
                    with client.lock:
                        sent[0] += 1
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        def killer() -> None:
            """SIGKILL replica 0 at 30% and replica 1 at 65% of the stream, while the senders
            run (each may be mid-write or mid-rebuild), and restart it."""
            try:
                for at, which in ((len(bodies) * 3 // 10, 0), (len(bodies) * 65 // 100, 1)):
                    while sent[0] < at and not errors and any(t.is_alive() for t in threads):
                        time.sleep(0.01)
                    r = replicas[which]
                    with client.lock:
                        old = client.channels.pop(r.grpc_port, None)
                        r.grpc_port = 0
                    r.kill()
                    killed.append(sent[0])
                    if old is not None:
                        old[0].close()
                    r.start()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        # four concurrent senders (a gateway's sending queue consumers), in delivery order
        threads = [threading.Thread(target=worker, args=(bodies[i::4],)) for i in range(4)]
        k = threading.Thread(target=killer)
        for th in threads:
            th.start()
        k.start()
        for th in threads:
            th.join(600)
        k.join(120)
        assert not errors, errors[0]
        assert sent[0] == len(bodies) and len(killed) == 2 and killed[-1] < len(bodies), killed

        phases["stream"] = time.monotonic() - t_start - sum(phases.values())
        # a report-only replica, scaled apart from the writers
        reader = Served(tmp_path, "--no-otlp", ledger=pg_url, otlp_http=False, name="reader").start()
        replicas.append(reader)

        engine = sa.create_engine("postgresql+psycopg://" + pg_url.split("://", 1)[1])
        deadline = time.monotonic() + 120
        while True:
            with engine.connect() as c:
                left = c.execute(sa.select(sa.func.count()).select_from(dirty_t)).scalar_one()
                quarantined = c.execute(sa.select(sa.func.count()).select_from(quarantine_t)).scalar_one()
            if not left:
                break
            assert time.monotonic() < deadline, f"{left} node-hours still dirty after 120 s"
            time.sleep(0.5)
        assert quarantined == 0
        phases["drain"] = time.monotonic() - t_start - sum(phases.values())
        got = {name: _rows(engine, t) for name, t in
               (("hourly", hourly_t), ("daily", daily_t), ("monthly", monthly_t))}
        engine.dispose()
        assert len(got["hourly"]) == len(expected["hourly"])
        assert got["hourly"] == expected["hourly"]
        assert got["daily"] == expected["daily"]
        assert got["monthly"] == expected["monthly"]

        # reports across clusters and within one, from the report-only replica
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 // F.S))
        end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 // F.S + 27 * 3600))
        status, _h, body = api_get(reader.api_port, f"/allocation?window={start},{end}"
                                                    f"&aggregate=cluster&accumulate=true")
        assert status == 200, body[:300]
        [step] = json.loads(body)["data"]
        assert {k: v["totalCost"] for k, v in step.items() if k in fleet.clusters} == pytest.approx(
            ref_by_cluster, rel=1e-9)
        status, _h, body = api_get(reader.api_port, f"/allocation?window={start},{end}"
                                                    f"&aggregate=namespace&accumulate=true"
                                                    f"&filter=cluster:%22east%22")
        assert status == 200, body[:300]
        [east] = json.loads(body)["data"]
        assert {"team-0", "team-1"} <= set(east)
        for r in replicas:
            assert "Traceback" not in r.log(10_000_000), r.log()
    finally:
        client.close()
        for r in replicas:
            r.stop()
    print(f"fleet test: {len(bodies)} requests ({len(bodies) - len(reqs)} duplicates), "
          f"{client.retries} retries, {time.monotonic() - t_start:.1f} s; phases "
          f"{ {k: round(v, 1) for k, v in phases.items()} }")
