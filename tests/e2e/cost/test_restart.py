"""Kill the cost processor (SIGKILL) while a client streams batches, restart it, and check
nothing was double-counted or lost: the client retries every batch not acknowledged, exactly
as an OTLP exporter does, and the ledger must equal the one from a single clean delivery."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from otel_agent.cost.receiver import SERVICE
from otel_agent.cost.store import Store
from tests.unit.cost import scenario
from tests.unit.cost.builders import S
from tests.unit.cost.ledger_helpers import PRICING_YAML, ingest, pricing, snapshot, totals
from tests.e2e.faults_cost.test_disk_full import sent_points, stored_points

pytestmark = pytest.mark.e2e
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(port: int, ledger: str, pricing_file: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "otel_agent.cost.cli", "serve", "--listen", f"127.0.0.1:{port}",
         "--ledger", ledger, "--pricing", pricing_file, "--refresh-seconds", "0.5"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_mid_stream_loses_and_doubles_nothing(tmp_path):
    now_s = int(time.time())
    t0 = (now_s - 4 * 3600) // 3600 * 3600 * S
    batches = scenario.per_export(scenario.items(t0=t0, duration_s=3 * 3600, step_s=60))
    bodies = [scenario.pack(b).SerializeToString() for b in batches]

    pricing_file = tmp_path / "pricing.yaml"
    pricing_file.write_text(PRICING_YAML)
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    port = _port()
    proc = _start(port, ledger, str(pricing_file))
    acked = []
    retries = [0]

    def client():
        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        call = ch.unary_unary(f"/{SERVICE}/Export", request_serializer=None,
                              response_deserializer=ExportMetricsServiceResponse.FromString)
        for i, body in enumerate(bodies):
            while True:
                try:
                    call(body, timeout=5, wait_for_ready=True)
                    acked.append(i)
                    break
                except grpc.RpcError as e:
                    assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                        grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN), e
                    retries[0] += 1
                    time.sleep(0.05)
            time.sleep(0.002)
        ch.close()

    th = threading.Thread(target=client)
    th.start()
    kills = 0
    rng = random.Random(9)  # kill points at random, reproducibly
    try:
        for frac in sorted(rng.uniform(0.1, 0.9) for _ in range(4)):
            while len(acked) < int(len(bodies) * frac):
                time.sleep(0.01)
                assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(rng.uniform(0, 0.05))
            proc.send_signal(signal.SIGKILL)  # mid-stream: requests are in flight
            proc.wait()
            kills += 1
            # Acknowledged = durable: with the processor dead, every acknowledged batch is stored.
            have = stored_points(tmp_path / "ledger.db")
            for i in list(acked):
                assert sent_points(batches[i]) <= have, f"batch {i} acknowledged, lost by SIGKILL"
            proc = _start(port, ledger, str(pricing_file))
        th.join(timeout=300)
        assert not th.is_alive()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert kills == 4 and acked == list(range(len(bodies)))
    # Counted once: the stored points are exactly those sent (a lost acknowledged point inside
    # an hour would not change the hour's delta, so the ledger comparison alone can't show it).
    assert stored_points(tmp_path / "ledger.db") == set().union(*(sent_points(b) for b in batches))
    assert retries[0] > 0  # the kills did hit batches in flight

    got = Store(ledger, pricing=pricing())
    ref = Store(f"sqlite:///{tmp_path}/ref.db", pricing=pricing())
    ingest(ref, batches, now_ns=time.time_ns())
    assert snapshot(got) == snapshot(ref)
    t = totals(got)
    assert t[("container", "p1", "app", "cpu")] == pytest.approx(scenario.EXPECTED_CORE_HOURS["app"])
    got.close()
    ref.close()
