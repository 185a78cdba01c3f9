"""Structure of the Collector configs in collector-config/.

No Collector binary runs here (no registry serves one), so these checks stand in for
`otelcol validate` on the mistakes that otherwise surface only at start-up on a cluster: a
pipeline naming an undefined component, an authenticator or queue storage whose extension is not
started, a sending queue left in memory, a deprecated component alias, an env reference in a
syntax the Collector does not expand. `problems()` is checked against broken variants too, so a
checker that stopped finding anything would fail.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "collector-config"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
DEPLOY_COPY = ROOT / "deploy" / "base" / "collector"

KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")
SIGNALS = {"traces", "metrics", "logs", "profiles"}
# Exporters built on exporterhelper's sending_queue: the ones that can persist it in file_storage.
QUEUED_EXPORTER_TYPES = {"otlp_grpc", "otlp_http", "otlp", "otlphttp"}
# Old names kept as deprecated aliases (core v0.144.0, contrib v0.154.0): the target release
# logs a warning for each, and a later one removes them.
DEPRECATED_ALIASES = {
    ("exporters", "otlp"): "otlp_grpc",
    ("exporters", "otlphttp"): "otlp_http",
    ("exporters", "prometheusremotewrite"): "prometheus_remote_write",
}
STORAGE_EXTENSION_TYPES = {"file_storage"}


def type_of(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def _walk(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (i,))
    else:
        yield path, node


def problems(cfg: dict) -> list[str]:
    """Every structural mistake in one Collector config, as readable strings."""
    out: list[str] = []
    defined = {kind: set((cfg.get(kind) or {}).keys()) for kind in KINDS}
    service = cfg.get("service") or {}
    pipelines = service.get("pipelines") or {}
    service_ext = list(service.get("extensions") or [])

    if not pipelines:
        out.append("service.pipelines is empty")
    used = {kind: set() for kind in KINDS}
    for name, p in pipelines.items():
        signal = type_of(name)
        if signal not in SIGNALS:
            out.append(f"pipeline {name}: data type {signal!r} is not one of {sorted(SIGNALS)}")
        if not p.get("receivers"):
            out.append(f"pipeline {name}: no receivers")
        if not p.get("exporters"):
            out.append(f"pipeline {name}: no exporters")
        for key in ("receivers", "processors", "exporters"):
            for cid in p.get(key) or []:
                # A connector may stand where a receiver or exporter stands.
                if cid in defined[key]:
                    used[key].add(cid)
                elif key != "processors" and cid in defined["connectors"]:
                    used["connectors"].add(cid)
                else:
                    out.append(f"pipeline {name}: {key[:-1]} {cid} is not defined")
    for cid in service_ext:
        if cid not in defined["extensions"]:
            out.append(f"service.extensions: {cid} is not defined")
        used["extensions"].add(cid)

    for kind in KINDS:
        for cid in sorted(defined[kind] - used[kind]):
            out.append(f"{kind}.{cid} is defined but not used by any pipeline or service")

    # Extensions referenced from component settings must be started by the service.
    for kind in ("receivers", "exporters"):
        for cid, settings in (cfg.get(kind) or {}).items():
            for path, value in _walk(settings or {}):
                if path[-2:] == ("auth", "authenticator") or path[-1:] == ("storage",):
                    if value not in service_ext:
                        out.append(f"{kind}.{cid}.{'.'.join(map(str, path))}: extension "
                                   f"{value} is not in service.extensions")
                    if path[-1] == "storage" and type_of(str(value)) not in STORAGE_EXTENSION_TYPES:
                        out.append(f"{kind}.{cid}: queue storage {value} is not a file_storage")

    # Every exporter that has a sending queue keeps it on disk.
    for cid, settings in (cfg.get("exporters") or {}).items():
        settings = settings or {}
        t = type_of(cid)
        if t in QUEUED_EXPORTER_TYPES:
            q = settings.get("sending_queue") or {}
            if q.get("enabled") is False or not q.get("storage"):
                out.append(f"exporters.{cid}: sending_queue is not stored in file_storage")
        if t in ("prometheus_remote_write", "prometheusremotewrite"):
            if not (settings.get("wal") or {}).get("directory"):
                out.append(f"exporters.{cid}: no wal.directory: its queue is memory only")
            if "resource_to_telemetry_conversion" not in settings:
                out.append(f"exporters.{cid}: resource_to_telemetry_conversion not chosen")

    for kind in KINDS:
        for cid in defined[kind]:
            new = DEPRECATED_ALIASES.get((kind, type_of(cid)))
            if new:
                out.append(f"{kind}.{cid}: deprecated alias, use {new}")

    for path, value in _walk(cfg):
        if isinstance(value, str) and "$" in value:
            for ref in re.findall(r"\$\{?[^}\s]*\}?", value):
                if not re.fullmatch(r"\$\{env:[A-Z_][A-Z0-9_]*(:-[^}]*)?\}", ref):
                    out.append(f"{'.'.join(map(str, path))}: {ref!r} is not ${{env:NAME}} syntax")
    return out


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_there_are_configs_to_check():
    assert CONFIGS, f"no *.yaml in {CONFIG_DIR}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_structure(path):
    assert problems(load(path)) == []


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_deploy_copy_is_byte_identical(path):
    # kustomize only reads files under its own root, so deploy/ carries a copy; this keeps the
    # copy from drifting away from the source of truth.
    copy_path = DEPLOY_COPY / path.name
    assert copy_path.exists(), f"{copy_path} missing: cp {path} {copy_path}"
    assert copy_path.read_bytes() == path.read_bytes(), f"cp {path} {copy_path}"


def test_gateway_pipelines_and_destinations():
    cfg = load(CONFIG_DIR / "gateway.yaml")
    pipes = cfg["service"]["pipelines"]
    assert pipes["metrics"]["processors"][0] == "memory_limiter"
    assert pipes["metrics/cost"]["processors"][0] == "memory_limiter"
    assert set(pipes["metrics"]["exporters"]) == {"prometheus_remote_write", "otlp_http/vendor"}
    assert pipes["metrics/cost"]["exporters"] == ["otlp_grpc/cost"]
    cost = cfg["exporters"]["otlp_grpc/cost"]
    assert cost["endpoint"] == "otel-agent-cost:4317"
    # bearertokenauth refuses to send over gRPC without TLS: the exporter must not be insecure.
    assert cost["auth"]["authenticator"].startswith("bearertokenauth")
    assert not cost.get("tls", {}).get("insecure", False)
    assert cost["tls"]["ca_file"]
    prw = cfg["exporters"]["prometheus_remote_write"]
    assert prw["endpoint"] == "${env:MIMIR_ENDPOINT}"
    assert prw["resource_to_telemetry_conversion"]["enabled"] is True


def _mutations():
    base = load(CONFIG_DIR / "gateway.yaml")

    def mutate(fn):
        cfg = copy.deepcopy(base)
        fn(cfg)
        return cfg

    return [
        ("undefined exporter", mutate(lambda c: c["exporters"].pop("otlp_grpc/cost")), "is not defined"),
        ("unused processor", mutate(lambda c: c["processors"].__setitem__("batch/extra", {})), "not used"),
        ("storage ext not started", mutate(lambda c: c["service"]["extensions"].remove("file_storage/queue")),
         "not in service.extensions"),
        ("auth ext not started", mutate(lambda c: c["service"]["extensions"].remove("bearertokenauth/cost")),
         "not in service.extensions"),
        ("in-memory queue", mutate(lambda c: c["exporters"]["otlp_http/vendor"]["sending_queue"].pop("storage")),
         "not stored in file_storage"),
        ("no wal", mutate(lambda c: c["exporters"]["prometheus_remote_write"].pop("wal")), "wal.directory"),
        ("bad signal", mutate(lambda c: c["service"]["pipelines"].__setitem__(
            "metrix", c["service"]["pipelines"].pop("metrics"))), "data type"),
        ("deprecated alias", mutate(lambda c: (
            c["exporters"].__setitem__("otlp/cost", c["exporters"].pop("otlp_grpc/cost")),
            c["service"]["pipelines"]["metrics/cost"].__setitem__("exporters", ["otlp/cost"]))),
         "deprecated alias"),
        ("shell env syntax", mutate(lambda c: c["exporters"]["prometheus_remote_write"].__setitem__(
            "endpoint", "${MIMIR_ENDPOINT}")), "not ${env:NAME} syntax"),
    ]


@pytest.mark.parametrize("name,cfg,expected", _mutations(), ids=lambda v: v if isinstance(v, str) else "")
def test_checker_catches_broken_variants(name, cfg, expected):
    found = problems(cfg)
    assert any(expected in p for p in found), f"{name}: {found}"
