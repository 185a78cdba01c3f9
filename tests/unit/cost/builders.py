"""Hand-built OTLP export requests for the cost processor's tests: what the agent sends,
written out so a test can state its expected ledger independently of the code under test."""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

S = 1_000_000_000  # nanoseconds per second
H = 3600 * S
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z


def kv(attrs: dict[str, object]) -> list[KeyValue]:
    out = []
    for k, v in attrs.items():
        if isinstance(v, bool):
            out.append(KeyValue(key=k, value=AnyValue(bool_value=v)))
        elif isinstance(v, int):
            out.append(KeyValue(key=k, value=AnyValue(int_value=v)))
        elif isinstance(v, float):
            out.append(KeyValue(key=k, value=AnyValue(double_value=v)))
        else:
            out.append(KeyValue(key=k, value=AnyValue(string_value=str(v))))
    return out


def node_attrs(node: str = "node-a", **labels: str) -> dict[str, object]:
    a: dict[str, object] = {"k8s.node.name": node}
    a.update({f"k8s.node.label.{k.replace('__', '/')}": v for k, v in labels.items()})
    return a


def pod_attrs(uid: str, *, node: str = "node-a", namespace: str | None = "team-a",
              pod: str | None = None, deployment: str | None = None,
              labels: dict[str, str] | None = None) -> dict[str, object]:
    a: dict[str, object] = {"k8s.node.name": node, "k8s.pod.uid": uid}
    if namespace is not None:
        a["k8s.namespace.name"] = namespace
        a["k8s.pod.name"] = pod or f"pod-{uid}"
    if deployment:
        a["k8s.deployment.name"] = deployment
    for k, v in (labels or {}).items():
        a[f"k8s.pod.label.{k}"] = v
    return a


def container_attrs(uid: str, container: str, **kw) -> dict[str, object]:
    a = pod_attrs(uid, **kw)
    a["container.id"] = f"cid-{uid}-{container}"
    if kw.get("namespace", "team-a") is not None:
        a["k8s.container.name"] = container
    return a


@dataclass
class Res:
    """One OTLP resource with its metrics, as the agent would send it."""

    attrs: dict[str, object]
    metrics: list[m.Metric] = field(default_factory=list)

    def sum(self, name: str, points: list[tuple[int, int, float]], *, unit: str = "",
            delta: bool = False, dp_attrs: dict[str, object] | None = None) -> "Res":
        """points: (start_ns, time_ns, value)"""
        metric = m.Metric(name=name, unit=unit)
        metric.sum.is_monotonic = True
        metric.sum.aggregation_temporality = 1 if delta else 2
        for start, t, v in points:
            dp = metric.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=t)
            dp.as_double = v
            dp.attributes.extend(kv(dp_attrs or {}))
        self.metrics.append(metric)
        return self

    def updown(self, name: str, points: list[tuple[int, int, float]], *, unit: str = "",
               delta: bool = False, dp_attrs: dict[str, object] | None = None) -> "Res":
        """An UpDownCounter as the agent sends it: a non-monotonic sum. points: (start, time, value)"""
        metric = m.Metric(name=name, unit=unit)
        metric.sum.is_monotonic = False
        metric.sum.aggregation_temporality = 1 if delta else 2
        for start, t, v in points:
            dp = metric.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=t)
            dp.as_double = v
            dp.attributes.extend(kv(dp_attrs or {}))
        self.metrics.append(metric)
        return self

    def gauge(self, name: str, points: list[tuple[int, float]], *, unit: str = "") -> "Res":
        metric = m.Metric(name=name, unit=unit)
        for t, v in points:
            dp = metric.gauge.data_points.add(time_unix_nano=t)
            dp.as_double = v
        self.metrics.append(metric)
        return self


def request(*resources: Res) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    for r in resources:
        rm = req.resource_metrics.add()
        rm.resource.attributes.extend(kv(r.attrs))
        sm = rm.scope_metrics.add()
        sm.scope.name = "otel_agent"
        sm.metrics.extend(r.metrics)
    return req
