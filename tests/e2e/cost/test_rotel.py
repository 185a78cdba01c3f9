"""A real, independent collector in the path: the OpenTelemetry SDK's OTLPMetricExporter
→ rotel (a Rust OpenTelemetry collector, from the `rotel` wheel) over OTLP/gRPC → the cost
processor over OTLP/gRPC. The ledger must equal the usage computed from the scenario's rates."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (AggregationTemporality, Gauge, Metric, MetricExportResult,
                                              MetricsData, NumberDataPoint, ResourceMetrics,
                                              ScopeMetrics, Sum)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_agent.cost.pricing import parse_pricing
from otel_agent.cost.receiver import Receiver
from otel_agent.cost.store import Store
from tests.unit.cost import scenario
from tests.unit.cost.builders import S
from tests.unit.cost.ledger_helpers import PRICING_YAML, totals, unbalanced

pytestmark = pytest.mark.e2e


def _rotel() -> Path | None:
    try:
        import rotel
    except ImportError:
        return None
    p = Path(rotel.__file__).parent / "rotel-agent"
    return p if p.is_file() else None


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics_data(batch: list[scenario.Item]) -> MetricsData:
    """Scenario items → the SDK's MetricsData, one resource per attribute set."""
    by_res: dict[tuple, list[Metric]] = {}
    for it in batch:
        dp = NumberDataPoint(attributes=dict(it.dp_attrs), start_time_unix_nano=it.start,
                             time_unix_nano=it.time, value=it.value)
        if it.kind in ("sum", "updown"):
            data = Sum(data_points=[dp], aggregation_temporality=AggregationTemporality.CUMULATIVE,
                       is_monotonic=it.kind == "sum")
        else:
            data = Gauge(data_points=[dp])
        by_res.setdefault(it.attrs, []).append(Metric(name=it.name, description="", unit=it.unit, data=data))
    scope = InstrumentationScope("otel_agent")
    return MetricsData(resource_metrics=[
        ResourceMetrics(resource=Resource(dict(attrs)), scope_metrics=[ScopeMetrics(scope, ms, "")],
                        schema_url="")
        for attrs, ms in by_res.items()])


def test_sdk_exporter_through_rotel_to_the_ledger(tmp_path):
    agent = _rotel()
    if agent is None:
        pytest.skip("the rotel wheel (with its rotel-agent binary) is not installed")
    store = Store(f"sqlite:///{tmp_path}/ledger.db", pricing=parse_pricing(PRICING_YAML, "p.yaml"))
    receiver = Receiver(store, listen="127.0.0.1:0").start()
    rotel_port, rotel_http = _port(), _port()
    log = open(tmp_path / "rotel.log", "wb")
    proc = subprocess.Popen(
        [str(agent), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{rotel_port}",
         "--otlp-http-endpoint", f"127.0.0.1:{rotel_http}",
         "--exporter", "otlp", "--otlp-exporter-endpoint", f"http://127.0.0.1:{receiver.port}",
         "--otlp-exporter-protocol", "grpc", "--batch-timeout", "100ms"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "ROTEL_LOG_LEVEL": "info"})
    try:
        now_s = int(time.time())
        t0 = (now_s - 4 * 3600) // 3600 * 3600 * S
        items = scenario.items(t0=t0, duration_s=3 * 3600, step_s=60)
        batches = scenario.per_export(items)
        exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{rotel_port}", insecure=True, timeout=10)
        deadline = time.time() + 30
        for b in batches:
            while exporter.export(_metrics_data(b)) != MetricExportResult.SUCCESS:
                assert time.time() < deadline, "rotel did not accept the export"
                time.sleep(0.2)
        exporter.shutdown()
        expected_points = len(items)
        deadline = time.time() + 60
        import sqlalchemy as sa
        from otel_agent.cost.store import points_t
        while True:
            with store.engine.connect() as c:
                n = c.execute(sa.select(sa.func.count()).select_from(points_t)).scalar_one()
            if n >= expected_points or time.time() > deadline:
                break
            time.sleep(0.2)
        assert n == expected_points, (tmp_path / "rotel.log").read_text()[-2000:]
        t = totals(store)
        exp = scenario.EXPECTED_CORE_HOURS
        assert t[("container", "p1", "app", "cpu")] == pytest.approx(exp["app"])
        assert t[("pod", "p1", "", "cpu")] == pytest.approx(exp["p1-pod-level"])
        assert t[("container", "p2", "cid-p2-main", "cpu")] == pytest.approx(exp["p2"])
        assert t[("container", "p3", "job", "cpu")] == pytest.approx(exp["job"])
        assert t[("unallocated", "", "", "cpu")] == pytest.approx(exp["unallocated"])
        assert t[("container", "p1", "app", "network:internet")] == pytest.approx(scenario.EXPECTED_NET_BYTES)
        assert unbalanced(store) == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        receiver.stop(0)
        store.close()
