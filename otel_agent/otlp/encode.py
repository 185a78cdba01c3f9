"""Samples → OTLP protobuf bytes, with each resource's bytes kept between cycles. Pure: no I/O.

Why not the SDK's data model and encoder: building `MetricsData` and serialising it costs
~33 ms for 400 resources × 12 metrics here (DESIGN, "What things cost"), rebuilt every cycle
although nothing but values and times changes. In OTLP's protobuf every changing field of a
data point has a fixed width: `start_time_unix_nano` and `time_unix_nano` are fixed64,
`as_double` a double, a histogram's `count` fixed64, `sum` a double and `bucket_counts` packed
fixed64. So a resource's encoded `ResourceMetrics` keeps its length from one cycle to the next:
it is built once, with the offset of every value remembered, and each cycle only writes the
values that changed into it (`struct.pack_into`); the time goes in between the pieces of the
buffer when the request is joined (see _Layout). It is built again only when its series
(metric, attributes, order) or its metadata (the pod's or the node's, compared by identity and
then by value) change.

The message layout is the same the SDK's encoder writes (fields in number order), and a test
decodes both and compares them. Deliberate differences: a zero histogram `count` is written out
(fixed width) where protobuf would leave the field out, and every number is an `as_double`
(the SDK wrote a Python int as `as_int`; the value is the same).

One OTLP resource per container, per pod, per node, and one for the node's kubepods cgroup
(semconv's `pods` system container). The instrument of each metric is the one its row in
otel_agent.metrics names: counters go out as cumulative monotonic sums, UpDownCounters
(semconv's choice for memory, requests, limits, allocatable) as cumulative sums with
is_monotonic false, gauges as gauges. Sums carry a start time that is stable for the life of
the series (DESIGN rule 2):

* cgroup-file counters count from the cgroup's creation, which is after the node booted, so
  their start time is the node's boot time: the same across agent restarts, so a restarted
  agent continues each series instead of starting (and double-billing) a new one. A cgroup
  re-created under the same pod is a new series because `otel_agent.cgroup.id` differs.
* BPF counters count from when the programs were attached: that is their start time.
* the agent's own counters count from the agent's start.
"""

from __future__ import annotations

import operator
import struct
from array import array
from itertools import groupby
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

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

SCOPE_NAME = "otel_agent"
SCOPE_VERSION = __version__
# Under the Collector's default gRPC limit (4 MiB, `max_recv_msg_size_mib`) with room for
# framing; a request is split between resources, never inside one.
MAX_REQUEST_BYTES = 3 << 20

_CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_NODE = Scope.NODE
_EXPORTED_BY_SCOPE = {sc: frozenset(k for k, m in METRICS.items() if sc in m.names) for sc in Scope}
_is = operator.is_
_CGROUP = operator.itemgetter(0)
_METRIC = operator.itemgetter(1)


def _same_series(a, b) -> bool:
    """Do two samples (this cycle's and the last one's at the same place) stand for the same
    series, encoded the same way? Then only their values differ."""
    if a is b:
        return True
    if a[1] != b[1] or a[-1] != b[-1] or type(a) is not type(b):
        return False
    return type(a) is Sample or (a.explicit_bounds == b.explicit_bounds
                                 and len(a.bucket_counts) == len(b.bucket_counts))

_Q = struct.Struct("<Q")
_D = struct.Struct("<d")
_pack_d = _D.pack_into
_pack_q = _Q.pack_into


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
    """Everything one collection cycle produced, ready to encode."""

    time_unix_nano: int
    refs: Mapping[CgroupId, CgroupRef]
    samples: Sequence[Sample]
    histograms: Sequence[HistogramSample] = ()
    pods: Mapping[PodUid, PodMeta] | None = None
    node: NodeMeta | None = None


class Encoded:
    """One cycle's export: `ResourceMetrics` fields of an ExportMetricsServiceRequest.

    A request is the concatenation of some of `chunks` (field 1 of the request, repeated), so
    `requests()` splits between resources. The bytes are valid until the next encode().

    The Encoder hands over another form, the one the exporter uses: per request, the pieces of
    its bytes between the points' times (views of a buffer the encoder keeps) and the time, so
    a request is `time.join(pieces)`, one call in C. `chunks` is then made only when asked for.
    """

    __slots__ = ("_chunks", "points", "_time", "_batches", "_limit", "_resources")

    def __init__(self, chunks: list[bytes | bytearray] | None = None, points: int = 0) -> None:
        self._chunks = chunks if chunks is not None else []
        self.points = points
        self._time = b""
        self._batches: list[list] | None = None
        self._limit = 0
        self._resources: list[_Resource] = []

    @classmethod
    def _laid_out(cls, time: bytes, layout: _Layout, points: int) -> Encoded:
        e = cls(None, points)
        e._chunks = None
        e._time, e._batches, e._limit, e._resources = time, layout.batches, layout.limit, layout.resources
        return e

    @property
    def chunks(self) -> list[bytes | bytearray]:
        if self._chunks is None:  # each resource's bytes, its points' times written in
            out = []
            for r in self._resources:
                b = bytearray(r.buf)
                for off in r.offsets:
                    b[off:off + 8] = self._time
                out.append(b)
            self._chunks = out
        return self._chunks

    def requests(self, max_bytes: int = MAX_REQUEST_BYTES) -> list[bytes]:
        if self._batches is not None and max_bytes >= self._limit:
            t = self._time
            return [t.join(pieces) for pieces in self._batches]
        out: list[bytes] = []
        batch: list[bytes | bytearray] = []
        size = 0
        for c in self.chunks:
            if batch and size + len(c) > max_bytes:
                out.append(b"".join(batch))
                batch, size = [], 0
            batch.append(c)
            size += len(c)
        if batch:
            out.append(b"".join(batch))
        return out

    def request(self) -> bytes:
        """All of it as one request (for `once` and tests)."""
        if self._batches is not None:
            return b"".join(self.requests())
        return b"".join(self.chunks)


# --- protobuf primitives --------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


def _string(tag: int, s: str) -> bytes:
    return _len_field(tag, s.encode()) if s else b""


def _key_value(key: str, value: str) -> bytes:
    # KeyValue{key=1, value=2: AnyValue{string_value=1}}
    return _string(0x0A, key) + _len_field(0x12, _string(0x0A, value))


def _attributes(tag: int, attrs: Iterable[tuple[str, str]]) -> bytes:
    return b"".join(_len_field(tag, _key_value(k, str(v))) for k, v in attrs)


_SCOPE = _len_field(0x0A, _string(0x0A, SCOPE_NAME) + _string(0x12, SCOPE_VERSION))


def _number_point(start_ns: int | None, attrs: tuple) -> tuple[bytes, int]:
    """NumberDataPoint{start=2 fixed64, time=3 fixed64, as_double=4, attributes=7} and the
    offset of the time's 8 bytes in it (the value's follow its tag, at +9). Gauges carry no
    start time (optional in OTLP; the SDK leaves it out too)."""
    start = b"" if start_ns is None else b"\x11" + _Q.pack(start_ns)
    body = start + b"\x19" + bytes(8) + b"\x21" + bytes(8) + _attributes(0x3A, attrs)
    return body, len(start) + 1


def _histogram_point(start_ns: int, h: HistogramSample) -> tuple[bytes, int]:
    """HistogramDataPoint{start=2, time=3, count=4 fixed64, sum=5 double, bucket_counts=6
    packed fixed64, explicit_bounds=7 packed double, attributes=9}. Log2 buckets in the kernel
    keep no min/max; both are optional in OTLP."""
    n = len(h.bucket_counts)
    buckets = b"\x32" + _varint(8 * n) + bytes(8 * n)
    bounds = _len_field(0x3A, struct.pack(f"<{len(h.explicit_bounds)}d", *h.explicit_bounds)) \
        if h.explicit_bounds else b""
    body = (b"\x11" + _Q.pack(start_ns) + b"\x19" + bytes(8) + b"\x21" + bytes(8) + b"\x29" + bytes(8)
            + buckets + bounds + _attributes(0x4A, h.attributes))
    return body, 10


def _metric_header(m: MetricDef, scope: Scope) -> tuple[bytes, int, bytes]:
    """(name/description/unit fields, the data field's tag, fields after the points)."""
    head = _string(0x0A, m.names[scope]) + _string(0x12, m.description) + _string(0x1A, m.unit)
    if m.instrument is Instrument.COUNTER:
        return head, 0x3A, b"\x10\x02\x18\x01"  # Sum: temporality cumulative, monotonic
    if m.instrument is Instrument.UPDOWN:
        return head, 0x3A, b"\x10\x02"  # Sum: cumulative, not monotonic
    if m.instrument is Instrument.GAUGE:
        return head, 0x2A, b""
    return head, 0x4A, b"\x10\x02"  # Histogram: cumulative


_HEADERS: dict[tuple[str, Scope], tuple[bytes, int, bytes]] = {
    (k, sc): _metric_header(m, sc) for k, m in METRICS.items() for sc in m.names
}


class _Resource:
    """A resource's encoded bytes, and per point in sample order the offset of its time.

    The times are never written into `buf` (see _Layout); the values are, in place. Once laid
    out, `buf` is a view of the resource's place in its request's buffer."""

    __slots__ = ("pod", "node", "samples", "buf", "offsets", "hist")

    def __init__(self, pod: object, node: object, samples: list, buf: bytearray,
                 offsets: array, hist: list) -> None:
        self.pod = pod
        self.node = node
        self.samples = samples  # last cycle's, in order: the series are theirs
        self.buf = buf
        self.offsets = offsets
        self.hist = hist


class _Layout:
    """The resources of a cycle in order, end to end in one buffer per request (split between
    resources under `limit` bytes), and per request the pieces of that buffer between the
    points' times, in byte order: the request is `time.join(pieces)`. Writing the time into
    each point was a Python statement per point (~4,400 at 100 pods); the join is one call in
    C. Made again only when a resource is built or the resources or their order change."""

    __slots__ = ("keys", "resources", "batches", "limit")

    def __init__(self, keys: list, resources: list[_Resource], limit: int) -> None:
        self.keys = keys
        self.resources = resources
        self.limit = limit
        self.batches: list[list[memoryview]] = []
        groups: list[list[_Resource]] = []
        size = 0
        for r in resources:
            if not groups or (groups[-1] and size + len(r.buf) > limit):
                groups.append([])
                size = 0
            groups[-1].append(r)
            size += len(r.buf)
        for group in groups:
            whole = memoryview(bytearray(b"".join(r.buf for r in group)))
            pieces = []
            at = base = 0
            for r in group:
                n = len(r.buf)
                r.buf = whole[base:base + n]  # values are written here from now on
                for off in sorted(r.offsets):
                    pieces.append(whole[at:base + off])
                    at = base + off + 8
                base += n
            pieces.append(whole[at:])
            self.batches.append(pieces)


class Encoder:
    """Encodes Snapshots to OTLP bytes; keeps each resource's bytes between cycles."""

    def __init__(self, *, node_name: str | None, extra_attributes: Mapping[str, str] = {},
                 start_times: StartTimes) -> None:
        self._node_name = node_name
        self._extra = dict(extra_attributes)
        self.start_times = start_times
        self._resources: dict[int, _Resource] = {}
        self._layout: _Layout | None = None
        starts = {"cgroup": start_times.cgroup, "ebpf": start_times.ebpf, "agent": start_times.agent}
        self._start_of = {k: starts[family(m)] for k, m in METRICS.items()}
        self.rebuilt = 0  # resources (re)built in the last encode(): for tests and the profile

    def forget(self, ids: Iterable[CgroupId]) -> None:
        for i in ids:
            self._resources.pop(i, None)

    def encode(self, snap: Snapshot) -> Encoded:
        pods = snap.pods or {}
        refs = snap.refs
        exported = _EXPORTED_BY_SCOPE

        # resource key -> (its samples in order, first ref). Every NODE-scope sample (the root
        # cgroup's, the agent's own, BPF map health) goes on the one node resource (key -1).
        # Samples mostly arrive grouped by cgroup: remember the last lookup.
        groups: dict[int, tuple[list, CgroupRef]] = {}
        for cid, run in groupby(snap.samples, _CGROUP):
            ref = refs.get(cid)
            if ref is None:
                continue
            names = exported[ref.scope]
            key = -1 if ref.scope is _NODE else cid
            g = groups.get(key)
            if g is None:
                g = groups[key] = ([], ref)
            run = list(run)
            if names.issuperset(map(_METRIC, run)):
                g[0].extend(run)
            else:
                g[0].extend([s for s in run if s[1] in names])
        for h in snap.histograms:
            ref = refs.get(h.cgroup_id)
            if ref is None or h.metric not in exported[ref.scope]:
                continue
            key = -1 if ref.scope is _NODE else h.cgroup_id
            g = groups.get(key)
            if g is None:
                g = groups[key] = ([], ref)
            g[0].append(h)

        node = snap.node
        resources = self._resources
        rebuilt = 0
        points = 0
        order = []
        for key, (vals, ref) in groups.items():
            if not vals:
                continue
            pod = pods.get(ref.pod_uid) if ref.pod_uid else None
            r = resources.get(key)
            prev = r.samples if r is not None else None
            # Every sample the very one of the last cycle (a file that did not change is not
            # parsed again, see cgroups/reader.py)? Then only the time moves.
            same = prev is not None and len(prev) == len(vals) and all(map(_is, vals, prev))
            if (prev is None or (r.pod is not pod and r.pod != pod)
                    or (r.node is not node and r.node != node)
                    or not (same or (len(prev) == len(vals) and all(map(_same_series, vals, prev))))):
                r = resources[key] = self._build(ref, pod, node, vals)
                rebuilt += 1
                _write_values(r, vals, None)
            else:  # the same metadata, perhaps in a new object (a watch event that changed
                r.pod, r.node = pod, node  # nothing we export): identity is checked first
                if not same:
                    _write_values(r, vals, prev)
            r.samples = vals
            points += len(vals)
            order.append(key)
        # Forget resources that did not appear this cycle.
        if len(resources) > len(groups):
            for key in [k for k in resources if k not in groups]:
                del resources[key]
        layout = self._layout
        if rebuilt or layout is None or layout.keys != order:
            layout = self._layout = _Layout(order, [resources[k] for k in order], MAX_REQUEST_BYTES)
        self.rebuilt = rebuilt
        return Encoded._laid_out(_Q.pack(snap.time_unix_nano), layout, points)

    def _build(self, ref: CgroupRef, pod: PodMeta | None, node: NodeMeta | None,
               vals: list) -> _Resource:
        attrs = resource_attributes(ref, pod, node, node_name=self._node_name, extra=self._extra)
        resource = _len_field(0x0A, _attributes(0x0A, attrs.items()))
        start_of = self._start_of
        # Points of one metric (name and scope) are contiguous in a Metric message; keep the
        # first-seen order of metrics and, within each, the order of the samples.
        scope = ref.scope
        by_metric: dict[tuple[str, Scope], list[int]] = {}
        for i, v in enumerate(vals):
            by_metric.setdefault((v[1], scope), []).append(i)
        metrics: list[bytes] = []
        offsets = [0] * len(vals)
        hist: list[tuple[struct.Struct, int] | None] = [None] * len(vals)
        # Offsets are first relative to each point's bytes, then made absolute as the nesting
        # wraps them: remember (metric index, offset inside the metric) per point.
        where: list[tuple[int, int]] = [(0, 0)] * len(vals)
        for mi, ((mkey, sc), idx) in enumerate(by_metric.items()):
            head, data_tag, tail = _HEADERS[(mkey, sc)]
            pts: list[bytes] = []
            pos = 0
            for i in idx:
                v = vals[i]
                if type(v) is HistogramSample:
                    body, t_off = _histogram_point(start_of[mkey], v)
                    n = len(v.bucket_counts)
                    # buckets after time(8), count tag+8, sum tag+8, their tag and length
                    hist[i] = (_buckets_struct(n), 8 + 9 + 9 + 1 + len(_varint(8 * n)))
                else:
                    body, t_off = _number_point(None if data_tag == 0x2A else start_of[mkey],
                                                v[3])
                lenpre = _varint(len(body))
                where[i] = (mi, pos + 1 + len(lenpre) + t_off)  # inside the data message
                pts.append(b"\x0a" + lenpre + body)
                pos += 1 + len(lenpre) + len(body)
            data = b"".join(pts) + tail
            data_pre = bytes((data_tag,)) + _varint(len(data))
            metric = head + data_pre + data
            # shift the recorded offsets by what precedes the data message inside the metric
            shift = len(head) + len(data_pre)
            for i in idx:
                where[i] = (mi, where[i][1] + shift)
            metrics.append(metric)
        # ScopeMetrics{scope=1, metrics=2}
        sm_parts: list[bytes] = [_SCOPE]
        metric_pos: list[int] = []
        pos = len(_SCOPE)
        for m in metrics:
            pre = b"\x12" + _varint(len(m))
            metric_pos.append(pos + len(pre))
            sm_parts.append(pre + m)
            pos += len(pre) + len(m)
        sm = b"".join(sm_parts)
        sm_pre = b"\x12" + _varint(len(sm))
        rm = resource + sm_pre + sm  # ResourceMetrics{resource=1, scope_metrics=2}
        rm_pre = b"\x0a" + _varint(len(rm))  # ExportMetricsServiceRequest.resource_metrics=1
        base = len(rm_pre) + len(resource) + len(sm_pre)
        for i, (mi, off) in enumerate(where):
            offsets[i] = base + metric_pos[mi] + off
        return _Resource(pod, node, vals, bytearray(rm_pre + rm), array("I", offsets), hist)


def _write_values(r: _Resource, vals: list, prev: list | None) -> None:
    """Write into r.buf the values of `vals` that are not the very objects of `prev` (all of
    them without `prev`): the buffer then holds vals' values. Times are not in the buffer."""
    buf = r.buf
    for off, hist, v, p in zip(r.offsets, r.hist, vals, prev or vals):
        if v is p and prev is not None:
            continue
        # the value's tag (as_double, 0x21) is at off + 8 since the build, the value at off + 9
        if hist is None:
            _pack_d(buf, off + 9, v[2])
        else:  # the count after the time, then the sum after its tag, then the buckets
            _pack_q(buf, off + 9, v.count)
            _pack_d(buf, off + 18, v.sum)
            hist[0].pack_into(buf, off + hist[1], *v.bucket_counts)


_BUCKETS: dict[int, struct.Struct] = {}


def _buckets_struct(n: int) -> struct.Struct:
    st = _BUCKETS.get(n)
    if st is None:
        st = _BUCKETS[n] = struct.Struct(f"<{n}Q")
    return st
