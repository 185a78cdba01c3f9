"""OTLP data flattened to rows, from either side of the wire.

`once` prints what the agent would send, the demo what a receiver got: both are protobuf
requests and go through the same rows, so the table is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping


@dataclass(frozen=True, slots=True)
class Point:
    resource: Mapping[str, str]
    name: str
    unit: str
    attributes: Mapping[str, str]
    value: float  # for histograms: the sum
    kind: str  # sum | gauge | histogram
    start_time_unix_nano: int
    time_unix_nano: int
    count: int = 0  # histograms only
    bucket_counts: tuple[int, ...] = ()
    explicit_bounds: tuple[float, ...] = ()
    monotonic: bool = False
    temporality: str = ""


def _anyvalue(v: Any) -> str:
    which = v.WhichOneof("value")
    return "" if which is None else str(getattr(v, which))


_TEMPORALITY = {1: "delta", 2: "cumulative"}


def flatten_pb(request: Any) -> Iterator[Point]:
    """Rows of an ExportMetricsServiceRequest (or anything with .resource_metrics)."""
    for rm in request.resource_metrics:
        res = {kv.key: _anyvalue(kv.value) for kv in rm.resource.attributes}
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                which = m.WhichOneof("data")
                d = getattr(m, which)
                for p in d.data_points:
                    attrs = {kv.key: _anyvalue(kv.value) for kv in p.attributes}
                    if which == "histogram":
                        yield Point(res, m.name, m.unit, attrs, p.sum, "histogram",
                                    p.start_time_unix_nano, p.time_unix_nano, p.count,
                                    tuple(p.bucket_counts), tuple(p.explicit_bounds),
                                    temporality=_TEMPORALITY.get(d.aggregation_temporality, ""))
                    elif which in ("sum", "gauge"):
                        value = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                        yield Point(res, m.name, m.unit, attrs, float(value), which,
                                    p.start_time_unix_nano, p.time_unix_nano,
                                    monotonic=bool(getattr(d, "is_monotonic", False)),
                                    temporality=_TEMPORALITY.get(
                                        getattr(d, "aggregation_temporality", 0), ""))
