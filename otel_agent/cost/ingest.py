"""OTLP metrics → the rows the ledger is derived from (pure: no I/O, no clock).

Why store points and not deltas: OTLP retries, Collector queues and restarts deliver the same
point twice, late, or out of order. A delta computed on arrival would count a duplicate twice
and a late point against the wrong predecessor. So every point is kept as it came, keyed by
(series, start time, time), inserted with ON CONFLICT DO NOTHING, and the ledger is a pure
function of the set of stored points: the same points in any order and any number of copies give
the same ledger (tests/unit/cost/test_ledger_properties.py).

A series is keyed by what cannot change over its life: metric, cluster, node, pod uid,
container id (or name when the id is absent) and the data-point attributes that split it
(network direction and class), plus its temporality. Names, namespace, workload and labels are
descriptive metadata kept beside the key: a pod whose metadata arrives late, or whose labels are
edited, stays one series and is never counted twice.

Only the metrics the ledger bills are kept (the table below is derived from
otel_agent.metrics, the one place metric names are declared); everything else the agent sends
is accepted and left to the other backends the Collector fans out to.

Agents are upgraded one node at a time, so the ledger accepts what every deployed agent
sends: a metric's former names (`MetricDef.formerly`) map to the same quantity, and a value
semconv made an UpDownCounter (a non-monotonic sum) is taken like the gauge older agents send.
A series is keyed by the metric's first name whatever name the point arrives with (and
stored under its current one), so an agent upgraded mid-hour continues its series instead of
starting a second one (which would bill a counter's history twice, or hold two gauges at
once), in a ledger written before the rename too.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_agent.cost import validate as V
from otel_agent.gpu import is_gpu_resource
from otel_agent.metrics import (ATTR_ACCESS_MODE, ATTR_GPU_RESOURCE, ATTR_MOUNTED,
                                ATTR_NETWORK_CLASS, metric)
from otel_agent.model import Scope
from otel_agent.otlp.resources import PROVIDER_ID_ATTR

NANOS_PER_SECOND = 1_000_000_000
NANOS_PER_HOUR = 3600 * NANOS_PER_SECOND

# Temporality as stored; delta and cumulative points of one metric are different series.
CUMULATIVE, DELTA, GAUGE = "cumulative", "delta", "gauge"

UNKNOWN = "__unknown__"  # a pod or namespace whose metadata the agent did not have
UNMOUNTED = "__unmounted__"  # a claim's hours with no running pod mounting it (its workload)

MAX_FUTURE_NS = 15 * 60 * NANOS_PER_SECOND  # points from further in the future than this
NET_DIRECTIONS = ("transmit", "receive")  # semconv network.io.direction


@dataclass(frozen=True, slots=True)
class Quantity:
    """What a metric means to the ledger."""

    quantity: str  # cpu | memory.working_set | memory.usage | network | cpu.request | ...
    scope: str  # container | pod | kubepods | node
    counter: bool  # a monotonic sum (cumulative or delta); else a gauge or non-monotonic sum
    unit: str
    metric: str  # the metric's current name, stored with its series
    series_key: str  # the name its series are keyed by: its first name, stable across renames


def _quantities() -> dict[str, Quantity]:
    C, P, K, N = Scope.CONTAINER, Scope.POD, Scope.KUBEPODS, Scope.NODE
    out: dict[str, Quantity] = {}

    def add(key: str, quantity: str, counter: bool, scopes: Iterable[Scope]) -> None:
        m = metric(key)
        for s in scopes:
            names = (*m.formerly.get(s, ()), m.names[s])
            q = Quantity(quantity, s.value, counter, m.unit, metric=m.names[s], series_key=names[0])
            for name in names:
                out[name] = q

    add("cpu.time", "cpu", True, (C, P, K, N))
    add("memory.working_set", "memory.working_set", False, (C, P, K, N))
    add("memory.usage", "memory.usage", False, (C, P, K, N))
    add("bpf.network.io", "network", True, (C, P))
    add("k8s.cpu.request", "cpu.request", False, (C,))
    add("k8s.memory.request", "memory.request", False, (C,))
    add("k8s.node.cpu.allocatable", "cpu.allocatable", False, (N,))
    add("k8s.node.cpu.capacity", "cpu.capacity", False, (N,))
    add("k8s.node.memory.allocatable", "memory.allocatable", False, (N,))
    add("k8s.node.memory.capacity", "memory.capacity", False, (N,))
    add("k8s.gpu.request", "gpu.request", False, (C,))
    add("k8s.node.gpu.capacity", "gpu.capacity", False, (N,))
    add("k8s.node.gpu.allocatable", "gpu.allocatable", False, (N,))
    # Not ours: the NVIDIA DCGM exporter's per-GPU utilisation, scraped by the same Collector
    # (dcgm-exporter's etc/default-counters.csv: DCGM_FI_DEV_GPU_UTIL, a gauge in percent;
    # DCGM_FI_PROF_GR_ENGINE_ACTIVE, a ratio, in its DCP counters). Shown beside the GPU-hours
    # a pod held (the waste), never priced: see DCGM below.
    # Persistent volume claims, from the one agent that reports the cluster's (k8s/volumes.py):
    # points on its node resource, the claim in their attributes; billed to the claim's
    # namespace, never to the node (see _decode_claims).
    m = metric("k8s.claim.capacity")
    out[m.names[N]] = Quantity("pv.capacity", "claim", False, m.unit, metric=m.names[N],
                               series_key=m.names[N])
    for name, quantity in DCGM_METRICS.items():
        out[name] = Quantity(quantity, "gpu", False, "", metric=name, series_key=name)
    return out


# DCGM metric → quantity; the data point's labels name the pod (dcgm-exporter's Kubernetes
# mapping: `pod`, `namespace`, `container`; before 3.x `pod_name`, `pod_namespace`,
# `container_name`) and the device (`UUID`; a MIG instance also `GPU_I_PROFILE`, e.g. 1g.10gb).
DCGM_METRICS = {"DCGM_FI_DEV_GPU_UTIL": "gpu.util_percent",
                "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "gpu.active_ratio"}
DCGM_LABELS = (("namespace", "pod_namespace"), ("pod", "pod_name"), ("container", "container_name"))


QUANTITIES: dict[str, Quantity] = _quantities()
NET_DIRECTION = "network.io.direction"
NET_CLASS = ATTR_NETWORK_CLASS
# GPU series are split by their extended resource (otel_agent.gpu.resource), kept in the
# series' class column (net_class: the one data-point attribute a series is keyed by beside
# the network direction), so nvidia.com/gpu and a MIG slice on one node are two series.
GPU_RESOURCE = ATTR_GPU_RESOURCE

_WORKLOAD_ATTRS = (  # the owner that names a pod's workload, most specific owner first
    ("k8s.deployment.name", "deployment"), ("k8s.statefulset.name", "statefulset"),
    ("k8s.daemonset.name", "daemonset"), ("k8s.cronjob.name", "cronjob"),
    ("k8s.job.name", "job"), ("k8s.replicaset.name", "replicaset"),
)
_POD_LABEL = "k8s.pod.label."
_POD_ANNOTATION = "k8s.pod.annotation."  # semconv; for annotation:<key> reports
MAX_ANNOTATION_VALUE = 253  # longer values (JSON blobs, certificates) are dropped, not refused
_NODE_LABEL = "k8s.node.label."


@dataclass(slots=True)
class SeriesRow:
    series_id: int
    metric: str
    quantity: str
    scope: str
    temporality: str
    cluster: str
    node: str
    pod_uid: str
    container_key: str
    net_class: str
    direction: str
    namespace: str  # the tenant the series limit counts against
    meta: str  # JSON: names, workload, labels (descriptive, may change)
    seen_ns: int  # latest point time carrying this metadata


@dataclass(slots=True)
class Batch:
    """One decoded request: the rows to store and what was rejected, with reasons."""

    series: dict[int, SeriesRow] = field(default_factory=dict)
    # (series_id, start_ns, time_ns, value, node_key)
    points: list[tuple[int, int, int, float, str]] = field(default_factory=list)
    rejected: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # message → count
    codes: dict[str, int] = field(default_factory=dict)  # reason code (validate.REASONS) → count
    ignored: int = 0  # points of metrics the ledger does not bill
    labels_dropped: int = 0  # labels over validate.MAX_LABELS, dropped from metadata

    def reject(self, code: str, message: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.rejected += n
        self.errors[message] = self.errors.get(message, 0) + n
        self.codes[code] = self.codes.get(code, 0) + n

    def error_message(self, limit: int = 5) -> str:
        items = sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0]))
        parts = [f"{reason} ({n} point{'s' if n != 1 else ''})" for reason, n in items[:limit]]
        if len(items) > limit:
            parts.append(f"and {len(items) - limit} more reasons")
        return "; ".join(parts)


def node_key(cluster: str, node: str) -> str:
    """Nodes are unique per cluster: the key every per-node table uses."""
    return f"{cluster}/{node}"


def series_id(*parts: str) -> int:
    """A stable signed 63-bit id of a series key (the same in every process and database)."""
    sid = _SERIES_IDS.get(parts)
    if sid is None:
        h = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
        sid = int.from_bytes(h, "big") >> 1
        _SERIES_IDS.put(parts, sid)
    return sid


class _Memo(dict):
    """Results of a pure function for the keys seen lately: the same resources and series come
    back every export. Bounded: emptied whole when full, so memory never follows every key
    ever seen (churn only costs recomputing), and it holds no more than one cycle or so."""

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def put(self, key, value) -> None:
        if len(self) >= self.maxsize:
            self.clear()
        self[key] = value


_SERIES_IDS = _Memo(1 << 15)
_RESOURCES = _Memo(1 << 13)  # encoded resource → its validated _Resource


def _attrs(kvs) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        if which == "string_value":
            out[kv.key] = v.string_value
        elif which in ("int_value", "double_value", "bool_value"):
            out[kv.key] = str(getattr(v, which))
    return out


@dataclass(slots=True)
class _Resource:
    cluster: str
    node: str
    pod_uid: str
    container_key: str
    namespace: str
    meta: str
    error: V.Invalid | None = None  # a string Kubernetes could not have sent: every point rejected
    labels_dropped: int = 0


_WORKLOAD_ATTR_NAMES = tuple(a for a, _ in _WORKLOAD_ATTRS)


def _annotations(attrs: Mapping[str, object]) -> dict[str, str]:
    """Pod annotations worth reporting on: printable, short (an annotation may hold a whole
    JSON document: those are dropped, never a reason to refuse the pod), at most
    validate.MAX_LABELS of them by key."""
    out: dict[str, str] = {}
    for k in sorted(a for a in attrs if a.startswith(_POD_ANNOTATION)):
        key, v = k[len(_POD_ANNOTATION):], attrs[k]
        if (isinstance(v, str) and key and len(key) <= V.MAX_LABEL_KEY
                and len(v) <= MAX_ANNOTATION_VALUE and key.isprintable() and v.isprintable()
                and len(out) < V.MAX_LABELS):
            out[key] = v
    return out


def _resource(attrs: dict[str, str]) -> _Resource:
    pod_uid = attrs.get("k8s.pod.uid", "")
    container_key = attrs.get("container.id") or attrs.get("k8s.container.name", "")
    res = _Resource(cluster=attrs.get("k8s.cluster.name", ""), node=attrs.get("k8s.node.name", ""),
                    pod_uid=pod_uid, container_key=container_key,
                    namespace=(attrs.get("k8s.namespace.name") or UNKNOWN) if pod_uid else "",
                    meta="")
    try:
        V.check_resource_strings(attrs, _WORKLOAD_ATTR_NAMES)
        workload_kind, workload = "", ""
        for attr, kind in _WORKLOAD_ATTRS:
            if attrs.get(attr):
                workload_kind, workload = kind, attrs[attr]
                break
        meta: dict[str, object] = {}
        if pod_uid:
            labels, res.labels_dropped = V.bounded_labels(
                {k[len(_POD_LABEL):]: v for k, v in attrs.items() if k.startswith(_POD_LABEL)}, "pod")
            meta = {
                "namespace": attrs.get("k8s.namespace.name", ""),
                "pod": attrs.get("k8s.pod.name", ""),
                "container": attrs.get("k8s.container.name", ""),
                "workload_kind": workload_kind,
                "workload": workload,
                "labels": labels,
            }
            annotations = _annotations(attrs)
            if annotations:
                meta["annotations"] = annotations
        else:
            node_attrs, res.labels_dropped = V.bounded_labels(
                {k[len(_NODE_LABEL):]: v for k, v in attrs.items() if k.startswith(_NODE_LABEL)}, "node")
            for plain in ("k8s.node.name", "k8s.cluster.name", "cloud.availability_zone",
                          PROVIDER_ID_ATTR):
                if plain in attrs:
                    node_attrs[plain] = attrs[plain]
            meta = {"node_attrs": node_attrs}
    except V.Invalid as e:
        res.error = e
        return res
    res.meta = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    return res


def decode(request: ExportMetricsServiceRequest, *, now_ns: int, oldest_ns: int = 0) -> Batch:
    """Validate and flatten one export request. Bad points are rejected with a reason and
    counted; good points in the same request are kept (OTLP partial success). Only the rules
    that need no state are applied here (validate.py); the store applies the per-node ones."""
    b = Batch()
    newest_ns = now_ns + MAX_FUTURE_NS
    for rm in request.resource_metrics:
        res: _Resource | None = None
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                q = QUANTITIES.get(m.name)
                which = m.WhichOneof("data")
                if q is None:
                    b.ignored += _count_points(m, which)
                    continue
                if res is None:
                    key = rm.resource.SerializeToString()
                    res = _RESOURCES.get(key)
                    if res is None:
                        res = _resource(_attrs(rm.resource.attributes))
                        _RESOURCES.put(key, res)
                    b.labels_dropped += res.labels_dropped
                _decode_metric(b, m, which, q, res, now_ns, newest_ns, oldest_ns)
    return b


def _count_points(m, which: str | None) -> int:
    return len(getattr(m, which).data_points) if which else 0


def _decode_metric(b: Batch, m, which: str | None, q: Quantity, res: _Resource, now_ns: int,
                   newest_ns: int, oldest_ns: int) -> None:
    name = m.name  # as sent, for error messages; series are keyed by q.series_key
    if which is None:
        b.reject(V.R_TYPE, f"{name}: metric has no data")
        return
    data = getattr(m, which)
    n_points = len(data.data_points)
    if which in ("histogram", "exponential_histogram", "summary"):
        b.reject(V.R_TYPE, f"{name}: expected a {'sum' if q.counter else 'gauge'}, got a {which}",
                 n_points)
        return
    if q.counter:
        if which != "sum" or not data.is_monotonic:
            b.reject(V.R_TYPE, f"{name}: expected a monotonic sum, got a "
                     f"{'non-monotonic sum' if which == 'sum' else which}", n_points)
            return
        if data.aggregation_temporality == 2:
            temporality = CUMULATIVE
        elif data.aggregation_temporality == 1:
            temporality = DELTA
        else:
            b.reject(V.R_TYPE, f"{name}: aggregation temporality unspecified", n_points)
            return
    else:
        # A level: a gauge (agents before semconv 1.44 names) or an UpDownCounter, i.e. a
        # non-monotonic sum, which is a level only when cumulative (a delta one is a change).
        if which == "sum" and data.is_monotonic:
            b.reject(V.R_TYPE, f"{name}: expected a gauge or an UpDownCounter, got a monotonic sum",
                     n_points)
            return
        if which == "sum" and data.aggregation_temporality != 2:
            b.reject(V.R_TYPE, f"{name}: an UpDownCounter must be cumulative (a delta is not a level)",
                     n_points)
            return
        temporality = GAUGE
    if m.unit and m.unit != q.unit:
        b.reject(V.R_TYPE, f"{name}: unit {m.unit!r}, expected {q.unit!r}", n_points)
        return
    if not res.node:
        b.reject(V.R_ATTRIBUTE, f"{name}: resource has no k8s.node.name", n_points)
        return
    if q.scope in ("container", "pod") and not res.pod_uid:
        b.reject(V.R_ATTRIBUTE, f"{name}: resource has no k8s.pod.uid", n_points)
        return
    if q.scope == "container" and not res.container_key:
        b.reject(V.R_ATTRIBUTE, f"{name}: resource has neither container.id nor k8s.container.name",
                 n_points)
        return
    if res.error is not None:
        b.reject(res.error.code, f"{name}: {res.error.message}", n_points)
        return
    if q.scope == "claim":
        _decode_claims(b, name, data, q, res, newest_ns, oldest_ns)
        return
    if q.scope == "gpu":
        _decode_dcgm(b, name, data, q, res, newest_ns, oldest_ns)
        return
    nk = node_key(res.cluster, res.node)
    is_net = q.quantity == "network"
    is_gpu = q.quantity.startswith("gpu.")
    counter = q.counter
    quantity = q.quantity
    rate = V.rate_bound(quantity) if counter else None
    gauge_max = None if counter else V.gauge_bound(quantity)
    cache: dict[tuple[str, str], SeriesRow] = {}
    for dp in data.data_points:
        if dp.flags & 1:  # FLAG_NO_RECORDED_VALUE: a staleness marker, nothing to bill
            continue
        kind = dp.WhichOneof("value")
        if kind == "as_double":
            value = dp.as_double
        elif kind == "as_int":
            value = float(dp.as_int)
        else:
            b.reject(V.R_VALUE, f"{name}: data point has no value")
            continue
        t = dp.time_unix_nano
        start = dp.start_time_unix_nano
        if not math.isfinite(value):
            b.reject(V.R_VALUE, f"{name}: value {value} is not a finite number")
            continue
        if value < 0:
            b.reject(V.R_VALUE, f"{name}: negative value {value}")
            continue
        if t == 0:
            b.reject(V.R_VALUE, f"{name}: time_unix_nano is 0")
            continue
        if t > newest_ns:
            b.reject(V.R_FUTURE, f"{name}: time is more than {MAX_FUTURE_NS // NANOS_PER_SECOND // 60} "
                     f"minutes in the future")
            continue
        if t < oldest_ns:
            b.reject(V.R_RETENTION, f"{name}: time is older than the ledger keeps raw points")
            continue
        if counter:
            if start == 0:
                b.reject(V.R_VALUE, f"{name}: a sum needs start_time_unix_nano")
                continue
            if start > t:
                b.reject(V.R_VALUE, f"{name}: start_time_unix_nano is after time_unix_nano")
                continue
        else:
            start = 0  # a gauge's start time means nothing; it must not split its points
        try:
            # validate.check_value, called only when a bound may be crossed (the hot path)
            if counter:
                if t - start > V.MAX_UPTIME_NS or (rate is not None and value > V.counter_allowance(rate, t - start)):
                    V.check_value(name, quantity, counter, value, start, t)
            elif gauge_max is not None and value > gauge_max:
                V.check_value(name, quantity, counter, value, start, t)
            if is_net:
                a = _attrs(dp.attributes)
                direction, net_class = a.get(NET_DIRECTION, ""), a.get(NET_CLASS, "")
                if direction and direction not in NET_DIRECTIONS:
                    raise V.Invalid(V.R_ATTRIBUTE, f"{name}: {NET_DIRECTION} {direction[:40]!r} "
                                    f"is not one of {', '.join(NET_DIRECTIONS)}")
                V.check_point_attribute(NET_CLASS, net_class, 64)
            elif is_gpu:
                direction, net_class = "", _attrs(dp.attributes).get(GPU_RESOURCE, "")
                if not is_gpu_resource(net_class):
                    raise V.Invalid(V.R_ATTRIBUTE, f"{name}: {GPU_RESOURCE} {net_class[:64]!r} is "
                                    "not a GPU resource (nvidia.com/gpu, nvidia.com/mig-<g>g.<m>gb, "
                                    "amd.com/gpu, gpu.intel.com/i915, gpu.intel.com/xe)")
            else:
                direction = net_class = ""
        except V.Invalid as e:
            b.reject(e.code, e.message)
            continue
        s = cache.get((direction, net_class))
        if s is None:
            sid = series_id(q.series_key, temporality, res.cluster, res.node, res.pod_uid,
                            res.container_key, direction, net_class)
            s = b.series.get(sid)
            if s is None:
                s = SeriesRow(sid, q.metric, q.quantity, q.scope, temporality, res.cluster, res.node,
                              res.pod_uid, res.container_key, net_class, direction,
                              res.namespace, res.meta, t)
                b.series[sid] = s
            cache[(direction, net_class)] = s
        # Latest-seen metadata wins (ties broken by content), whatever the arrival order.
        if t > s.seen_ns or (t == s.seen_ns and res.meta > s.meta):
            s.seen_ns, s.meta = t, res.meta
        b.points.append((s.series_id, start, t, value, nk))


def _decode_dcgm(b: Batch, name: str, data, q: Quantity, res: _Resource, newest_ns: int,
                 oldest_ns: int) -> None:
    """DCGM utilisation points: one series per (pod's container, GPU device). A point no pod
    holds (no namespace/pod label: a device no pod uses) is ignored, not rejected. The series
    has no pod uid (dcgm-exporter does not know it): the ledger finds the pod by namespace and
    name among the node's pods in the hour. Its key: container_key = namespace/pod/container,
    class = the device UUID, direction = the MIG profile ('' for a whole GPU)."""
    nk = node_key(res.cluster, res.node)
    bound = 100.0 if q.quantity == "gpu.util_percent" else 1.0
    for dp in data.data_points:
        if dp.flags & 1:
            continue
        a = _attrs(dp.attributes)
        ns, pod, container = (a.get(new) or a.get(old) or "" for new, old in DCGM_LABELS)
        if not ns or not pod:
            b.ignored += 1
            continue
        kind = dp.WhichOneof("value")
        value = dp.as_double if kind == "as_double" else float(dp.as_int) if kind == "as_int" else None
        t = dp.time_unix_nano
        try:
            if value is None or not math.isfinite(value) or not 0 <= value <= bound * (1 + V.CAPACITY_SLACK):
                raise V.Invalid(V.R_VALUE, f"{name}: value {value} is not between 0 and {bound:g}")
            if t == 0 or t > newest_ns:
                raise V.Invalid(V.R_VALUE if t == 0 else V.R_FUTURE, f"{name}: time_unix_nano "
                                f"{'is 0' if t == 0 else 'is in the future'}")
            if t < oldest_ns:
                raise V.Invalid(V.R_RETENTION, f"{name}: time is older than the ledger keeps raw points")
            V.check_resource_strings({"k8s.namespace.name": ns, "k8s.pod.name": pod,
                                      "k8s.container.name": container}, ())
            device = a.get("UUID") or a.get("gpu") or ""
            profile = a.get("GPU_I_PROFILE", "")
            V.check_point_attribute("UUID", device, 64)
            V.check_point_attribute("GPU_I_PROFILE", profile, 16)
            ckey = f"{ns}/{pod}/{container}"
            if len(ckey) > 255:  # the ledger's container_key column
                raise V.Invalid(V.R_ATTRIBUTE, f"{name}: namespace/pod/container is "
                                f"{len(ckey)} characters long, more than 255")
        except V.Invalid as e:
            b.reject(e.code, e.message)
            continue
        sid = series_id(q.series_key, GAUGE, res.cluster, res.node, "", ckey, profile, device)
        s = b.series.get(sid)
        if s is None:
            meta = json.dumps({"namespace": ns, "pod": pod, "container": container},
                              sort_keys=True, separators=(",", ":"))
            s = b.series[sid] = SeriesRow(sid, q.metric, q.quantity, q.scope, GAUGE, res.cluster,
                                          res.node, "", ckey, device, profile, ns, meta, t)
        b.points.append((sid, 0, t, value, nk))


def _decode_claims(b: Batch, name: str, data, q: Quantity, res: _Resource, newest_ns: int,
                   oldest_ns: int) -> None:
    """Claim capacities: one series per (claim, mounted or not). Key: pod_uid = the claim's
    uid (so, like a pod's, its namespace can never change: the store holds it), class = its
    storage class, direction = `mounted`/`unmounted`; the claim's names go in the series'
    metadata. Both mount states are sent every export (0 for the one that does not hold), so
    a claim switching is billed on each side to the export, with no overlap."""
    nk = node_key(res.cluster, res.node)
    for dp in data.data_points:
        if dp.flags & 1:
            continue
        a = _attrs(dp.attributes)
        kind = dp.WhichOneof("value")
        value = dp.as_double if kind == "as_double" else float(dp.as_int) if kind == "as_int" else None
        t = dp.time_unix_nano
        ns, claim, uid = (a.get(k, "") for k in ("k8s.namespace.name",
                                                  "k8s.persistentvolumeclaim.name",
                                                  "k8s.persistentvolumeclaim.uid"))
        sc, mounted = a.get("k8s.storageclass.name", ""), a.get(ATTR_MOUNTED, "")
        try:
            if value is None or not math.isfinite(value) or value < 0:
                raise V.Invalid(V.R_VALUE, f"{name}: value {value} is not a size")
            V.check_value(name, "pv.capacity", False, value, 0, t)
            if t == 0 or t > newest_ns:
                raise V.Invalid(V.R_VALUE if t == 0 else V.R_FUTURE, f"{name}: time_unix_nano "
                                f"{'is 0' if t == 0 else 'is in the future'}")
            if t < oldest_ns:
                raise V.Invalid(V.R_RETENTION, f"{name}: time is older than the ledger keeps raw points")
            if not ns or not claim or not uid:
                raise V.Invalid(V.R_ATTRIBUTE, f"{name}: a claim needs k8s.namespace.name, "
                                "k8s.persistentvolumeclaim.name and .uid")
            if mounted not in ("true", "false"):
                raise V.Invalid(V.R_ATTRIBUTE, f"{name}: {ATTR_MOUNTED} must be true or false")
            V.check_resource_strings({"k8s.namespace.name": ns, "k8s.pod.name": claim,
                                      "k8s.pod.uid": uid}, ())
            V.check_point_attribute("k8s.storageclass.name", sc, 64)
            V.check_point_attribute("k8s.persistentvolume.name", a.get("k8s.persistentvolume.name", ""), 253)
            V.check_point_attribute(ATTR_ACCESS_MODE, a.get(ATTR_ACCESS_MODE, ""), 32)
        except V.Invalid as e:
            b.reject(e.code, e.message)
            continue
        state = "mounted" if mounted == "true" else "unmounted"
        sid = series_id(q.series_key, GAUGE, res.cluster, res.node, uid, "", state, sc)
        meta = json.dumps({"namespace": ns, "pod": claim, "container": "",
                           "workload_kind": "persistentvolumeclaim",
                           "workload": claim if state == "mounted" else UNMOUNTED,
                           "volume": a.get("k8s.persistentvolume.name", ""),
                           "access_modes": a.get(ATTR_ACCESS_MODE, ""), "labels": {}},
                          sort_keys=True, separators=(",", ":"))
        s = b.series.get(sid)
        if s is None:
            s = b.series[sid] = SeriesRow(sid, q.metric, q.quantity, q.scope, GAUGE, res.cluster,
                                          res.node, uid, "", sc, state, ns, meta, t)
        if t > s.seen_ns or (t == s.seen_ns and meta > s.meta):
            s.seen_ns, s.meta = t, meta
        b.points.append((sid, 0, t, value, nk))


def hour_of(t_ns: int) -> int:
    """Start of the UTC hour containing t, in seconds since the epoch."""
    return (t_ns // NANOS_PER_HOUR) * 3600
