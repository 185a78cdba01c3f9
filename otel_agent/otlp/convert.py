"""Samples → the OpenTelemetry SDK's metrics data model. Pure: no clock, no I/O.

One OTLP resource per container, per pod and per node (DESIGN, "OTLP"). Counters go out as
cumulative sums whose start time is stable for the life of the series (DESIGN rule 2):

* cgroup-file counters count from the cgroup's creation, which is after the node booted, so
  their start time is the node's boot time: the same across agent restarts, so a restarted
  agent continues each series instead of starting (and double-billing) a new one. A cgroup
  re-created under the same pod is a new series because `otel_agent.cgroup.id` differs.
* BPF counters count from when the programs were attached: that is their start time.
* the agent's own counters count from the agent's start.

Resources are cached per cgroup for as long as the metadata object they were built from is
the same object: attributes do not change between cycles, only values do (DESIGN, costs).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_agent import __version__
from otel_agent.metrics import METRICS, Instrument, MetricDef
from otel_agent.model import (
    CgroupId,
    CgroupRef,
    HistogramSample,
    NodeMeta,
    PodMeta,
    PodUid,
    Sample,
    Scope,
)
from otel_agent.otlp.resources import resource_attributes

SCOPE = InstrumentationScope("otel_agent", __version__)
_CUMULATIVE = AggregationTemporality.CUMULATIVE


@dataclass(frozen=True, slots=True)
class StartTimes:
    """Start time (ns since epoch) of each family of counters."""

    cgroup: int  # node boot time
    ebpf: int  # BPF programs attached
    agent: int  # agent process started


def family(m: MetricDef) -> str:
    if m.source.startswith("ebpf"):
        return "ebpf"
    if m.source in ("agent", "kubernetes"):
        return "agent"
    return "cgroup"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one collection cycle produced, ready to convert."""

    time_unix_nano: int
    refs: Mapping[CgroupId, CgroupRef]
    samples: Sequence[Sample]
    histograms: Sequence[HistogramSample] = ()
    pods: Mapping[PodUid, PodMeta] | None = None
    node: NodeMeta | None = None


class Converter:
    """Builds MetricsData from Snapshots; keeps the resource cache between cycles."""

    def __init__(self, *, node_name: str | None, extra_attributes: Mapping[str, str] = {},
                 start_times: StartTimes) -> None:
        self._node_name = node_name
        self._extra = dict(extra_attributes)
        self.start_times = start_times
        # cgroup id -> (pod meta it was built from, node meta, Resource)
        self._cache: dict[CgroupId, tuple[object, object, Resource]] = {}

    def forget(self, ids: Iterable[CgroupId]) -> None:
        for i in ids:
            self._cache.pop(i, None)

    def resource(self, ref: CgroupRef, pod: PodMeta | None, node: NodeMeta | None) -> Resource:
        cached = self._cache.get(ref.cgroup_id)
        if cached is not None and cached[0] is pod and cached[1] is node:
            return cached[2]
        attrs = resource_attributes(ref, pod, node, node_name=self._node_name, extra=self._extra)
        res = Resource(attrs)
        self._cache[ref.cgroup_id] = (pod, node, res)
        return res

    def convert(self, snap: Snapshot) -> MetricsData:
        pods = snap.pods or {}
        start = {"cgroup": self.start_times.cgroup, "ebpf": self.start_times.ebpf,
                 "agent": self.start_times.agent}
        t = snap.time_unix_nano

        # resource key -> metric key -> data points. NODE and KUBEPODS share the node resource.
        by_resource: dict[int, tuple[Resource, dict[str, list]]] = {}
        node_key = -1

        def bucket(cid: CgroupId) -> tuple[Scope, dict[str, list]] | None:
            ref = snap.refs.get(cid)
            if ref is None:
                return None
            if ref.scope in (Scope.NODE, Scope.KUBEPODS):
                key = node_key
            else:
                key = cid
            entry = by_resource.get(key)
            if entry is None:
                pod = pods.get(ref.pod_uid) if ref.pod_uid else None
                entry = (self.resource(ref, pod, snap.node), defaultdict(list))
                by_resource[key] = entry
            return ref.scope, entry[1]

        for s in snap.samples:
            b = bucket(s.cgroup_id)
            if b is None:
                continue
            scope, metrics = b
            m = METRICS[s.metric]
            if scope not in m.names:
                continue
            metrics[(m.key, scope)].append(
                NumberDataPoint(dict(s.attributes), start[family(m)], t, s.value)
            )
        for h in snap.histograms:
            b = bucket(h.cgroup_id)
            if b is None:
                continue
            scope, metrics = b
            m = METRICS[h.metric]
            if scope not in m.names:
                continue
            metrics[(m.key, scope)].append(
                HistogramDataPoint(
                    dict(h.attributes), start[family(m)], t, h.count, h.sum,
                    # Log2 buckets in the kernel keep no min/max; both are optional in OTLP.
                    list(h.bucket_counts), list(h.explicit_bounds), None, None,
                )
            )

        out = []
        for res, metrics in by_resource.values():
            if not metrics:
                continue
            built = [_metric(METRICS[k], scope, points) for (k, scope), points in metrics.items()]
            out.append(ResourceMetrics(res, [ScopeMetrics(SCOPE, built, "")], ""))
        return MetricsData(out)


def _metric(m: MetricDef, scope: Scope, points: list) -> Metric:
    name = m.names[scope]
    if m.instrument is Instrument.COUNTER:
        data = Sum(points, _CUMULATIVE, True)
    elif m.instrument is Instrument.UPDOWN:
        data = Sum(points, _CUMULATIVE, False)
    elif m.instrument is Instrument.GAUGE:
        data = Gauge(points)
    else:
        data = Histogram(points, _CUMULATIVE)
    return Metric(name, m.description, m.unit, data)


def count_points(data: MetricsData) -> int:
    return sum(
        len(metric.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )
