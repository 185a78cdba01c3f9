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
