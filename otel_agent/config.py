"""Agent configuration: defaults < file < environment < flags, validated before anything runs.

Users of any OpenTelemetry component expect the standard `OTEL_*` variables to work, so the
exporter settings are theirs (the SDK's exporter reads endpoint, headers, compression,
certificates and timeout itself); we validate the ones we interpret. Our own settings use the
`OTEL_AGENT_` prefix. A bad value raises ConfigError naming the setting, where it came from and
what is allowed; the CLI turns that into exit code 2 without a traceback.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from otel_agent import safe_yaml
from otel_agent.errors import ConfigError

BPF_PROFILES = ("off", "minimal", "standard", "comprehensive")
METADATA_KINDS = ("kubernetes", "static", "cgroup")
PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_CLUSTER_CIDRS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")


@dataclass(frozen=True)
class AgentConfig:
    interval_seconds: float = 10.0
    endpoint: str | None = None  # None: the exporter's own default / OTEL_EXPORTER_OTLP_ENDPOINT
    protocol: str = "grpc"
    insecure: bool | None = None
    node_name: str | None = None
    metadata: str | None = None  # None: chosen by what the environment offers
    static_metadata: Path | None = None
    pod_labels: tuple[str, ...] = ()
    cgroup_root: Path | None = None  # None: found from /proc/self/mountinfo
    kubepods: str | None = None  # kubelet's pod cgroups, relative to the cgroup root
    bpf_profile: str = "standard"
    bpf_map_entries: int = 10240
    bpf_task_entries: int = 65536
    pod_cidrs: tuple[str, ...] = ()
    cluster_cidrs: tuple[str, ...] = DEFAULT_CLUSTER_CIDRS
    health_listen: str | None = "0.0.0.0:8089"
    # report the cluster's persistent volume claims (k8s/volumes.py): off | on | auto (the
    # agent on the first Ready node by name, so one agent of a DaemonSet does it)
    cluster_objects: str = "off"
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    export_timeout_seconds: float | None = None  # None: OTEL_EXPORTER_OTLP_TIMEOUT or 10 s
    log_level: str = "INFO"


# Bounds on what a value can mean here. An interval under 0.1 s is shorter than a cycle on a
# busy node, over a day no export would ever come; 1e303 ms would overflow the loop's timer.
INTERVAL_SECONDS_RANGE = (0.1, 86_400.0)
EXPORT_TIMEOUT_SECONDS_RANGE = (0.001, 3_600.0)
# Map sizes the kernel could allocate on a node: a billion entries is a typo, not a node.
MAP_ENTRIES_MAX = 1 << 22


# setting name -> (environment variable, parser). The file uses the setting names.
def _seconds_in(lo: float, hi: float, *, scale: float = 1.0) -> Callable[[Any], float]:
    """A positive number of seconds (of milliseconds with scale=1000) between lo and hi s."""
    unit = "ms" if scale == 1000.0 else "s"

    def parse(v: Any) -> float:
        f = _positive_float(v) / scale
        if not lo <= f <= hi:
            raise ValueError(f"must be between {lo * scale:g} and {hi * scale:g} {unit}")
        return f

    return parse


def _positive_float(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("must be a number") from None
    if not f > 0 or f != f or f == float("inf"):
        raise ValueError("must be a positive number")
    return f


def _positive_int(v: Any, *, most: int | None = None) -> int:
    try:
        i = int(str(v), 10)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if i <= 0:
        raise ValueError("must be a positive whole number")
    if most is not None and i > most:
        raise ValueError(f"must be at most {most}")
    return i


def _entries(v: Any) -> int:
    return _positive_int(v, most=MAP_ENTRIES_MAX)


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    raise ValueError("must be true or false")


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        s = str(v).strip()
        if s not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return s

    return parse


def _list(v: Any) -> tuple[str, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(str(x).strip() for x in v if str(x).strip())
    return tuple(x.strip() for x in str(v).split(",") if x.strip())


def _cidrs(v: Any) -> tuple[str, ...]:
    out = []
    for c in _list(v):
        try:
            out.append(str(ipaddress.ip_network(c, strict=False)))
        except ValueError:
            raise ValueError(f"{c!r} is not a CIDR such as 10.244.0.0/16") from None
    return tuple(out)


def _listen(v: Any) -> str | None:
    if v is False:  # YAML 1.1 reads a bare `off` as false
        return None
    s = str(v).strip()
    if s.lower() in ("", "off", "none"):
        return None
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("must be HOST:PORT (e.g. 0.0.0.0:8089) or off")
    return s


def _path(v: Any) -> Path:
    s = str(v).strip()
    if not s:
        raise ValueError("must be a path")
    return Path(s)


def _resource_attributes(v: Any) -> dict[str, str]:
    if isinstance(v, Mapping):
        return {str(k): str(x) for k, x in v.items()}
    out = {}
    for part in str(v).split(","):
        if not part.strip():
            continue
        k, sep, x = part.partition("=")
        if not sep or not k.strip():
            raise ValueError(f"{part!r} is not key=value")
        out[k.strip()] = x.strip()
    return out


def _protocol(v: Any) -> str:
    s = str(v).strip()
    if s == "http/json":
        raise ValueError("http/json is not supported; use grpc or http/protobuf")
    return _choice(PROTOCOLS)(s)


def _text(v: Any) -> str:
    return str(v).strip()


_SETTINGS: dict[str, tuple[str | None, Callable[[Any], Any]]] = {
    "interval_seconds": ("OTEL_METRIC_EXPORT_INTERVAL", _seconds_in(*INTERVAL_SECONDS_RANGE)),
    "endpoint": ("OTEL_EXPORTER_OTLP_ENDPOINT", _text),
    "protocol": ("OTEL_EXPORTER_OTLP_PROTOCOL", _protocol),
    "insecure": ("OTEL_EXPORTER_OTLP_INSECURE", _bool),
    "node_name": ("NODE_NAME", _text),
    "metadata": ("OTEL_AGENT_METADATA", _choice(METADATA_KINDS)),
    "static_metadata": ("OTEL_AGENT_STATIC_METADATA", _path),
    "pod_labels": ("OTEL_AGENT_POD_LABELS", _list),
    "cgroup_root": ("OTEL_AGENT_CGROUP_ROOT", _path),
    "kubepods": ("OTEL_AGENT_KUBEPODS", _text),
    "bpf_profile": ("OTEL_AGENT_BPF_PROFILE", _choice(BPF_PROFILES)),
    "bpf_map_entries": ("OTEL_AGENT_BPF_MAP_ENTRIES", _entries),
    "bpf_task_entries": ("OTEL_AGENT_BPF_TASK_ENTRIES", _entries),
    "pod_cidrs": ("OTEL_AGENT_POD_CIDRS", _cidrs),
    "cluster_cidrs": ("OTEL_AGENT_CLUSTER_CIDRS", _cidrs),
    "health_listen": ("OTEL_AGENT_HEALTH_LISTEN", _listen),
    "cluster_objects": ("OTEL_AGENT_CLUSTER_OBJECTS", _choice(("off", "on", "auto"))),
    "resource_attributes": ("OTEL_RESOURCE_ATTRIBUTES", _resource_attributes),
    "export_timeout_seconds": (None, _seconds_in(*EXPORT_TIMEOUT_SECONDS_RANGE)),
    "log_level": ("OTEL_AGENT_LOG_LEVEL", _choice(("DEBUG", "INFO", "WARNING", "ERROR"))),
}
# Environment values whose unit differs from the setting's.
_ENV_PARSERS: dict[str, Callable[[Any], Any]] = {
    "interval_seconds": _seconds_in(*INTERVAL_SECONDS_RANGE, scale=1000.0)}

SETTINGS = tuple(_SETTINGS)


def env_var(setting: str) -> str | None:
    return _SETTINGS[setting][0]


def load(
    *,
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """Merge the layers and validate every value, naming its origin in any error."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}

    file = file or (Path(env["OTEL_AGENT_CONFIG"]) if env.get("OTEL_AGENT_CONFIG") else None)
    if file is not None:
        for key, raw in _read_file(file).items():
            if key not in _SETTINGS:
                raise ConfigError(
                    f"{file}: unknown setting {safe_yaml.one_line(repr(key))}; known settings: "
                    f"{', '.join(SETTINGS)}"
                )
            _check_shape(key, raw, f"{file}: {key}")
            values[key] = _parse(key, raw, f"{file}: {key}", _SETTINGS[key][1])

    for key, (var, parser) in _SETTINGS.items():
        if var and env.get(var, "").strip():
            values[key] = _parse(key, env[var], f"environment {var}", _ENV_PARSERS.get(key, parser))

    for key, raw in (flags or {}).items():
        if raw is None:
            continue
        if key not in _SETTINGS:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _parse(key, raw, f"--{key.replace('_', '-')}", _SETTINGS[key][1])

    cfg = replace(AgentConfig(), **values)
    if cfg.metadata == "static" and cfg.static_metadata is None:
        raise ConfigError(
            "metadata source 'static' needs a file: set --static-metadata or OTEL_AGENT_STATIC_METADATA"
        )
    return cfg


_LIST_SETTINGS = ("pod_labels", "pod_cidrs", "cluster_cidrs")
_SCALAR = (str, int, float, bool)


def _check_shape(key: str, raw: Any, origin: str) -> None:
    """A file value has the YAML shape of its setting: str() of a list or mapping must not
    become an endpoint or a label name, nor `true` an interval of 1 s."""
    def kind(v: Any) -> str:
        return "a mapping" if isinstance(v, Mapping) else "a list" if isinstance(v, list) else type(v).__name__
    if key in _LIST_SETTINGS:
        items = raw if isinstance(raw, list) else [raw]
        bad = [v for v in items if not isinstance(v, _SCALAR)]
        if bad:
            raise ConfigError(f"{origin}: list items must be strings, got {kind(bad[0])}")
    elif key == "resource_attributes":
        if isinstance(raw, Mapping):
            bad = [v for v in list(raw) + list(raw.values()) if not isinstance(v, _SCALAR)]
            if bad:
                raise ConfigError(f"{origin}: keys and values must be strings, got {kind(bad[0])}")
        elif not isinstance(raw, str):
            raise ConfigError(f"{origin}: must be a mapping or key=value,... text, got {kind(raw)}")
    elif raw is not None and not isinstance(raw, _SCALAR):
        raise ConfigError(f"{origin}: must be a single value, got {kind(raw)}")
    elif isinstance(raw, bool) and key in ("interval_seconds", "export_timeout_seconds", "bpf_map_entries",
                                                "bpf_task_entries"):
        raise ConfigError(f"{origin}: must be a number, got {raw}")


def _parse(key: str, raw: Any, origin: str, parser: Callable[[Any], Any]) -> Any:
    try:
        return parser(raw)
    except ValueError as e:
        raise ConfigError(f"{origin}: {safe_yaml.one_line(repr(raw))} {e}") from e


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read it ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {e.start}): {e.reason}") from e
    try:
        data = safe_yaml.load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]  # one line
        raise ConfigError(f"config file {path}{where}: not valid YAML ({problem})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def describe(cfg: AgentConfig) -> dict[str, Any]:
    """The effective configuration, for `doctor` and the start-up log line."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}
