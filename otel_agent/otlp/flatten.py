"""OTLP data flattened to rows, from either side of the wire.

`once` prints what the agent would send (SDK objects); the demo prints what a receiver got
(protobuf). Both go through the same rows so the table is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from opentelemetry.sdk.metrics.export import Histogram, MetricsData, Sum


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


def flatten_sdk(data: MetricsData) -> Iterator[Point]:
    for rm in data.resource_metrics:
        res = {k: str(v) for k, v in rm.resource.attributes.items()}
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                d = m.data
                if isinstance(d, Histogram):
                    for p in d.data_points:
                        yield Point(res, m.name, m.unit or "", dict(p.attributes), float(p.sum),
                                    "histogram", p.start_time_unix_nano, p.time_unix_nano,
                                    p.count, tuple(p.bucket_counts), tuple(p.explicit_bounds),
                                    temporality=d.aggregation_temporality.name.lower())
                else:
                    kind = "sum" if isinstance(d, Sum) else "gauge"
                    for p in d.data_points:
                        yield Point(res, m.name, m.unit or "", dict(p.attributes), float(p.value),
                                    kind, p.start_time_unix_nano, p.time_unix_nano,
                                    monotonic=bool(getattr(d, "is_monotonic", False)),
                                    temporality=(d.aggregation_temporality.name.lower()
                                                 if isinstance(d, Sum) else ""))


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
