"""Configuration: every layer, and every bad value named with its origin (exit code 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from otel_agent.config import AgentConfig, load
from otel_agent.errors import ConfigError


def test_defaults_without_anything():
    assert load(env={}) == AgentConfig()


def test_standard_otel_variables_are_honoured():
    cfg = load(env={
        "OTEL_METRIC_EXPORT_INTERVAL": "2500",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://gw:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.cluster.name=prod-eu, deployment.environment=prod",
        "NODE_NAME": "node-7",
    })
    assert cfg.interval_seconds == 2.5
    assert cfg.endpoint == "http://gw:4317"
    assert cfg.protocol == "http/protobuf"
    assert cfg.insecure is True
    assert cfg.resource_attributes == {"k8s.cluster.name": "prod-eu",
                                       "deployment.environment": "prod"}
    assert cfg.node_name == "node-7"


def test_layers_file_then_env_then_flags(tmp_path: Path):
    f = tmp_path / "agent.yaml"
    f.write_text("bpf_profile: minimal\ninterval_seconds: 30\npod_labels: [team, app]\n")
    cfg = load(file=f, env={"OTEL_METRIC_EXPORT_INTERVAL": "15000"}, flags={"bpf_profile": "off"})
    assert cfg.bpf_profile == "off"  # flag beats file
    assert cfg.interval_seconds == 15.0  # env beats file
    assert cfg.pod_labels == ("team", "app")  # file beats default


def test_task_table_size_from_env_or_file(tmp_path: Path):
    assert load(env={"OTEL_AGENT_BPF_TASK_ENTRIES": "65536"}).bpf_task_entries == 65536
    f = tmp_path / "agent.yaml"
    f.write_text("bpf_task_entries: true\n")
    with pytest.raises(ConfigError, match="bpf_task_entries"):
        load(file=f, env={})


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"OTEL_METRIC_EXPORT_INTERVAL": "soon"}, "environment OTEL_METRIC_EXPORT_INTERVAL: 'soon' must be a number"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "-5"}, "must be a positive number"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "1e303"}, "must be between 100 and 8.64e+07 ms"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "1e400"}, "must be a positive number"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "0.5"}, "must be between 100 and"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "nan"}, "must be a positive number"),
        ({"OTEL_AGENT_BPF_MAP_ENTRIES": "1" + "0" * 12}, "must be at most 4194304"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "http/json is not supported"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "udp"}, "must be one of grpc, http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_INSECURE": "maybe"}, "must be true or false"),
        ({"OTEL_AGENT_BPF_PROFILE": "max"}, "must be one of off, minimal, standard, comprehensive"),
        ({"OTEL_AGENT_POD_CIDRS": "10.244.0.0/16,banana"}, "'banana' is not a CIDR"),
        ({"OTEL_AGENT_HEALTH_LISTEN": "8089"}, "must be HOST:PORT"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "k8s.cluster.name"}, "is not key=value"),
        ({"OTEL_AGENT_METADATA": "static"}, "needs a file"),
        ({"OTEL_AGENT_BPF_MAP_ENTRIES": "1.5"}, "must be a whole number"),
        ({"OTEL_AGENT_BPF_TASK_ENTRIES": "0"}, "OTEL_AGENT_BPF_TASK_ENTRIES"),
    ],
)
def test_bad_values_name_the_setting(env, fragment):
    with pytest.raises(ConfigError) as e:
        load(env=env)
    assert fragment in str(e.value)


def test_bad_file_names_file_and_key(tmp_path: Path):
    f = tmp_path / "agent.yaml"
    f.write_text("bpf_profil: standard\n")
    with pytest.raises(ConfigError, match=r"agent.yaml: unknown setting 'bpf_profil'"):
        load(file=f, env={})
    f.write_text("interval_seconds: [1\n")
    with pytest.raises(ConfigError, match=r"agent.yaml line \d+: not valid YAML"):
        load(file=f, env={})
    with pytest.raises(ConfigError, match="cannot read it"):
        load(file=tmp_path / "missing.yaml", env={})


def test_cli_reports_bad_setting_without_traceback():
    p = subprocess.run(
        [sys.executable, "-m", "otel_agent", "once", "--bpf-profile", "off"],
        env={"OTEL_METRIC_EXPORT_INTERVAL": "often", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 2
    assert "OTEL_METRIC_EXPORT_INTERVAL" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("raw, fragment", [
    ("interval_seconds: 1e303\n", "interval_seconds: '1e303' must be between 0.1 and 86400 s"),
    ("interval_seconds: 1" + "0" * 400 + "\n", "must be a number"),
    ("export_timeout_seconds: 1e9\n", "must be between 0.001 and 3600 s"),
    ("bpf_task_entries: 99999999999\n", "must be at most 4194304"),
])
def test_absurd_file_values_are_refused(tmp_path: Path, raw, fragment):
    f = tmp_path / "agent.yaml"
    f.write_text(raw)
    with pytest.raises(ConfigError) as e:
        load(file=f, env={})
    assert fragment in str(e.value)


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otel_agent", *args],
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                          timeout=60)


def test_absurd_interval_exits_2_with_one_line():
    p = _run("run", "--bpf-profile", "off", "--health-listen", "off",
             env={"OTEL_METRIC_EXPORT_INTERVAL": "1e303"})
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "OTEL_METRIC_EXPORT_INTERVAL" in p.stderr, p.stderr


@pytest.mark.parametrize("listen", ["busy", "no-such-host.invalid:8089", "127.0.0.1:99999"])
def test_bad_or_busy_health_listen_exits_2_with_one_line(listen):
    """Two agents side by side: the second one's port is taken. One line naming the setting,
    exit 2, before anything is loaded (no traceback, no eBPF compile)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        if listen == "busy":
            listen = f"127.0.0.1:{s.getsockname()[1]}"
        p = _run("run", "--bpf-profile", "off", "--metadata", "cgroup",
                 "--health-listen", listen, env={"OTEL_METRIC_EXPORT_INTERVAL": "1000"})
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1, p.stderr
    assert "health_listen" in p.stderr.replace("-", "_") and "Traceback" not in p.stderr
