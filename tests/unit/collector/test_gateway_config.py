"""Structure and keys of the Collector configs in collector-config/.

No Collector binary runs here (no registry serves one, and Go here is too old to build one), so
these checks stand in for `otelcol validate` on the mistakes that otherwise surface only at
start-up on a cluster: a pipeline naming an undefined component, an authenticator or queue
storage whose extension is not started, a sending queue left in memory, a deprecated component
alias or key, an env reference in a syntax the Collector does not expand, and any key nobody
checked. `VERIFIED` holds every component type and key the gateway uses, each with the source
file it was checked against; the config may use nothing else, and the table lists nothing the
config does not use. `problems()` is checked against broken variants too, so a checker that
stopped finding anything would fail.

The cost pipeline's filter must keep exactly what the ledger prices: the list is derived from
`otel_agent.cost.ingest.QUANTITIES` (itself derived from otel_agent/metrics.py), so renaming a
metric without updating the gateway fails here.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from otel_agent.cost.ingest import QUANTITIES
from otel_agent.metrics import METRICS

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "collector-config"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
DEPLOY_COPY = ROOT / "deploy" / "base" / "collector"

# The release the configs target; the image tag in deploy/ must match it.
CONTRIB_VERSION = "0.162.0"

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
# Keys deprecated in the target release, most of them errors under a feature gate.
PRW_TOP_LEVEL_HTTP_KEYS = (  # contrib config.go topLevelHTTPClientKeys: go under `http:`
    "endpoint", "proxy_url", "tls", "headers", "auth", "compression", "compression_params",
    "read_buffer_size", "write_buffer_size", "max_idle_conns", "max_idle_conns_per_host",
    "max_conns_per_host", "idle_conn_timeout", "disable_keep_alives", "http2_read_idle_timeout",
    "http2_ping_timeout", "cookies", "middlewares", "force_attempt_http2",
)
DEPRECATED_KEYS: dict[tuple[str, ...], str] = {
    **{("exporters", "prometheus_remote_write", k): f"http.{k} (contrib v0.158.0; an error under "
       "exporter.prometheusremotewritexporter.removeTopLevelHTTPSettings)"
       for k in PRW_TOP_LEVEL_HTTP_KEYS},
    ("exporters", "prometheus_remote_write", "resource_to_telemetry_conversion"):
        "resource_constant_labels (an error under "
        "exporter.prometheusremotewrite.DisableResourceToTelemetryConversion)",
    ("exporters", "prometheus_remote_write", "resource_constant_labels", "enabled"):
        "resource_constant_labels.included (rejected by Validate)",
    ("exporters", "prometheus_remote_write", "add_metric_suffixes"): "translation_strategy",
    **{("processors", "filter", k): "metric_conditions / log_conditions / trace_conditions"
       for k in ("metrics", "logs", "traces", "spans", "profiles")},
    ("service", "telemetry", "metrics", "address"): "service.telemetry.metrics.readers",
}
STORAGE_EXTENSION_TYPES = {"file_storage"}

# Where each component type and key was checked. Core: the Collector core repository at tag
# v0.159.0 (the newest core tag in the snapshot we could read; contrib v0.162.0 builds on core
# v0.162.0). Contrib: the newest stored source of each file in the search index (versions that
# carry the v0.158.0 `http:` block, the DisableResourceToTelemetryConversion gate and the
# filter processor's `metric_conditions`); the v0.162.0 tag itself could not be read.
CORE = "core v0.159.0 "
CONTRIB = "contrib (newest stored) "
_OTLPRCV = CORE + "receiver/otlpreceiver/config.go"
_GRPCSRV = CORE + "config/configgrpc/configgrpc.go ServerConfig"
_HTTPSRV = CORE + "config/confighttp/server.go ServerConfig"
_GRPCCLI = CORE + "config/configgrpc/configgrpc.go ClientConfig"
_HTTPCLI = CORE + "config/confighttp/client.go ClientConfig"
_TLS = CORE + "config/configtls/generated_config.go"
_AUTH = CORE + "config/configauth/generated_config.go"
_QUEUE = CORE + "exporter/exporterhelper/internal/queuebatch/config.go (+ configoptional `enabled`)"
_RETRY = CORE + "config/configretry/generated_config.go"
_PRW = CONTRIB + "exporter/prometheusremotewriteexporter/config.go"
_PRWWAL = CONTRIB + "exporter/prometheusremotewriteexporter/wal.go WALConfig"
_R2T = CONTRIB + "pkg/resourcetotelemetry Settings"
_BTA = CONTRIB + "extension/bearertokenauthextension/config.go"
_FS = CONTRIB + "extension/storage/filestorage/config.go"
_TEL = CORE + "service/telemetry/otelconftelemetry (otelconf v0.3.0 MeterProvider; " \
    "testdata v0.3.0_metrics_prom_explicit.yaml)"

VERIFIED_TYPES: dict[tuple[str, str], str] = {
    ("receivers", "otlp"): CORE + "receiver/otlpreceiver/internal/metadata/generated_status.go",
    ("processors", "memory_limiter"): CORE + "processor/memorylimiterprocessor/internal/metadata",
    ("processors", "batch"): CORE + "processor/batchprocessor/internal/metadata",
    ("processors", "filter"): CONTRIB + "processor/filterprocessor (factories register \"filter\")",
    ("exporters", "otlp_grpc"): CORE + "exporter/otlpexporter/metadata.yaml (deprecated_type: otlp)",
    ("exporters", "otlp_http"): CORE + "exporter/otlphttpexporter/internal/metadata/generated_status.go",
    ("exporters", "prometheus_remote_write"): CONTRIB + "docs use `prometheus_remote_write:` (rename "
                                              "of prometheusremotewrite, v0.154.0)",
    ("extensions", "health_check"): CONTRIB + "extension/healthcheckextension",
    ("extensions", "file_storage"): CONTRIB + "extension/storage/filestorage",
    ("extensions", "bearertokenauth"): CONTRIB + "extension/bearertokenauthextension (no rename)",
}

VERIFIED: dict[tuple[str, ...], str] = {
    # extensions
    ("extensions", "health_check", "endpoint"):
        CONTRIB + "extension/healthcheckextension Config squashes internal/healthcheck.Config "
        "(confighttp.ServerConfig endpoint)",
    ("extensions", "file_storage", "directory"): _FS,
    ("extensions", "file_storage", "create_directory"): _FS,
    ("extensions", "file_storage", "fsync"): _FS,
    ("extensions", "file_storage", "compaction", "directory"): _FS + " CompactionConfig",
    ("extensions", "file_storage", "compaction", "on_start"): _FS + " CompactionConfig",
    ("extensions", "file_storage", "compaction", "on_rebound"): _FS + " CompactionConfig",
    ("extensions", "bearertokenauth", "filename"): _BTA,
    ("extensions", "bearertokenauth", "header"): _BTA,
    ("extensions", "bearertokenauth", "scheme"): _BTA,
    # receivers
    ("receivers", "otlp", "protocols", "grpc", "endpoint"): _OTLPRCV + "; " + CORE + "config/confignet",
    ("receivers", "otlp", "protocols", "grpc", "max_recv_msg_size_mib"): _GRPCSRV,
    ("receivers", "otlp", "protocols", "grpc", "tls", "cert_file"): _GRPCSRV + " tls; " + _TLS,
    ("receivers", "otlp", "protocols", "grpc", "tls", "key_file"): _GRPCSRV + " tls; " + _TLS,
    ("receivers", "otlp", "protocols", "grpc", "auth", "authenticator"): _GRPCSRV + " auth; " + _AUTH,
    ("receivers", "otlp", "protocols", "http", "endpoint"): _OTLPRCV + " HTTPConfig; " + _HTTPSRV,
    ("receivers", "otlp", "protocols", "http", "tls", "cert_file"): _HTTPSRV + " tls; " + _TLS,
    ("receivers", "otlp", "protocols", "http", "tls", "key_file"): _HTTPSRV + " tls; " + _TLS,
    ("receivers", "otlp", "protocols", "http", "auth", "authenticator"):
        _HTTPSRV + " auth (AuthConfig squashes configauth.Config)",
    # processors
    ("processors", "memory_limiter", "check_interval"): CORE + "internal/memorylimiter/config.go",
    ("processors", "memory_limiter", "limit_percentage"): CORE + "internal/memorylimiter/config.go",
    ("processors", "memory_limiter", "spike_limit_percentage"): CORE + "internal/memorylimiter/config.go",
    ("processors", "batch", "send_batch_size"): CORE + "processor/batchprocessor/config.go",
    ("processors", "batch", "send_batch_max_size"): CORE + "processor/batchprocessor/config.go",
    ("processors", "batch", "timeout"): CORE + "processor/batchprocessor/config.go",
    ("processors", "filter", "error_mode"): CONTRIB + "processor/filterprocessor/config.go",
    ("processors", "filter", "metric_conditions", "[]"):
        CONTRIB + "processor/filterprocessor/config.go (flat string conditions, context inferred; "
        "a metric is dropped when any is true)",
    # exporters
    ("exporters", "prometheus_remote_write", "http", "endpoint"): _PRW + " HTTP; " + _HTTPCLI,
    ("exporters", "prometheus_remote_write", "http", "headers"):
        _PRW + " HTTP; " + _HTTPCLI + " (configopaque.MapList takes a map)",
    ("exporters", "prometheus_remote_write", "resource_constant_labels", "included", "[]"):
        _PRW + "; " + _R2T + " (\"*\" includes every resource attribute)",
    ("exporters", "prometheus_remote_write", "target_info", "enabled"): _PRW + " TargetInfo",
    ("exporters", "prometheus_remote_write", "remote_write_queue", "enabled"): _PRW + " RemoteWriteQueue",
    ("exporters", "prometheus_remote_write", "remote_write_queue", "queue_size"): _PRW + " RemoteWriteQueue",
    ("exporters", "prometheus_remote_write", "remote_write_queue", "num_consumers"):
        _PRW + " RemoteWriteQueue (factory.go: 1 unless the EnableMultipleWorkers gate)",
    ("exporters", "prometheus_remote_write", "wal", "directory"): _PRWWAL,
    ("exporters", "prometheus_remote_write", "wal", "buffer_size"): _PRWWAL,
    ("exporters", "prometheus_remote_write", "wal", "truncate_frequency"): _PRWWAL,
    **{("exporters", t, "retry_on_failure", k): src + " BackOffConfig; " + _RETRY
       for t, src in (("prometheus_remote_write", _PRW),
                      ("otlp_http", CORE + "exporter/otlphttpexporter/config.go"),
                      ("otlp_grpc", CORE + "exporter/otlpexporter/config.go"))
       for k in ("enabled", "initial_interval", "max_interval", "max_elapsed_time")},
    **{("exporters", t, "sending_queue", k): _QUEUE
       for t in ("otlp_http", "otlp_grpc")
       for k in ("enabled", "storage", "sizer", "queue_size", "num_consumers")},
    ("exporters", "otlp_http", "endpoint"): _HTTPCLI,
    ("exporters", "otlp_http", "compression"): _HTTPCLI,
    ("exporters", "otlp_http", "auth", "authenticator"): _HTTPCLI + " auth; " + _AUTH,
    ("exporters", "otlp_grpc", "endpoint"): _GRPCCLI,
    ("exporters", "otlp_grpc", "compression"): _GRPCCLI,
    ("exporters", "otlp_grpc", "tls", "ca_file"): _GRPCCLI + " tls; " + _TLS,
    ("exporters", "otlp_grpc", "auth", "authenticator"): _GRPCCLI + " auth; " + _AUTH,
    # service
    ("service", "extensions", "[]"): CORE + "service/config.go",
    ("service", "pipelines", "*", "receivers", "[]"): CORE + "service/pipelines/config.go",
    ("service", "pipelines", "*", "processors", "[]"): CORE + "service/pipelines/config.go",
    ("service", "pipelines", "*", "exporters", "[]"): CORE + "service/pipelines/config.go",
    ("service", "telemetry", "metrics", "level"): _TEL,
    ("service", "telemetry", "metrics", "readers", "[]", "pull", "exporter", "prometheus", "host"): _TEL,
    ("service", "telemetry", "metrics", "readers", "[]", "pull", "exporter", "prometheus", "port"): _TEL,
    **{("service", "telemetry", "metrics", "readers", "[]", "pull", "exporter", "prometheus", k):
       _TEL + " (factory.go default reader sets all three)"
       for k in ("without_scope_info", "without_units", "without_type_suffix")},
}
# Values that are maps with free keys (header names): the map itself is the leaf.
FREE_MAPS = {("exporters", "prometheus_remote_write", "http", "headers")}


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


def key_paths(cfg: dict) -> set[tuple[str, ...]]:
    """Every key the config sets, with component ids reduced to their type, pipeline names to
    `*` and list positions to `[]`: the shape VERIFIED is written in."""
    out: set[tuple[str, ...]] = set()

    def walk(node, path: tuple[str, ...]) -> None:
        if path in FREE_MAPS or not isinstance(node, (dict, list)):
            out.add(path)
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (str(k),))
        else:
            for v in node:
                walk(v, path + ("[]",))

    for kind in KINDS:
        for cid, settings in (cfg.get(kind) or {}).items():
            walk(settings or {}, (kind, type_of(cid)))
    service = cfg.get("service") or {}
    for k, v in service.items():
        if k == "pipelines":
            for p in (v or {}).values():
                walk(p, ("service", "pipelines", "*"))
        else:
            walk(v, ("service", k))
    return out


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
            if "resource_constant_labels" not in settings:
                out.append(f"exporters.{cid}: resource_constant_labels not chosen")

    for kind in KINDS:
        for cid in defined[kind]:
            new = DEPRECATED_ALIASES.get((kind, type_of(cid)))
            if new:
                out.append(f"{kind}.{cid}: deprecated alias, use {new}")

    paths = key_paths(cfg)
    for dep, instead in DEPRECATED_KEYS.items():
        if any(p[:len(dep)] == dep for p in paths):
            out.append(f"{'.'.join(dep)}: deprecated, use {instead}")
    for kind in KINDS:
        for cid in defined[kind]:
            if (kind, type_of(cid)) not in VERIFIED_TYPES and (kind, type_of(cid)) not in DEPRECATED_ALIASES:
                out.append(f"{kind}.{cid}: component type not in VERIFIED_TYPES")
    for p in sorted(paths):
        if p not in VERIFIED and not any(p[:len(d)] == d for d in DEPRECATED_KEYS):
            out.append(f"{'.'.join(p)}: key not in VERIFIED (check it against the source first)")

    for path, value in _walk(cfg):
        if isinstance(value, str) and "$" in value:
            for ref in re.findall(r"\$\{?[^}\s]*\}?", value):
                if not re.fullmatch(r"\$\{env:[A-Z_][A-Z0-9_]*(:-[^}]*)?\}", ref):
                    out.append(f"{'.'.join(map(str, path))}: {ref!r} is not ${{env:NAME}} syntax")
    return out


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def gateway() -> dict:
    return load(CONFIG_DIR / "gateway.yaml")


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


def test_verified_table_lists_exactly_the_keys_used(gateway):
    # A stale row would claim a check that no longer covers anything.
    assert set(VERIFIED) == key_paths(gateway)
    used_types = {(kind, type_of(cid)) for kind in KINDS for cid in gateway.get(kind) or {}}
    assert set(VERIFIED_TYPES) == used_types


def test_target_version_is_written_down_and_matches_the_image():
    text = (CONFIG_DIR / "gateway.yaml").read_text()
    assert f"otelcol-contrib v{CONTRIB_VERSION}" in text
    assert f"otelcol-contrib v{CONTRIB_VERSION}" in (CONFIG_DIR / "README.md").read_text()
    deploy = (ROOT / "deploy" / "base" / "gateway.yaml").read_text()
    assert f"otel/opentelemetry-collector-contrib:{CONTRIB_VERSION}" in deploy


def test_gateway_pipelines_and_destinations(gateway):
    pipes = gateway["service"]["pipelines"]
    assert pipes["metrics"]["processors"][0] == "memory_limiter"
    assert pipes["metrics/cost"]["processors"] == ["memory_limiter", "filter/priced", "batch"]
    assert set(pipes["metrics"]["exporters"]) == {"prometheus_remote_write", "otlp_http/vendor"}
    assert pipes["metrics/cost"]["exporters"] == ["otlp_grpc/cost"]
    cost = gateway["exporters"]["otlp_grpc/cost"]
    assert cost["endpoint"] == "otel-agent-cost:4317"
    # bearertokenauth refuses to send over gRPC without TLS: the exporter must not be insecure.
    assert cost["auth"]["authenticator"].startswith("bearertokenauth")
    assert not cost.get("tls", {}).get("insecure", False)
    assert cost["tls"]["ca_file"]
    # Billing data is never given up on (a permanent code still drops it: see the comment).
    assert cost["retry_on_failure"]["max_elapsed_time"] == 0
    prw = gateway["exporters"]["prometheus_remote_write"]
    assert prw["http"]["endpoint"] == "${env:MIMIR_ENDPOINT}"
    assert prw["resource_constant_labels"] == {"included": ["*"]}


def test_receiver_requires_the_agents_token_and_tls_on_both_protocols(gateway):
    protocols = gateway["receivers"]["otlp"]["protocols"]
    assert set(protocols) == {"grpc", "http"}
    auths = set()
    for name, p in protocols.items():
        auths.add(p["auth"]["authenticator"])
        assert p["tls"]["cert_file"] and p["tls"]["key_file"], name
    (auth,) = auths
    assert type_of(auth) == "bearertokenauth"
    ext = gateway["extensions"][auth]
    assert ext["filename"] and ext.get("scheme", "Bearer") == "Bearer"
    # The receiver's credential is not the one the gateway presents downstream.
    assert ext["filename"] != gateway["extensions"]["bearertokenauth/cost"]["filename"]


def test_self_metrics_are_exposed_beyond_localhost(gateway):
    (reader,) = gateway["service"]["telemetry"]["metrics"]["readers"]
    prom = reader["pull"]["exporter"]["prometheus"]
    assert prom["host"] == "0.0.0.0" and isinstance(prom["port"], int)


def test_cost_exporter_comment_says_what_each_code_does():
    # The gateway's fate for each answer of the cost processor is written where the exporter is.
    text = (CONFIG_DIR / "gateway.yaml").read_text()
    block = text[text.index("# The cost processor (`otel-agent cost serve`)"):text.index("otlp_grpc/cost:\n")]
    for code in ("UNAVAILABLE", "INTERNAL", "UNAUTHENTICATED", "INVALID_ARGUMENT",
                 "RESOURCE_EXHAUSTED", "partial_success", "PERMANENT"):
        assert code in block, code


# --- the cost pipeline keeps exactly what the ledger prices ----------------------------------

_TERM = re.compile(r'metric\.name != "([^"\\]+)"')


def kept_names(condition: str) -> set[str]:
    """The metric names a drop condition of the form `metric.name != "a" and metric.name != "b"
    and ...` keeps. Anything else in the condition is refused: this evaluator knows no other."""
    terms = [t.strip() for t in re.split(r"\s+and\s+", condition.strip())]
    names = []
    for t in terms:
        m = _TERM.fullmatch(t)
        assert m, f"unexpected term in the filter condition: {t!r}"
        names.append(m.group(1))
    assert len(names) == len(set(names)), "a name is listed twice"
    return set(names)


def priced_filter(cfg: dict) -> dict:
    (fid,) = [p for p in cfg["service"]["pipelines"]["metrics/cost"]["processors"]
              if type_of(p) == "filter"]
    return cfg["processors"][fid]


def test_cost_filter_keeps_exactly_what_the_ledger_prices(gateway):
    f = priced_filter(gateway)
    (condition,) = f["metric_conditions"]
    assert kept_names(condition) == set(QUANTITIES), (
        "the gateway's filter/priced and otel_agent.cost.ingest.QUANTITIES differ: "
        f"missing {sorted(set(QUANTITIES) - kept_names(condition))}, "
        f"extra {sorted(kept_names(condition) - set(QUANTITIES))}")
    # A failing condition must forward (the ledger ignores what it does not price), not drop.
    assert f["error_mode"] == "ignore"


def test_cost_filter_drops_every_other_metric_the_agent_sends(gateway):
    (condition,) = priced_filter(gateway)["metric_conditions"]
    keep = kept_names(condition)
    sent = {n for m in METRICS.values() for n in m.names.values()}
    former = {n for m in METRICS.values() for names in m.formerly.values() for n in names}
    # What it keeps beyond today's names are former names, for agents not yet upgraded, and
    # the DCGM exporter's utilisation, which reaches the same Collector from dcgm-exporter.
    from otel_agent.cost.ingest import DCGM_METRICS
    assert keep - sent <= former | set(DCGM_METRICS), \
        f"the filter keeps names no agent sends: {sorted(keep - sent - former - set(DCGM_METRICS))}"
    dropped = sent - keep
    assert dropped and len(keep & sent) < len(sent)


def test_only_the_cost_pipeline_is_filtered(gateway):
    for p in gateway["service"]["pipelines"]["metrics"]["processors"]:
        assert type_of(p) != "filter"


def test_filter_evaluator_refuses_other_syntax():
    with pytest.raises(AssertionError):
        kept_names('metric.name != "a" or metric.name != "b"')
    with pytest.raises(AssertionError):
        kept_names('not IsMatch(metric.name, "x")')
    assert kept_names('metric.name != "a" and\n metric.name != "b"') == {"a", "b"}


# --- the checker finds what it should ------------------------------------------------------------

def _mutations():
    base = load(CONFIG_DIR / "gateway.yaml")

    def mutate(fn):
        cfg = copy.deepcopy(base)
        fn(cfg)
        return cfg

    prw = lambda c: c["exporters"]["prometheus_remote_write"]  # noqa: E731
    return [
        ("undefined exporter", mutate(lambda c: c["exporters"].pop("otlp_grpc/cost")), "is not defined"),
        ("unused processor", mutate(lambda c: c["processors"].__setitem__("batch/extra", {})), "not used"),
        ("storage ext not started", mutate(lambda c: c["service"]["extensions"].remove("file_storage/queue")),
         "not in service.extensions"),
        ("auth ext not started", mutate(lambda c: c["service"]["extensions"].remove("bearertokenauth/cost")),
         "not in service.extensions"),
        ("receiver auth ext not started",
         mutate(lambda c: c["service"]["extensions"].remove("bearertokenauth/agents")),
         "not in service.extensions"),
        ("in-memory queue", mutate(lambda c: c["exporters"]["otlp_http/vendor"]["sending_queue"].pop("storage")),
         "not stored in file_storage"),
        ("no wal", mutate(lambda c: prw(c).pop("wal")), "wal.directory"),
        ("bad signal", mutate(lambda c: c["service"]["pipelines"].__setitem__(
            "metrix", c["service"]["pipelines"].pop("metrics"))), "data type"),
        ("deprecated alias", mutate(lambda c: (
            c["exporters"].__setitem__("otlp/cost", c["exporters"].pop("otlp_grpc/cost")),
            c["service"]["pipelines"]["metrics/cost"].__setitem__("exporters", ["otlp/cost"]))),
         "deprecated alias"),
        ("shell env syntax", mutate(lambda c: prw(c)["http"].__setitem__("endpoint", "${MIMIR_ENDPOINT}")),
         "not ${env:NAME} syntax"),
        ("top-level endpoint", mutate(lambda c: prw(c).__setitem__("endpoint", prw(c)["http"].pop("endpoint"))),
         "prometheus_remote_write.endpoint: deprecated"),
        ("top-level headers", mutate(lambda c: prw(c).__setitem__("headers", prw(c)["http"].pop("headers"))),
         "prometheus_remote_write.headers: deprecated"),
        ("resource_to_telemetry_conversion", mutate(lambda c: (
            prw(c).pop("resource_constant_labels"),
            prw(c).__setitem__("resource_to_telemetry_conversion", {"enabled": True}))),
         "resource_to_telemetry_conversion: deprecated"),
        ("old filter syntax", mutate(lambda c: c["processors"]["filter/priced"].__setitem__(
            "metrics", {"include": {"match_type": "strict", "metric_names": ["a"]}})),
         "filter.metrics: deprecated"),
        ("old telemetry address", mutate(lambda c: c["service"]["telemetry"]["metrics"].__setitem__(
            "address", "0.0.0.0:8888")), "telemetry.metrics.address: deprecated"),
        ("unverified key", mutate(lambda c: c["processors"]["batch"].__setitem__("send_batch_sise", 1)),
         "key not in VERIFIED"),
        ("unverified component", mutate(lambda c: (
            c["processors"].__setitem__("transform", {}),
            c["service"]["pipelines"]["metrics"]["processors"].append("transform"))),
         "component type not in VERIFIED_TYPES"),
    ]


@pytest.mark.parametrize("name,cfg,expected", _mutations(), ids=lambda v: v if isinstance(v, str) else "")
def test_checker_catches_broken_variants(name, cfg, expected):
    found = problems(cfg)
    assert any(expected in p for p in found), f"{name}: {found}"


def test_filter_check_catches_a_renamed_metric(gateway):
    cfg = copy.deepcopy(gateway)
    f = priced_filter(cfg)
    f["metric_conditions"] = [f["metric_conditions"][0].replace('"k8s.pod.cpu.time"', '"k8s.pod.cpu.usage"')]
    assert kept_names(f["metric_conditions"][0]) != set(QUANTITIES)
