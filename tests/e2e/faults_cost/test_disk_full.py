"""Disk full under the SQLite ledger: the cost processor (a real `cost serve` process) keeps its
ledger on a small tmpfs made by the test; a ballast file fills it while a client streams
batches. It must refuse with a retryable status, acknowledge nothing it did not write, stay up,
and take the client's retries once the ballast is gone: the final ledger equals the truth."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from otel_agent.cost.receiver import SERVICE
from tests.unit.cost import scenario
from tests.unit.cost.builders import S
from tests.unit.cost.ledger_helpers import PRICING_YAML, pricing, totals
from otel_agent.cost.store import Store

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")]
ROOT = Path(__file__).parents[3]
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(path: Path) -> None:
    """Write until the filesystem is full, down to the last small block."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 16, 4096, 512):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def stored_points(db: Path) -> set[tuple]:
    """(metric, pod_uid, container_key, start, time, value) of every stored point."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return set(con.execute(
            "SELECT s.metric, s.pod_uid, s.container_key, p.start_ns, p.time_ns, p.value "
            "FROM points p JOIN series s ON s.series_id = p.series_id"))
    finally:
        con.close()


def sent_points(batch) -> set[tuple]:
    out = set()
    for it in batch:
        a = dict(it.attrs)
        out.add((it.name, a.get("k8s.pod.uid", ""), a.get("container.id") or a.get("k8s.container.name", ""),
                 it.start if it.kind == "sum" else 0, it.time, float(it.value)))
    return out


def test_disk_full_refuses_retryably_and_recovers(small_fs, tmp_path):
    now_s = int(time.time())
    t0 = (now_s - 4 * 3600) // 3600 * 3600 * S
    batches = scenario.per_export(scenario.items(t0=t0, duration_s=3 * 3600, step_s=60))
    bodies = [scenario.pack(b).SerializeToString() for b in batches]
    pricing_file = tmp_path / "pricing.yaml"
    pricing_file.write_text(PRICING_YAML)
    db = small_fs / "ledger.db"
    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_agent.cost.cli", "serve", "--listen", f"127.0.0.1:{port}",
         "--ledger", f"sqlite:///{db}", "--pricing", str(pricing_file), "--refresh-seconds", "0.3"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    acked: list[int] = []
    refusals: dict[str, int] = {}
    other: list[str] = []
    stop = threading.Event()

    def client() -> None:
        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        call = ch.unary_unary(f"/{SERVICE}/Export", request_serializer=None,
                              response_deserializer=ExportMetricsServiceResponse.FromString)
        for i, body in enumerate(bodies):
            while not stop.is_set():
                try:
                    call(body, timeout=10, wait_for_ready=True)
                    acked.append(i)
                    break
                except grpc.RpcError as e:
                    if e.code() in RETRYABLE:
                        refusals[e.code().name] = refusals.get(e.code().name, 0) + 1
                    else:
                        other.append(f"{e.code().name}: {e.details()}")
                        return
                    time.sleep(0.02)
        ch.close()

    th = threading.Thread(target=client, daemon=True)
    th.start()
    ballast = small_fs / "ballast"
    try:
        deadline = time.monotonic() + 120
        while len(acked) < len(bodies) // 4:
            assert time.monotonic() < deadline and not other, other
            time.sleep(0.01)
        fill(ballast)
        # Full: the processor refuses (a few batches may still fit in pages SQLite already had).
        deadline = time.monotonic() + 60
        while sum(refusals.values()) < 20:
            assert time.monotonic() < deadline, f"no refusals with the disk full: {refusals}"
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        stalled_at = len(acked)
        time.sleep(2)  # stays refused and alive, refreshes failing in the background
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert len(acked) == stalled_at and len(acked) < len(bodies), "acknowledged with the disk full"
        # Acknowledged = written: every acknowledged batch is in the ledger now, disk still full.
        have = stored_points(db)
        for i in acked:
            assert sent_points(batches[i]) <= have, f"batch {i} acknowledged but not stored"
        ballast.unlink()
        th.join(timeout=180)
        assert not th.is_alive() and not other, other
    finally:
        stop.set()
        if ballast.exists():
            ballast.unlink()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    err = proc.stderr.read().decode()
    assert rc == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert acked == list(range(len(bodies)))
    # Nothing lost, nothing doubled: the stored points are exactly those sent.
    want = set().union(*(sent_points(b) for b in batches))
    assert stored_points(db) == want
    # And the ledger's totals are the scenario's own (rates × time), not another run's output.
    got = Store(f"sqlite:///{db}", pricing=pricing())
    t = totals(got)
    got.close()
    assert t[("container", "p1", "app", "cpu")] == pytest.approx(scenario.EXPECTED_CORE_HOURS["app"])
    print(f"refusals while full: {refusals}; processor log lines: "
          f"{sorted({ln.split(': ', 2)[-1][:90] for ln in err.splitlines() if 'WARNING' in ln})}")
