"""Cost, pushed back out as OTLP metrics, so Mimir, Prometheus or any OTLP backend can chart
money next to the usage it came from, with the dashboards people already have.

Why it looks like this:

- **Month-to-date cumulative sums.** Each point is the cost of the tenant from the start of the
  current UTC calendar month (the billing period) up to now, with that month start as the
  point's start time. A failed export loses nothing (the next one carries the total), a restart
  of the cost processor gives the same start time and the same value (no spurious reset), and a
  new month shows as a new start time, never as a negative delta (DESIGN rule 2).
- **Non-monotonic.** Late usage moves money from `__idle__` to a tenant, and with shared idle a
  tenant's share can shrink, so a value may go down. Declaring the sum monotonic would make
  Prometheus read that as a counter reset; non-monotonic cumulative sums are exported as gauges
  ("cost so far this month"), which is how they are charted anyway.
- **Building is pure, pushing is a thin thread.** `build_metrics_data` turns allocations into the
  SDK's `MetricsData` and is tested alone; `CostPusher` queries the ledger, builds, and hands
  the result to the SDK's `OTLPMetricExporter`, which owns retries. The exporter's result is
  logged; the thread never dies on an export or query failure.
- Our metric names carry the project prefix; the unit is the currency as a UCUM annotation
  (`{USD}`), and `currency` is also an attribute for backends that drop units.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from opentelemetry.sdk.metrics.export import (AggregationTemporality, Metric, MetricExporter,
                                              MetricExportResult, MetricsData, NumberDataPoint,
                                              ResourceMetrics, ScopeMetrics, Sum)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_agent.cost import grammar
from otel_agent.cost.components import COMPONENTS
from otel_agent.cost.report import ReportQuery, accumulate_sets, run_query
from otel_agent.cost.types import Allocation, Model, SharePolicy, Window

log = logging.getLogger(__name__)

PREFIX = "otel_agent.cost"
SCOPE = InstrumentationScope("otel_agent.cost.otlp_out", "0.1.0")


@dataclass(frozen=True, slots=True)
class CostMetric:
    name: str
    field: str  # Allocation attribute
    description: str


# Every cost metric we emit: the total, then one per cost component (components.COMPONENTS).
COST_METRICS: tuple[CostMetric, ...] = (
    CostMetric(f"{PREFIX}.total", "total_cost", "Total cost, billing month to date."),
    *(CostMetric(f"{PREFIX}.{c.otlp_suffix}", c.cost_field,
                 f"{c.what[0].upper()}{c.what[1:]} cost, billing month to date.")
      for c in COMPONENTS),
)

# aggregate -> the semantic-convention attribute that names the tenant
AGGREGATE_ATTRIBUTE = {
    "namespace": "k8s.namespace.name",
    "pod": "k8s.pod.name",
    "container": "k8s.container.name",
    "node": "k8s.node.name",
    "cluster": "k8s.cluster.name",
    "workload": "otel_agent.cost.workload",
    "controllerKind": "otel_agent.cost.workload.kind",
    "controller": "otel_agent.cost.workload",
    "deployment": "k8s.deployment.name",
    "statefulset": "k8s.statefulset.name",
    "daemonset": "k8s.daemonset.name",
    "job": "k8s.job.name",
}
# an aggregate of several keys (or `all`): the allocation's `/`-joined name
ALLOCATION_ATTRIBUTE = "otel_agent.cost.allocation"
# allocation properties carried along (OpenCost-style and semconv-style keys alike)
PROPERTY_ATTRIBUTES = {
    "cluster": "k8s.cluster.name", "k8s.cluster.name": "k8s.cluster.name",
    "namespace": "k8s.namespace.name", "k8s.namespace.name": "k8s.namespace.name",
    "node": "k8s.node.name", "k8s.node.name": "k8s.node.name",
    "controllerKind": "otel_agent.cost.workload.kind",
    "workload_kind": "otel_agent.cost.workload.kind",
}


def aggregate_attribute(aggregate: str) -> str:
    keys = grammar.aggregate_keys(aggregate)
    if len(keys) != 1:
        return ALLOCATION_ATTRIBUTE
    key = keys[0]
    if key.startswith("label:"):
        return f"k8s.pod.label.{key[6:]}"
    if key.startswith("annotation:"):
        return f"k8s.pod.annotation.{key[11:]}"
    return AGGREGATE_ATTRIBUTE[key]


def billing_month_start(now: datetime) -> datetime:
    now = now.astimezone(timezone.utc)
    return datetime(now.year, now.month, 1, tzinfo=timezone.utc)


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def build_metrics_data(allocations: Sequence[Allocation], *, aggregate: str, start: datetime,
                       now: datetime, model: Model = Model.CHARGEBACK,
                       share_idle: SharePolicy = SharePolicy.NONE,
                       resource: Mapping[str, Any] | None = None) -> MetricsData:
    """One cumulative sum per cost metric, one point per allocation (pure)."""
    key = aggregate_attribute(aggregate)
    start_ns, now_ns = _ns(start), _ns(now)
    points: dict[str, list[NumberDataPoint]] = {m.name: [] for m in COST_METRICS}
    currencies = set()
    for a in allocations:
        attrs: dict[str, Any] = {}
        for prop, attr in PROPERTY_ATTRIBUTES.items():
            v = a.properties.get(prop)
            if v:
                attrs[attr] = str(v)
        attrs[key] = a.name  # the tenant, or __idle__ / __overhead__ / __unallocated__
        attrs["currency"] = a.currency
        attrs["otel_agent.cost.model"] = model.value
        attrs["otel_agent.cost.share_idle"] = share_idle.value
        currencies.add(a.currency)
        for m in COST_METRICS:
            value = float(getattr(a, m.field))
            if m.name != f"{PREFIX}.total" and value == 0.0:
                continue  # keep series count down: a zero component carries nothing
            points[m.name].append(NumberDataPoint(attributes=attrs, start_time_unix_nano=start_ns,
                                                  time_unix_nano=now_ns, value=value))
    unit = "{" + currencies.pop() + "}" if len(currencies) == 1 else "1"
    metrics = [Metric(name=m.name, description=m.description, unit=unit,
                      data=Sum(data_points=points[m.name],
                               aggregation_temporality=AggregationTemporality.CUMULATIVE,
                               is_monotonic=False))
               for m in COST_METRICS if points[m.name]]
    res = Resource.create({"service.name": "otel-agent-cost", **dict(resource or {})})
    return MetricsData(resource_metrics=[ResourceMetrics(
        resource=res, scope_metrics=[ScopeMetrics(scope=SCOPE, metrics=metrics, schema_url="")],
        schema_url="")])


class CostPusher:
    """Every `interval_s`, query month-to-date cost and push it. `stop()` is idempotent."""

    def __init__(self, query: Callable[[Window], list[Allocation]], exporter: MetricExporter, *,
                 aggregate: str = "namespace", model: Model = Model.CHARGEBACK,
                 share_idle: SharePolicy = SharePolicy.NONE, interval_s: float = 60.0,
                 timeout_s: float = 10.0, resource: Mapping[str, Any] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._query, self._exporter = query, exporter
        self._aggregate, self._model, self._share = aggregate, model, share_idle
        self._interval, self._timeout = interval_s, timeout_s
        self._resource, self._clock = resource, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.exports_ok = 0
        self.exports_failed = 0

    def push_once(self) -> MetricExportResult:
        now = self._clock()
        start = billing_month_start(now)
        if now <= start:  # exactly at midnight on the 1st: nothing billed yet this month
            return MetricExportResult.SUCCESS
        allocations = self._query(Window(start, now))
        data = build_metrics_data(allocations, aggregate=self._aggregate, start=start, now=now,
                                  model=self._model, share_idle=self._share,
                                  resource=self._resource)
        result = self._exporter.export(data, timeout_millis=self._timeout * 1000)
        if result is MetricExportResult.SUCCESS:
            self.exports_ok += 1
        else:
            self.exports_failed += 1
            log.warning("cost export failed; the next push carries the same month-to-date totals")
        return result

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.push_once()
            except Exception:  # the thread boundary: log, keep pushing  # noqa: BLE001
                self.exports_failed += 1
                log.exception("cost push failed")
            self._stop.wait(self._interval)

    def start(self) -> "CostPusher":
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cost-otlp-push",
                                                daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            t, self._thread = self._thread, None
        if t is not None:
            t.join(timeout=self._timeout + self._interval)
        try:
            self._exporter.shutdown()
        except Exception:  # noqa: BLE001 - shutdown of an already-closed exporter
            pass


def start_pusher(store: Any, *, endpoint: str, aggregate: str = "namespace",
                 model: Model = Model.CHARGEBACK, share_idle: SharePolicy = SharePolicy.NONE,
                 interval_s: float = 60.0, insecure: bool = True,
                 resource: Mapping[str, Any] | None = None,
                 exporter: MetricExporter | None = None) -> CostPusher:
    """Push month-to-date cost from the ledger `store` to an OTLP/gRPC endpoint (host:port)."""
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        exporter = OTLPMetricExporter(endpoint=endpoint, insecure=insecure)

    def query(window: Window) -> list[Allocation]:
        q = ReportQuery(window=window, aggregate=aggregate, step=None, model=model,
                        share_idle=share_idle)
        return accumulate_sets(run_query(store, q))[0]

    return CostPusher(query, exporter, aggregate=aggregate, model=model, share_idle=share_idle,
                      interval_s=interval_s, resource=resource).start()
