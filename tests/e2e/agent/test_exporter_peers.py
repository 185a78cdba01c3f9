"""The agent's OTLP exporter (otel_agent/otlp/exporter.py) against real peers on loopback:
our cost processor's receiver (gRPC and OTLP/HTTP, TLS, mutual TLS, a bearer token in
OTEL_EXPORTER_OTLP_HEADERS, gzip) and rotel, an independent collector (gRPC and HTTP in, gRPC
out to the receiver). Settings come from the OTEL_EXPORTER_OTLP_* variables, as a user sets
them. Also: a permanent refusal is not retried; a transient one is, until the peer is back."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from demo.processes import free_port, rotel_argv, rotel_binary
from otel_agent.config import AgentConfig
from otel_agent.cost.receiver import Receiver, Tls
from otel_agent.cost.store import Store, points_t
from otel_agent.otlp.encode import Encoded
from otel_agent.otlp.exporter import make_exporter
from tests.unit.cost.builders import S, T0, Res, container_attrs, request
from tests.unit.cost.ledger_helpers import pricing
from tests.unit.cost.scenario import NOW_NS
from tests.unit.cost.test_receiver_tls import pki  # noqa: F401 (the fixture: a CA, server and client certificates)

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")]


def _encoded(n: int = 3) -> Encoded:
    """Three requests' worth of resources, as the encoder hands them to the exporter."""
    chunks = []
    for i in range(n):
        body = request(Res(container_attrs(f"u{i}", "app", namespace="team-a")).sum(
            "container.cpu.time", [(T0, T0 + 60 * S, 10.0 + i)], unit="s")).SerializeToString()
        chunks.append(body)  # a request is a concatenation of resource_metrics fields
    return Encoded(chunks=chunks, points=n)


def _points(store: Store) -> int:
    with store.engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(points_t)).scalar_one()


@pytest.fixture
def serve(tmp_path):
    made = []

    def start(tls: Tls | None = None, token: str | None = None, port: int = 0):
        store = Store(f"sqlite:///{tmp_path}/l{len(made)}.db", pricing=pricing())
        r = Receiver(store, listen=f"127.0.0.1:{port}", http_listen="127.0.0.1:0",
                     now_ns=lambda: NOW_NS, auth_token=token, tls=tls).start()
        made.append((r, store))
        return r, store

    yield start
    for r, store in made:
        r.stop(0)
        store.close()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_mutual_tls_and_a_bearer_token_from_the_standard_variables(pki, serve, protocol, compression):  # noqa: F811
    tls = Tls(str(pki / "server.crt"), str(pki / "server.key"), str(pki / "ca.crt"))
    r, store = serve(tls, "s3cret")
    port = r.port if protocol == "grpc" else r.http_port
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"https://localhost:{port}",
           "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki / "ca.crt"),
           "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(pki / "client.crt"),
           "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(pki / "client.key"),
           "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "authorization=Bearer%20s3cret",
           "OTEL_EXPORTER_OTLP_COMPRESSION": compression, "OTEL_EXPORTER_OTLP_TIMEOUT": "10"}
    exp = make_exporter(AgentConfig(protocol=protocol), env)
    exp.max_request_bytes = 1  # one resource a request: splitting is exercised too
    try:
        assert exp.export(_encoded())
    finally:
        exp.shutdown()
    assert _points(store) == 3


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_wrong_token_is_a_permanent_failure_not_retried(pki, serve, protocol):  # noqa: F811
    r, store = serve(Tls(str(pki / "server.crt"), str(pki / "server.key")), "s3cret")
    port = r.port if protocol == "grpc" else r.http_port
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"https://localhost:{port}",
           "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki / "ca.crt"),
           "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer nope", "OTEL_EXPORTER_OTLP_TIMEOUT": "20"}
    exp = make_exporter(AgentConfig(protocol=protocol), env)
    t0 = time.monotonic()
    try:
        assert not exp.export(_encoded())
    finally:
        exp.shutdown()
    assert time.monotonic() - t0 < 5  # refused at once: no backoff for UNAUTHENTICATED / 401
    assert _points(store) == 0


def test_transient_failures_are_retried_until_the_peer_is_back(tmp_path, serve):
    grpc_port = free_port()
    store_box = {}

    def late_start():  # the receiver comes up ~1.5 s after the first attempt failed
        time.sleep(1.5)
        r, store = serve(port=grpc_port)
        store_box["r"], store_box["store"] = r, store

    threading.Thread(target=late_start, daemon=True).start()
    exp = make_exporter(AgentConfig(insecure=True),
                        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{grpc_port}",
                         "OTEL_EXPORTER_OTLP_TIMEOUT": "15"})
    try:
        assert exp.export(_encoded())
    finally:
        exp.shutdown()
    assert _points(store_box["store"]) == 3


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_through_rotel_to_the_receiver(tmp_path, serve, protocol):
    binary = rotel_binary()
    if binary is None:
        pytest.skip("rotel is not installed")
    r, store = serve()
    grpc_port, http_port = free_port(), free_port()
    log = open(tmp_path / "rotel.log", "ab")
    rotel = subprocess.Popen(rotel_argv(binary, grpc_port, r.port, http_port=http_port),
                             stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        port = grpc_port if protocol == "grpc" else http_port
        exp = make_exporter(AgentConfig(protocol=protocol, insecure=True),
                            {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                             "OTEL_EXPORTER_OTLP_TIMEOUT": "20"})
        try:
            assert exp.export(_encoded())  # retried while rotel starts listening
        finally:
            exp.shutdown()
        deadline = time.monotonic() + 30
        while _points(store) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _points(store) == 3, (tmp_path / "rotel.log").read_text()[-2000:]
    finally:
        rotel.terminate()
        rotel.wait(timeout=30)
