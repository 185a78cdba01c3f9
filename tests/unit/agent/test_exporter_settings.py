"""The exporter's settings from OTEL_EXPORTER_OTLP_*, as any OpenTelemetry component reads
them: the _METRICS_ variant first, then the generic one; every bad value a ConfigError naming
the variable (the CLI's one line and exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from otel_agent.config import AgentConfig
from otel_agent.errors import ConfigError
from otel_agent.otlp.exporter import settings

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("cfg, env, target, insecure", [
    (AgentConfig(), {}, "localhost:4317", True),
    (AgentConfig(endpoint="https://gw.example:4317"), {}, "gw.example:4317", False),
    (AgentConfig(endpoint="http://gw:4317", insecure=False), {}, "gw:4317", False),
    (AgentConfig(endpoint="gw:4317", insecure=True), {}, "gw:4317", True),
    (AgentConfig(endpoint="http://[::1]:4317"), {}, "[::1]:4317", True),
    (AgentConfig(), {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:4317"}, "m:4317", True),
    (AgentConfig(protocol="http/protobuf"), {}, "http://localhost:4318/v1/metrics", True),
    (AgentConfig(protocol="http/protobuf", endpoint="https://gw/otlp/"), {}, "https://gw/otlp/v1/metrics", False),
    (AgentConfig(protocol="http/protobuf"), {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:9/custom"},
     "http://m:9/custom", True),  # the signal's own URL is used as it is
])
def test_endpoints(cfg, env, target, insecure):
    s = settings(cfg, env)
    assert (s.target, s.insecure) == (target, insecure)


def test_headers_compression_timeout_and_the_metrics_variants_first(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(PEM)
    s = settings(AgentConfig(), {
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc, x-tenant = t1",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-only=metrics",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(ca)})
    assert s.headers == (("x-only", "metrics"),)
    assert (s.compression, s.timeout_seconds, s.certificate) == ("gzip", 2.5, PEM.encode())
    s = settings(AgentConfig(), {"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc, x-tenant = t1"})
    assert s.headers == (("authorization", "Bearer abc"), ("x-tenant", "t1"))


@pytest.mark.parametrize("env, fragment", [
    ({"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, "OTEL_EXPORTER_OTLP_HEADERS: 'novalue' is not key=value"),
    ({"OTEL_EXPORTER_OTLP_COMPRESSION": "brotli"}, "'brotli' must be gzip or none"),
    ({"OTEL_EXPORTER_OTLP_COMPRESSION": "deflate"}, "must be gzip or none"),
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": "1e303"}, "OTEL_EXPORTER_OTLP_TIMEOUT: '1e303' must be seconds between"),
    ({"OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"),
    ({"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"}, "cannot read /nonexistent/ca.pem"),
    ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://:4317"}, "has no host"),
])
def test_bad_values_name_the_variable(env, fragment):
    with pytest.raises(ConfigError) as e:
        settings(AgentConfig(), env)
    assert fragment in str(e.value)


def test_client_certificate_and_key_go_together(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text(PEM)
    with pytest.raises(ConfigError, match="go together"):
        settings(AgentConfig(), {"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(cert)})


def test_deflate_is_for_http_and_a_non_pem_file_is_refused(tmp_path):
    assert settings(AgentConfig(protocol="http/protobuf"),
                    {"OTEL_EXPORTER_OTLP_COMPRESSION": "deflate"}).compression == "deflate"
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match="is not a PEM file"):
        settings(AgentConfig(), {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(junk)})


def test_the_cli_says_it_in_one_line_and_exits_2_before_loading_anything():
    p = subprocess.run([sys.executable, "-m", "otel_agent", "run", "--bpf-profile", "off",
                        "--metadata", "cgroup", "--health-listen", "off"],
                       env={"PATH": "/usr/bin:/bin", "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "OTEL_EXPORTER_OTLP_COMPRESSION" in p.stderr
