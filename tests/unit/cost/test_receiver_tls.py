"""TLS and mTLS on the cost processor's OTLP port, over real gRPC on loopback with
certificates made by openssl in the test: the deployment's gateway → cost-processor hop uses
TLS plus a bearer token (bearertokenauth refuses to send a token in the clear)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from otel_agent.cost.receiver import SERVICE, Receiver, Tls
from otel_agent.cost.store import Store, points_t
from tests.unit.cost.builders import S, T0, Res, container_attrs, request
from tests.unit.cost.ledger_helpers import pricing
from tests.unit.cost.scenario import NOW_NS

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
METHOD = f"/{SERVICE}/Export"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    for name, cn in (("server", "localhost"), ("client", "otel-gateway")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        ext = d / f"{name}.ext"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", ext.name, "-out", f"{name}.crt", cwd=d)
    return d


def _body() -> bytes:
    return request(Res(container_attrs("u1", "app", namespace="team-a")).sum(
        "container.cpu.time", [(T0, T0 + 60 * S, 10.0)], unit="s")).SerializeToString()


def _points(store: Store) -> int:
    with store.engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(points_t)).scalar_one()


def _serve(tmp_path: Path, tls: Tls, token: str | None):
    store = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())
    r = Receiver(store, listen="127.0.0.1:0", now_ns=lambda: NOW_NS, auth_token=token, tls=tls).start()
    return r, store


def _call(port: int, creds: grpc.ChannelCredentials, **kw):
    ch = grpc.secure_channel(f"localhost:{port}", creds)
    try:
        return ch.unary_unary(METHOD, request_serializer=None,
                              response_deserializer=ExportMetricsServiceResponse.FromString)(
            _body(), timeout=10, **kw)
    finally:
        ch.close()


def test_tls_with_bearer_token(pki: Path, tmp_path: Path):
    r, store = _serve(tmp_path, Tls(str(pki / "server.crt"), str(pki / "server.key")), "s3cret")
    try:
        creds = grpc.ssl_channel_credentials((pki / "ca.crt").read_bytes())
        with pytest.raises(grpc.RpcError) as e:  # TLS alone is not enough: the token is required
            _call(r.port, creds)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        _call(r.port, creds, metadata=(("authorization", "Bearer s3cret"),))
        assert _points(store) == 1
        with pytest.raises(grpc.RpcError):  # and plaintext is not spoken at all
            ch = grpc.insecure_channel(f"127.0.0.1:{r.port}")
            try:
                ch.unary_unary(METHOD, request_serializer=None)(_body(), timeout=5)
            finally:
                ch.close()
        assert _points(store) == 1
    finally:
        r.stop(0)
        store.close()


def test_mtls_refuses_a_client_without_a_certificate(pki: Path, tmp_path: Path):
    tls = Tls(str(pki / "server.crt"), str(pki / "server.key"), str(pki / "ca.crt"))
    r, store = _serve(tmp_path, tls, None)
    try:
        ca = (pki / "ca.crt").read_bytes()
        with pytest.raises(grpc.RpcError) as e:
            _call(r.port, grpc.ssl_channel_credentials(ca))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails
        assert _points(store) == 0
        client = grpc.ssl_channel_credentials(ca, (pki / "client.key").read_bytes(),
                                              (pki / "client.crt").read_bytes())
        _call(r.port, client)
        assert _points(store) == 1
    finally:
        r.stop(0)
        store.close()
