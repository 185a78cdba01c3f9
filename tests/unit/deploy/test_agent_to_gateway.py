"""The agent, configured exactly as the rendered DaemonSet configures it, reaches a gateway that
checks TLS and the bearer token, with the files deploy/gen-secrets.sh wrote.

No Collector runs here (and rotel, the collector the e2e tier uses, has no authenticator on its
OTLP receiver), so the gateway side is a real gRPC MetricsService over TLS on loopback whose
check is the Collector's bearertokenauth server check, line for line in behaviour: read the token
file, split it into lines, trim each, prefix the scheme, and accept a request whose
`authorization` metadata equals one of them (contrib extension/bearertokenauthextension,
bearertokenauth.go Authenticate); anything else is UNAUTHENTICATED. The agent side is the real
thing: the DaemonSet's env list, with Secret references resolved from the rendered Secrets and
$(VAR) references expanded the way the kubelet expands them, fed to otel_agent.config.load and
the exporter make_exporter builds. Only the gateway's host and port are swapped for the
loopback server (the test certificate also names `localhost`, see conftest).
"""

from __future__ import annotations

import base64
import hmac
import re
import subprocess
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as ms_grpc
from opentelemetry.proto.metrics.v1 import metrics_pb2

from otel_agent.config import load
from otel_agent.otlp.encode import Encoded
from otel_agent.otlp.exporter import make_exporter
from tests.unit.deploy.conftest import find

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(value: str, defined: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of an env value: a variable defined earlier in the list is
    substituted, an unknown reference is left as written, `$$` is a literal `$`."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return defined.get(m.group(1), m.group(0))
    return _VAR.sub(sub, value)


def test_expansion_follows_kubernetes_rules():
    assert expand("a=$(X)", {"X": "1"}) == "a=1"
    assert expand("a=$(Y)", {"X": "1"}) == "a=$(Y)"
    assert expand("a=$$(X)", {"X": "1"}) == "a=$(X)"


def container_env(objs: list[dict]) -> list[dict]:
    ds = find(objs, "DaemonSet", "otel-agent")
    return ds["spec"]["template"]["spec"]["containers"][0]["env"]


def resolve_env(objs: list[dict], mounts: dict[str, Path]) -> dict[str, str]:
    """The agent container's environment as the kubelet would build it (Secrets from the rendered
    objects; fieldRefs get a fixed node name; paths under a mounted volume are moved to `mounts`)."""
    out: dict[str, str] = {}
    for e in container_env(objs):
        if "value" in e:
            v = expand(e["value"], out)
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            sec = find(objs, "Secret", ref["name"])
            assert sec["metadata"]["name"] == ref["name"]
            v = base64.b64decode(sec["data"][ref["key"]]).decode()
        else:
            v = "node-1"
        for mount, local in mounts.items():
            if v.startswith(mount + "/"):
                v = str(local) + v[len(mount):]
        out[e["name"]] = v
    return out


def mount_agent_secrets(objs: list[dict], root: Path) -> dict[str, Path]:
    """Writes each Secret volume of the agent pod (only its listed items) under `root`."""
    spec = find(objs, "DaemonSet", "otel-agent")["spec"]["template"]["spec"]
    vols = {v["name"]: v["secret"] for v in spec["volumes"] if "secret" in v}
    out = {}
    for m in spec["containers"][0]["volumeMounts"]:
        if m["name"] not in vols:
            continue
        src = vols[m["name"]]
        data = find(objs, "Secret", src["secretName"])["data"]
        local = root / m["name"]
        local.mkdir()
        for item in src.get("items") or [{"key": k, "path": k} for k in data]:
            (local / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
        out[m["mountPath"]] = local
    return out


class BearerTokenGateway:
    """OTLP/gRPC metrics over TLS that authenticates like the Collector's bearertokenauth."""

    def __init__(self, cert: Path, key: Path, token_file: Path, scheme: str = "Bearer") -> None:
        self.token_file, self.scheme = token_file, scheme
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()
        gw = self

        class Servicer(ms_grpc.MetricsServiceServicer):
            def Export(self, request, context):  # noqa: N802 (gRPC's name)
                md = dict(context.invocation_metadata())
                got = md.get("authorization")
                with gw._lock:
                    if got is None or not gw._matches(got):
                        gw.refused.append(got or "")
                        context.abort(grpc.StatusCode.UNAUTHENTICATED, "authentication didn't succeed")
                    gw.accepted.append(got)
                return ms_pb2.ExportMetricsServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        ms_grpc.add_MetricsServiceServicer_to_server(Servicer(), self._server)
        creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
        self.port = self._server.add_secure_port("127.0.0.1:0", creds)
        self._server.start()

    def _matches(self, got: str) -> bool:
        tokens = [t.strip() for t in self.token_file.read_text().split("\n")]
        expected = [f"{self.scheme} {t}" if self.scheme else t for t in tokens]
        return any(hmac.compare_digest(e.encode(), got.encode()) for e in expected)

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)


def one_export() -> Encoded:
    # One resource with one cumulative counter point, as the agent's encoder hands it over: the
    # request's repeated ResourceMetrics field, serialised.
    req = ms_pb2.ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add(name="test.counter", unit="1")
    m.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    m.sum.is_monotonic = True
    m.sum.data_points.add(start_time_unix_nano=1, time_unix_nano=2, as_double=1.0)
    return Encoded(chunks=[req.SerializeToString()], points=1)


@pytest.fixture()
def gateway(deploy_copy, tmp_path):
    secrets = deploy_copy / "base" / "secrets"
    token_file = tmp_path / "gateway-token"
    token_file.write_bytes((secrets / "gateway-token").read_bytes())
    gw = BearerTokenGateway(secrets / "gateway-tls.crt", secrets / "gateway-tls.key", token_file)
    yield gw
    gw.stop()


def agent_exporter(rendered, tmp_path, port: int):
    objs = rendered["default"]
    env = resolve_env(objs, mount_agent_secrets(objs, tmp_path))
    assert "$(" not in env["OTEL_EXPORTER_OTLP_HEADERS"]
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = re.sub(
        r"^https://[^/:]+:\d+", f"https://localhost:{port}", env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    env["OTEL_EXPORTER_OTLP_TIMEOUT"] = "5"
    return env, load(env=env)


def test_agent_presents_the_token_from_the_secret_over_tls(rendered, deploy_copy, gateway, tmp_path):
    env, cfg = agent_exporter(rendered, tmp_path, gateway.port)
    exporter = make_exporter(cfg, env)
    try:
        assert exporter.export(one_export())
    finally:
        exporter.shutdown()
    token = (deploy_copy / "base" / "secrets" / "gateway-token").read_text()
    assert gateway.accepted == [f"Bearer {token}"]
    assert gateway.refused == []


def test_a_rotated_token_is_refused_until_the_agent_has_it(rendered, gateway, tmp_path):
    # The gateway now accepts only a new token; the agent still has the old Secret: refused
    # (UNAUTHENTICATED is not retried, so the export fails at once).
    gateway.token_file.write_text("0" * 64)
    env, cfg = agent_exporter(rendered, tmp_path, gateway.port)
    exporter = make_exporter(cfg, env)
    try:
        assert not exporter.export(one_export())
    finally:
        exporter.shutdown()
    assert gateway.accepted == [] and len(gateway.refused) == 1
    # During a rotation the file holds both tokens, one a line: the old one is accepted again.
    old = env["OTEL_AGENT_GATEWAY_TOKEN"]
    gateway.token_file.write_text("0" * 64 + "\n" + old)
    exporter = make_exporter(cfg, env)
    try:
        assert exporter.export(one_export())
    finally:
        exporter.shutdown()
    assert gateway.accepted == [f"Bearer {old}"]


def test_agent_refuses_a_gateway_its_ca_did_not_sign(rendered, tmp_path):
    # A gateway with a certificate from another PKI (an impostor) gets nothing, not even the token.
    d = tmp_path / "other"
    d.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(d / "k"), "-out", str(d / "c")], check=True, capture_output=True)
    token_file = d / "t"
    token_file.write_text(base64.b64decode(
        find(rendered["default"], "Secret", "otel-agent-gateway-auth")["data"]["token"]).decode())
    impostor = BearerTokenGateway(d / "c", d / "k", token_file)
    try:
        (tmp_path / "m").mkdir()
        env, cfg = agent_exporter(rendered, tmp_path / "m", impostor.port)
        exporter = make_exporter(cfg, env)
        try:
            assert not exporter.export(one_export())
        finally:
            exporter.shutdown()
        assert impostor.accepted == [] and impostor.refused == []
    finally:
        impostor.stop()
