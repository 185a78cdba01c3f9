"""`otel-agent cost serve` as a real process for the attack tests: every listener on a free
loopback port, a SQLite ledger under the test's tmp_path, and helpers that measure what the
process pays (its own CPU seconds, threads, descriptors, RSS) from /proc.

Ports are read from the processor's own start-up line, so `--listen 127.0.0.1:0` works and the
test measures the ports the process really bound."""

from __future__ import annotations

import re
import socket
import sys
import time
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from tests.support.pipeline import Process, cpu_seconds_of, fd_count, proc_status_kib
from tests.unit.cost.ledger_helpers import PRICING_YAML

SERVICE_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


class Served(Process):
    """A running `cost serve`; `.grpc_port`, `.http_port` (OTLP/HTTP), `.api_port`."""

    def __init__(self, tmp: Path, *extra: str, otlp_http: bool = True, api: bool = True,
                 ledger: str | None = None, name: str = "cost") -> None:
        self.db = tmp / "ledger.db"
        pricing = tmp / "pricing.yaml"
        pricing.write_text(PRICING_YAML)
        argv = [sys.executable, "-m", "otel_agent.cost.cli", "serve", "--listen", "127.0.0.1:0",
                "--ledger", ledger or f"sqlite:///{self.db}", "--pricing", str(pricing),
                "--refresh-seconds", "1"]
        if otlp_http:
            argv += ["--otlp-http-listen", "127.0.0.1:0"]
        if api:
            argv += ["--http-listen", "127.0.0.1:0"]
        super().__init__(argv + list(extra), tmp / f"{name}.log")
        self.grpc_port = self.http_port = self.api_port = 0

    def start(self, timeout_seconds: float = 60.0) -> "Served":
        # a restart appends to the same log: read only what this start writes
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        super().start()
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            m = re.search(r"(?:OTLP/gRPC on port (\d+)|no OTLP \(report-only\))"
                          r"(?:, OTLP/HTTP on port (\d+))?(?:, report API on port (\d+))?",
                          text)
            if m:
                self.grpc_port = int(m.group(1) or 0)
                self.http_port = int(m.group(2) or 0)
                self.api_port = int(m.group(3) or 0)
                return self
            if not self.alive():
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"cost serve did not start:\n{self.log()}")

    # --- what the process pays ---------------------------------------------------------------

    def cpu_seconds(self) -> float:
        return cpu_seconds_of(self.pid)

    def threads(self) -> int:
        return proc_status_kib(self.pid, "Threads")

    def fds(self) -> int:
        return fd_count(self.pid)

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")


def grpc_export(port: int, body: bytes, *, token: str | None = None, timeout: float = 10.0,
                scheme: str = "Bearer", creds=None, host: str = "127.0.0.1"):
    """One OTLP/gRPC Export on a fresh channel; returns the response or raises grpc.RpcError."""
    import grpc

    ch = (grpc.secure_channel(f"{host}:{port}", creds) if creds is not None
          else grpc.insecure_channel(f"{host}:{port}"))
    try:
        md = (("authorization", f"{scheme} {token}"),) if token else None
        return ch.unary_unary(SERVICE_METHOD, request_serializer=None,
                              response_deserializer=ExportMetricsServiceResponse.FromString)(
            body, timeout=timeout, metadata=md)
    finally:
        ch.close()


def http_export(port: int, body: bytes, *, token: str | None = None, timeout: float = 10.0,
                scheme: str = "Bearer", ssl_context=None, host: str = "127.0.0.1"
                ) -> tuple[int, bytes]:
    """One OTLP/HTTP protobuf POST on a fresh connection: (status, body)."""
    import http.client

    conn = (http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_context)
            if ssl_context is not None else http.client.HTTPConnection(host, port, timeout=timeout))
    try:
        headers = {"Content-Type": "application/x-protobuf"}
        if token:
            headers["Authorization"] = f"{scheme} {token}"
        conn.request("POST", "/v1/metrics", body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def api_get(port: int, path: str, *, token: str | None = None, timeout: float = 30.0,
            scheme: str = "Bearer") -> tuple[int, dict[str, str], bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"{scheme} {token}"} if token else {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def half_sent(port: int, n: int, head: bytes) -> list[socket.socket]:
    """`n` connections that each send `head` (a partial request) and then nothing more."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(head)
        out.append(s)
    return out


def make_pki(d: Path) -> Path:
    """A CA, a server certificate for localhost/127.0.0.1 and a client one, made by openssl."""
    import subprocess

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    for name, cn in (("server", "localhost"), ("client", "otel-gateway")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    return d


def export_body(uid: str = "u1", namespace: str = "team-a", cpu_seconds: float = 10.0,
                node: str = "node-a") -> bytes:
    """One container's CPU counter, started 2 minutes ago: a request the ledger accepts."""
    from tests.unit.cost.builders import Res, container_attrs, request

    now = time.time_ns()
    start = now - 120 * 1_000_000_000
    return request(Res(container_attrs(uid, "app", namespace=namespace, node=node)).sum(
        "container.cpu.time", [(start, now - 1_000_000_000, cpu_seconds)], unit="s")
    ).SerializeToString()
