"""Attack: slow and idle clients against a real `cost serve` process (issue 12).

Before aiohttp: with TLS on OTLP/HTTP one idle TCP connection blocked every other export (the
handshake ran in `accept()`); neither HTTP server had socket timeouts, and 250 half-sent
requests held 250 threads and descriptors, pinned a core and made new gRPC ingest connections
time out. Now, while the slow clients hold their sockets, a real OTLP export over gRPC and over
HTTP completes promptly, the process keeps its thread count and stays near idle, and the
half-sent requests are closed at the header timeout.
"""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from otel_agent.cost.aioserver import Limits
from tests.support.cost_serve import Served, export_body, grpc_export, half_sent, http_export, make_pki

pytestmark = pytest.mark.e2e
HEADER_TIMEOUT = Limits().header_timeout_seconds
HANDSHAKE_TIMEOUT = Limits().tls_handshake_timeout_seconds


def _closed_by_peer(s: socket.socket, within: float) -> float | None:
    """Seconds until the server closed `s` (recv gives EOF or a reset), None if it did not."""
    t0 = time.monotonic()
    s.settimeout(within)
    try:
        while True:
            if not s.recv(4096):
                return time.monotonic() - t0
    except (ConnectionResetError, ssl.SSLError):
        return time.monotonic() - t0
    except socket.timeout:
        return None


def test_an_idle_tcp_connection_does_not_block_tls_exports(tmp_path):
    pki = make_pki(tmp_path)
    served = Served(tmp_path, "--tls-cert", str(pki / "server.crt"), "--tls-key",
                    str(pki / "server.key"), api=False).start()
    try:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        idle = socket.create_connection(("127.0.0.1", served.http_port))  # says nothing at all
        t0 = time.monotonic()
        status, _ = http_export(served.http_port, export_body(), ssl_context=ctx, host="localhost")
        took = time.monotonic() - t0
        assert status == 200 and took < 2.0, took
        closed = _closed_by_peer(idle, HANDSHAKE_TIMEOUT + 5)
        print(f"\nTLS export beside an idle TCP connection: {took * 1000:.0f} ms; the idle "
              f"connection was closed after {closed} s (handshake timeout {HANDSHAKE_TIMEOUT} s)")
        assert closed is not None and closed <= HANDSHAKE_TIMEOUT + 2
    finally:
        served.stop()


def test_250_half_sent_requests_hold_no_threads_and_block_no_export(tmp_path):
    served = Served(tmp_path).start()
    socks: list[socket.socket] = []
    try:
        time.sleep(1.0)
        threads0, fds0 = served.threads(), served.fds()
        # On OTLP/HTTP 125 whose headers never end and 125 whose body never comes; 125 more
        # whose headers never end on the report API.
        socks += half_sent(served.http_port, 125, b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\n")
        socks += half_sent(served.api_port, 125, b"GET /allocation?window=today HTTP/1.1\r\nHo")
        socks += half_sent(served.http_port, 125,
                           b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: "
                           b"application/x-protobuf\r\nContent-Length: 100000\r\n\r\n0123456789")
        time.sleep(1.0)
        cpu0 = served.cpu_seconds()
        t0 = time.monotonic()
        grpc_export(served.grpc_port, export_body("g1"), timeout=5)
        grpc_took = time.monotonic() - t0
        t0 = time.monotonic()
        status, _ = http_export(served.http_port, export_body("h1"), timeout=5)
        http_took = time.monotonic() - t0
        time.sleep(2.0)
        cpu = served.cpu_seconds() - cpu0
        threads, fds = served.threads(), served.fds()
        print(f"\n375 slow clients: gRPC export {grpc_took * 1000:.0f} ms, OTLP/HTTP export "
              f"{http_took * 1000:.0f} ms; threads {threads0} -> {threads}; descriptors {fds0} -> "
              f"{fds}; CPU {cpu:.2f} s over {time.monotonic() - t0 + 2:.1f} s")
        assert status == 200 and grpc_took < 2.0 and http_took < 2.0
        assert threads <= threads0 + 2  # no thread per connection
        assert fds <= fds0 + 375 + 10  # one descriptor per connection, nothing else
        assert cpu < 0.5  # nothing spins
        # the header timeout closes the ones whose headers never ended
        time.sleep(HEADER_TIMEOUT + 1.0 - 3.0)
        closed = sum(_closed_by_peer(s, 0.5) is not None for s in socks[:250])
        print(f"after {HEADER_TIMEOUT + 1:.0f} s: {closed} of 250 header-less connections closed "
              f"by the server; descriptors {served.fds()}")
        assert closed == 250
    finally:
        for s in socks:
            s.close()
        served.stop()


def test_connections_past_the_cap_are_closed_at_once(tmp_path):
    served = Served(tmp_path, "--http-max-connections", "20", api=False).start()
    socks: list[socket.socket] = []
    try:
        time.sleep(1.0)
        fds0 = served.fds()
        socks = [socket.create_connection(("127.0.0.1", served.http_port)) for _ in range(30)]
        time.sleep(0.5)
        closed = sum(_closed_by_peer(s, 0.2) is not None for s in socks)
        print(f"\n30 idle connections, cap 20: {closed} closed at once; descriptors {fds0} -> "
              f"{served.fds()}")
        assert closed == 10
        assert served.fds() <= fds0 + 20 + 5
    finally:
        for s in socks:
            s.close()
        served.stop()
