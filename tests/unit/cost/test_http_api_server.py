"""The report API's server behaviour on real loopback sockets: probes and metrics from the
health provider, the response-size cap, IPv6, a busy gate, and a query told to stop when its
client goes away (the fixture ledger here; tests/e2e/attacks/ runs the real one)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest

from otel_agent.cost.errors import QueryCancelled
from otel_agent.cost.http_api import serve
from tests.unit.cost.test_http_api import NOW, FixtureLedger, Pricing, W, get


class Health:
    """A small real provider: readiness flips, metrics say so."""

    def __init__(self) -> None:
        self.ready = True

    def snapshot(self) -> dict:
        return {"ready": self.ready, "backlog": 3}

    def prometheus(self) -> str:
        return f"# TYPE otel_agent_cost_ready gauge\notel_agent_cost_ready {int(self.ready)}\n"


def test_readyz_and_metrics_come_from_the_health_provider():
    health = Health()
    h = serve(None, Pricing(), "127.0.0.1:0", auth_token="rt", query_fn=FixtureLedger(),
              clock=lambda: NOW, health=health)
    try:
        status, _, body = get(f"{h.url}/readyz")
        assert status == 200 and json.loads(body) == {"ready": True, "backlog": 3}
        health.ready = False
        assert get(f"{h.url}/readyz")[0] == 503
        assert get(f"{h.url}/metrics")[0] == 401
        status, headers, body = get(f"{h.url}/metrics", {"Authorization": "bearer rt"})
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "otel_agent_cost_ready 0\n" in body.decode()
        assert "otel_agent_cost_api_busy_total 0\n" in body.decode()
    finally:
        h.stop()


def test_the_response_size_is_capped():
    h = serve(None, Pricing(), "127.0.0.1:0", query_fn=FixtureLedger(), clock=lambda: NOW,
              max_response_bytes=2000)
    try:
        status, _, body = get(f"{h.url}/allocation?window={W}&step=1h")
        doc = json.loads(body)
        assert status == 400 and doc["message"].startswith("response: ")
        assert "accumulate=true" in doc["message"]
    finally:
        h.stop()


def test_ipv6_listen():
    try:
        socket.socket(socket.AF_INET6).close()
        h = serve(None, Pricing(), "[::1]:0", query_fn=FixtureLedger(), clock=lambda: NOW)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert h.url.startswith("http://[::1]:")
        assert get(f"{h.url}/allocation?window={W}")[0] == 200
    finally:
        h.stop()


class SlowLedger:
    """Sleeps per step and honours should_stop like the real one."""

    def __init__(self) -> None:
        self.steps_done = 0
        self.stopped = threading.Event()

    def __call__(self, store, window, *, should_stop=None, **_kw):
        for _ in range(200):
            if should_stop is not None and should_stop():
                self.stopped.set()
                raise QueryCancelled("stopped")
            time.sleep(0.02)
            self.steps_done += 1
        return [[]]


def test_a_query_is_told_to_stop_when_its_client_goes_away():
    ledger = SlowLedger()
    h = serve(None, Pricing(), "127.0.0.1:0", query_fn=ledger, clock=lambda: NOW)
    try:
        s = socket.create_connection(("127.0.0.1", h.port))
        s.sendall(f"GET /allocation?window={W} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.3)
        s.close()
        assert ledger.stopped.wait(2.0)
        assert ledger.steps_done < 100
        assert h.gate.cancelled == 1
    finally:
        h.stop()


def test_a_busy_api_refuses_instead_of_queueing():
    ledger = SlowLedger()
    h = serve(None, Pricing(), "127.0.0.1:0", query_fn=ledger, clock=lambda: NOW, workers=1,
              waiting=0)
    try:
        t = threading.Thread(target=get, args=(f"{h.url}/allocation?window={W}",))
        t.start()
        time.sleep(0.3)
        status, headers, body = get(f"{h.url}/allocation?window={W}")
        assert status == 503 and headers["Retry-After"] == "2"
        assert "busy" in json.loads(body)["message"]
        t.join(30)
    finally:
        h.stop()
