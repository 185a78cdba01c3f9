"""`cost serve --cost-otlp-endpoint`: the real cost processor process pushes money back out as
OTLP to a real gRPC receiver, so Mimir/Grafana users chart cost beside usage.

The expectation is computed from the scenario's own rates × time × the pricing file, never from
the ledger code: namespace team-a ran 1.5 cores for one hour (1.0 in container app, 0.5 at pod
level) and sent 1 GiB to the internet. A bad endpoint is a user error: one line, exit 2.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from otel_agent.cost.receiver import SERVICE
from tests.support.sink import OtlpSink
from tests.unit.cost import scenario
from tests.unit.cost.builders import S
from tests.unit.cost.ledger_helpers import PRICING_YAML

pytestmark = pytest.mark.e2e
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CPU_RATE, INTERNET_RATE = 0.031611, 0.12  # PRICING_YAML


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "otel_agent.cost.cli", "serve", *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_serve_pushes_month_to_date_cost_per_namespace(tmp_path):
    now = datetime.now(timezone.utc)
    month_start = datetime(now.year, now.month, 1, tzinfo=timezone.utc)
    now_s = int(now.timestamp())
    t0_s = now_s // 3600 * 3600 - 3600  # the last full hour: every point is in the past
    if t0_s < month_start.timestamp():
        pytest.skip("within the first hour of a month: the scenario hour falls in the last one")
    pricing = tmp_path / "pricing.yaml"
    pricing.write_text(PRICING_YAML)
    port = _port()
    with OtlpSink() as sink:
        proc = _serve("--listen", f"127.0.0.1:{port}", "--ledger", f"sqlite:///{tmp_path}/l.db",
                      "--pricing", str(pricing), "--refresh-seconds", "0.5",
                      "--cost-otlp-endpoint", sink.endpoint, "--cost-otlp-interval-seconds", "0.5")
        try:
            ch = grpc.insecure_channel(f"127.0.0.1:{port}")
            call = ch.unary_unary(f"/{SERVICE}/Export", request_serializer=None,
                                  response_deserializer=ExportMetricsServiceResponse.FromString)
            for batch in scenario.per_export(scenario.items(t0=t0_s * S, duration_s=3600)):
                call(scenario.pack(batch).SerializeToString(), timeout=10, wait_for_ready=True)
            ch.close()
            sent_at = time.time_ns()
            want_cpu = 1.5 * CPU_RATE
            want_net = 1.0 * INTERNET_RATE

            def latest(name: str, ns: str):
                pts = [p for p in sink.points() if p.name == name
                       and p.attributes.get("k8s.namespace.name") == ns and p.time_unix_nano > sent_at]
                return max(pts, key=lambda p: p.time_unix_nano) if pts else None

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                cpu = latest("otel_agent.cost.cpu", "team-a")
                if cpu is not None and cpu.value == pytest.approx(want_cpu, abs=2e-6):
                    break
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "pushing cost by namespace as OTLP" in err
    assert cpu is not None, f"no cost pushed for team-a; serve log:\n{err[-2000:]}"
    assert cpu.value == pytest.approx(want_cpu, abs=2e-6)  # micro-unit rounding per hour row
    net = latest("otel_agent.cost.network", "team-a")
    assert net is not None and net.value == pytest.approx(want_net, abs=2e-6)
    job = latest("otel_agent.cost.cpu", "batch")
    assert job is not None and job.value == pytest.approx(5.0 / 3600 * CPU_RATE, abs=2e-6)
    assert (cpu.unit, cpu.kind, cpu.temporality, cpu.monotonic) == ("{USD}", "sum", "cumulative", False)
    assert cpu.start_time_unix_nano == int(month_start.timestamp()) * S
    assert cpu.attributes["currency"] == "USD"
    assert cpu.resource["service.name"] == "otel-agent-cost"


@pytest.mark.parametrize("flags, needle", [
    (["--cost-otlp-endpoint", "no-port-here"], "--cost-otlp-endpoint"),
    (["--cost-otlp-endpoint", "127.0.0.1:4317", "--cost-otlp-interval-seconds", "0"],
     "--cost-otlp-interval-seconds"),
    (["--cost-otlp-endpoint", "127.0.0.1:4317", "--cost-otlp-by", "planet"], "--cost-otlp-by"),
])
def test_bad_cost_otlp_flags_are_one_line_user_errors(tmp_path, flags, needle):
    proc = _serve("--listen", "127.0.0.1:0", "--ledger", f"sqlite:///{tmp_path}/l.db", *flags)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "l.db").exists()  # rejected before anything was created
