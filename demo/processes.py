"""The pipeline's processes on loopback, for the demo and the tests: the cost processor, rotel
(a real OpenTelemetry collector from PyPI), the agent's command line, and the kernel's own
count to check them against.

Each is started on a free 127.0.0.1 port, logs to a file (a pipe nobody reads would fill and
stall it) and is stopped by its pid, never by name.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from otel_agent.errors import OtelAgentError


def rotel_binary() -> Path | None:
    """rotel-agent from the `rotel` wheel (a test extra), or None when it is not installed."""
    try:
        import rotel
    except ImportError:
        return None
    p = Path(rotel.__file__).parent / "rotel-agent"
    return p if p.is_file() and os.access(p, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cost_processor(workdir: Path, *extra: str,
                         timeout_seconds: float = 60) -> tuple[subprocess.Popen, int, str]:
    """`otel-agent cost serve` on a free loopback port with a SQLite ledger in `workdir`.
    Returns the process, its OTLP/gRPC port (read from its log) and the ledger URL."""
    ledger = f"sqlite:///{workdir / 'ledger.db'}"
    log_path = workdir / "cost.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_agent.cost.cli", "serve", "--listen", "127.0.0.1:0",
         "--ledger", ledger, "--refresh-seconds", "1", *extra],
        stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        m = re.search(r"OTLP/gRPC on port (\d+)", log_path.read_text(errors="replace"))
        if m:
            return proc, int(m.group(1)), ledger
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    stop_process(proc)
    raise OtelAgentError(f"the cost processor did not start; {log_path}:\n"
                         + log_path.read_text(errors="replace")[-2000:])


def rotel_argv(binary: Path, port: int, upstream_port: int, *, http_port: int | None = None,
               extra: tuple[str, ...] = ()) -> list[str]:
    """rotel: OTLP/gRPC in on `port` (OTLP/HTTP on `http_port`), out over OTLP/gRPC to
    `upstream_port` (the cost processor)."""
    return [str(binary), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{port}",
            "--otlp-http-endpoint", f"127.0.0.1:{http_port or free_port()}",
            "--exporter", "otlp", "--otlp-exporter-endpoint", f"http://127.0.0.1:{upstream_port}",
            "--otlp-exporter-protocol", "grpc", "--batch-timeout", "100ms", *extra]


ROTEL_ENV = {"ROTEL_LOG_LEVEL": "info"}


def start_rotel(binary: Path, port: int, upstream_port: int, log_path: Path) -> subprocess.Popen:
    """rotel between the agent and the cost processor, listening once this returns."""
    log = open(log_path, "ab")
    proc = subprocess.Popen(rotel_argv(binary, port, upstream_port),
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ROTEL_ENV})
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # listening once a connect succeeds
        if proc.poll() is not None:
            raise OtelAgentError(f"rotel exited with {proc.returncode}; see {log_path}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.05)
    stop_process(proc)
    raise OtelAgentError(f"rotel did not listen on port {port} within 30 s; see {log_path}")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def ledger_newest_ns(ledger_url: str) -> int:
    """Newest point time stored in a SQLite ledger (0 when none yet): has an export arrived?"""
    path = ledger_url[len("sqlite:///"):]
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as c:
            return int(c.execute("SELECT coalesce(max(time_ns), 0) FROM points").fetchone()[0])
    except sqlite3.Error:
        return 0  # not created yet, or busy


def wait_for_ledger(ledger_url: str, newer_than_ns: int, timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if ledger_newest_ns(ledger_url) > newer_than_ns:
            return True
        time.sleep(0.2)
    return False


def agent_command(static: Path, kubepods: str, node_name: str, bpf_profile: str) -> list[str]:
    return [sys.executable, "-m", "otel_agent", "run", "--metadata", "static",
            "--static-metadata", str(static), "--kubepods", kubepods,
            "--bpf-profile", bpf_profile, "--health-listen", "off",
            "--node-name", node_name, "--pod-labels", "app,team"]


def agent_env(endpoint: str, interval_ms: int, cluster: str, **extra: str) -> dict[str, str]:
    return dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                OTEL_EXPORTER_OTLP_INSECURE="true", OTEL_METRIC_EXPORT_INTERVAL=str(interval_ms),
                OTEL_RESOURCE_ATTRIBUTES=f"k8s.cluster.name={cluster}", **extra)


def cpu_usage_seconds(path: Path) -> float | None:
    """The cgroup's own count (cpu.stat usage_usec), None once the cgroup is gone."""
    try:
        for line in (path / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    except OSError:
        return None
    return None
