"""Cost as OTLP: the pure build checked field by field, then the real SDK exporter pushing to a
real gRPC MetricsService on loopback, decoded from the wire."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.sdk.metrics.export import AggregationTemporality

from otel_agent.cost.otlp_out import (COST_METRICS, CostPusher, billing_month_start,
                                      build_metrics_data)
from otel_agent.cost.report import accumulate_sets
from otel_agent.cost.types import IDLE, Allocation, Window

from tests.unit.cost import test_report_data as D

NOW = datetime(2026, 11, 24, 3, 0, 30, tzinfo=timezone.utc)
START = billing_month_start(NOW)


def _merged() -> list[Allocation]:
    return accumulate_sets(D.sets())[0]


def test_build_metrics_data_points_and_attributes():
    data = build_metrics_data(_merged(), aggregate="namespace", start=START, now=NOW,
                              resource={"k8s.cluster.name": "demo"})
    [rm] = data.resource_metrics
    assert rm.resource.attributes["k8s.cluster.name"] == "demo"
    metrics = {m.name: m for m in rm.scope_metrics[0].metrics}
    total = metrics["otel_agent.cost.total"]
    assert total.unit == "{USD}"
    assert total.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    assert total.data.is_monotonic is False
    by = {p.attributes["k8s.namespace.name"]: p for p in total.data.data_points}
    assert set(by) == set(D.RAW)
    for name in D.RAW:
        assert by[name].value == pytest.approx(D.expected_cost(name))
        assert by[name].attributes["currency"] == "USD"
        assert by[name].start_time_unix_nano == int(START.timestamp()) * 10**9
        assert by[name].time_unix_nano == int(NOW.timestamp()) * 10**9
    # zero components are not emitted: nobody had GPU or storage cost
    assert "otel_agent.cost.gpu" not in metrics and "otel_agent.cost.storage" not in metrics
    net = {p.attributes["k8s.namespace.name"]: p.value
           for p in metrics["otel_agent.cost.network"].data.data_points}
    assert net == pytest.approx({"shop": 6.0 * D.NET_RATE, "search": 0.5 * D.NET_RATE})


def test_label_aggregate_uses_pod_label_attribute():
    a = Allocation(name="payments", window=D.WINDOW, currency="EUR", cpu_cost=1.0)
    data = build_metrics_data([a], aggregate="label:team", start=START, now=NOW)
    m = data.resource_metrics[0].scope_metrics[0].metrics[0]
    assert m.unit == "{EUR}"
    assert m.data.data_points[0].attributes["k8s.pod.label.team"] == "payments"


def test_billing_month_start():
    assert billing_month_start(datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc)) == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert billing_month_start(datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc)) == datetime(2026, 12, 1, tzinfo=timezone.utc)


class _Receiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.fail_first = fail_first
        self.got = threading.Event()

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        if self.fail_first > 0:
            self.fail_first -= 1
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "test refuses this one")
        self.requests.append(request)
        self.got.set()
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def receiver():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rx = _Receiver()
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(rx, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield rx, port
    server.stop(grace=None)


def _decode(req) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                assert m.sum.aggregation_temporality == 2  # CUMULATIVE on the wire
                assert not m.sum.is_monotonic
                for p in m.sum.data_points:
                    attrs = {kv.key: kv.value.string_value for kv in p.attributes}
                    out.setdefault(m.name, {})[attrs["k8s.namespace.name"]] = p.as_double
    return out


def test_pusher_sends_month_to_date_cost_over_real_grpc(receiver):
    rx, port = receiver
    windows: list[Window] = []

    def query(w: Window) -> list[Allocation]:
        windows.append(w)
        return _merged()

    exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    pusher = CostPusher(query, exporter, interval_s=0.2, clock=lambda: NOW).start()
    try:
        assert rx.got.wait(10), "no export reached the receiver"
    finally:
        pusher.stop()
        pusher.stop()  # idempotent
    assert windows[0] == Window(START, NOW)
    got = _decode(rx.requests[0])
    assert set(got) >= {"otel_agent.cost.total", "otel_agent.cost.cpu", "otel_agent.cost.memory"}
    for name in D.RAW:
        assert got["otel_agent.cost.total"][name] == pytest.approx(D.expected_cost(name))
    assert got["otel_agent.cost.cpu"][IDLE] == pytest.approx(sum(r[0] for r in D.RAW[IDLE]) * D.CPU_RATE)
    assert {m.name for m in COST_METRICS} >= set(got)


def test_a_failed_export_does_not_stop_the_pusher(receiver):
    rx, port = receiver
    rx.fail_first = 1  # INVALID_ARGUMENT is not retried by the SDK: the first push fails
    calls = []

    def query(w):
        calls.append(w)
        if len(calls) == 2:
            raise RuntimeError("ledger hiccup")  # a failing query must not kill the thread
        return _merged()

    exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    pusher = CostPusher(query, exporter, interval_s=0.05, clock=lambda: NOW).start()
    try:
        assert rx.got.wait(10)
    finally:
        pusher.stop()
    assert pusher.exports_failed >= 2 and pusher.exports_ok >= 1
    assert len(calls) >= 3


def test_stop_returns_promptly_with_a_long_interval(receiver):
    rx, port = receiver
    exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    pusher = CostPusher(lambda w: _merged(), exporter, interval_s=3600, clock=lambda: NOW).start()
    assert rx.got.wait(10)
    t0 = time.monotonic()
    pusher.stop()
    assert time.monotonic() - t0 < 5


def test_nothing_is_pushed_at_the_first_instant_of_a_month():
    sent = []

    class _Exp:
        def export(self, data, timeout_millis=0):
            sent.append(data)

        def shutdown(self):
            pass

    p = CostPusher(lambda w: _merged(), _Exp(), clock=lambda: datetime(2026, 12, 1, tzinfo=timezone.utc))
    p.push_once()
    assert sent == []
    p2 = CostPusher(lambda w: _merged(), _Exp(),
                    clock=lambda: datetime(2026, 12, 1, tzinfo=timezone.utc) + timedelta(seconds=1))
    p2.push_once()
    assert len(sent) == 1
