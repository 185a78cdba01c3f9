"""OTLP metrics to Prometheus remote write, as the Collector's `prometheus_remote_write` exporter
does it with our gateway's settings: test scaffolding, not product.

The dashboards query what lands in Mimir or Prometheus after the gateway, so their test needs
the series exactly as the exporter writes them: a renamed metric, a lost label or a histogram
shaped differently must fail there, not in front of a user. No Collector binary can be had on
this machine (no registry ships otelcol-contrib), so this module follows the exporter's rules,
read from the source, and applies them to what our agent and cost processor really put on the
wire (protobuf `ExportMetricsServiceRequest`s).

Source read (the newest stored snapshot of open-telemetry/opentelemetry-collector-contrib,
which the gateway's target, **otelcol-contrib v0.162.0**, builds on; and prometheus/otlptranslator
v1.0.0, which contrib's translator calls for names):

- `exporter/prometheusremotewriteexporter/config.go`: the settings read from
  collector-config/gateway.yaml below: `namespace`, `external_labels`,
  `resource_constant_labels` (`included`/`excluded` wildcard patterns; the deprecated
  `resource_to_telemetry_conversion.enabled: true` equals `included: ["*"]`), `target_info`
  (default enabled), `disable_scope_info`, `translation_strategy` (default
  `UnderscoreEscapingWithSuffixes`, what the deprecated `add_metric_suffixes: true` was).
  `NoUTF8EscapingWithSuffixes` and `NoTranslation` need remote write 2.0, which this
  module does not speak: it refuses them.
- `pkg/resourcetotelemetry/resource_to_telemetry.go`: resource attributes matching
  `resource_constant_labels` are copied onto every data point's attributes, replacing a
  point attribute of the same key (`joinAttributeMaps` uses `PutEmpty`).
- `pkg/translator/prometheusremotewrite/helper.go` and `number_data_points.go`:
    * only cumulative sums and histograms are kept (`isValidAggregationTemporality`): delta
      ones are dropped; gauges always pass;
    * a gauge and a sum each become one series; a histogram becomes `<name>_bucket` (one per
      bound, `le` formatted like Go's `strconv.FormatFloat(b, 'f', -1, 64)`, counts made
      cumulative, plus `le="+Inf"` = count), `<name>_sum` (only when the point has a sum) and
      `<name>_count`; a summary becomes `<name>{quantile=…}`, `_sum`, `_count`;
    * labels (`createAttributes`): point attributes sorted by key, each key through the label
      namer; keys that collide after sanitising are joined with `;`, a repeated value once;
      `service.namespace/service.name` → `job`, `service.instance.id` → `instance`;
      external labels only where no attribute set the label; then `__name__`;
    * `otel_scope_name` and `otel_scope_version` are added from the instrumentation scope
      (empty ones are left out). The gateway leaves `disable_scope_info` unset; with it set,
      this module leaves both out, where the newest helper.go still adds them to histogram
      points (it then only drops the `otel_scope_info` series);
    * timestamps: nanoseconds → milliseconds; a point flagged "no recorded value" is the
      stale NaN (0x7ff0000000000002);
    * `target_info` (unless disabled): one per resource, value 1, at the newest point's time,
      labelled with the resource's attributes except service.name/namespace/instance.id, plus
      job/instance; left out when the resource has no non-identifying attribute or no
      job/instance at all;
    * the start time is not written (`_created` series are gone from the newest exporter).
- otlptranslator `metric_namer.go`, `unit_namer.go`, `label_namer.go`, `strconv.go` (names):
    * metric name: split on every character outside `[a-zA-Z0-9:]` (so `_` and `.` both
      separate and runs collapse), append the unit's token unless the name already has it
      (`s` → `seconds`, `By` → `bytes`, … `{anything}` → nothing, `1` → nothing, `a/b` →
      `a_per_b` with `s` → `second`), append `total` for monotonic sums (moved to the end if
      the name has it), `ratio` for gauges of unit `1`, prefix `namespace`, join with `_`,
      `_` before a leading digit. A non-monotonic sum is named like a gauge;
    * label name: characters outside `[a-zA-Z0-9]` → `_` (runs collapse to one; contrib keeps
      runs only without its drop-sanitisation gate, which makes no difference to our keys,
      which have no runs), `key_` before a leading digit, `__x__` kept reserved.

What this module does not do, because the gateway does not ask for it or our agents never send
it: exponential histograms (native histograms; ValueError), exemplars, metadata
(`send_metadata`), remote write 2.0, the `otel_scope_info` series (only for scopes with
attributes; ours have none), NHCB conversion.

The protobuf messages (prompb's `WriteRequest`, `TimeSeries`, `Label`, `Sample`, field numbers
from prometheus/prompb/types.proto and remote.proto) are built here with the protobuf runtime
from a descriptor, and the body is snappy-compressed in the block format remote write uses.
"""

from __future__ import annotations

import fnmatch
import math
import re
import struct
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import cramjam
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import \
    ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2

GATEWAY = Path(__file__).resolve().parents[2] / "collector-config" / "gateway.yaml"
EXPORTER = "prometheus_remote_write"
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
NO_RECORDED_VALUE = metrics_pb2.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
IDENTIFYING = ("service.namespace", "service.name", "service.instance.id")


# --- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the exporter's config decides about the translation (config.go)."""

    namespace: str = ""
    external_labels: Mapping[str, str] = field(default_factory=dict)
    included: tuple[str, ...] = ()  # resource attributes copied to labels (wildcards)
    excluded: tuple[str, ...] = ()
    target_info: bool = True
    scope_info: bool = True
    with_suffixes: bool = True


def gateway_settings(path: Path = GATEWAY, exporter: str = EXPORTER) -> Settings:
    """The settings of the gateway's remote-write exporter, as the Collector would read them."""
    cfg = yaml.safe_load(path.read_text())
    exporters = cfg.get("exporters") or {}
    if exporter not in exporters:  # the deprecated alias
        exporter = next(k for k in exporters if k.split("/")[0] in (EXPORTER, "prometheusremotewrite"))
    c = exporters[exporter] or {}
    rcl = c.get("resource_constant_labels") or {}
    included, excluded = tuple(rcl.get("included") or ()), tuple(rcl.get("excluded") or ())
    if not rcl and (c.get("resource_to_telemetry_conversion") or {}).get("enabled"):
        included = ("*",)  # resourcetotelemetry README: the same as included: ["*"]
    strategy = c.get("translation_strategy")
    if strategy is None:
        with_suffixes = c.get("add_metric_suffixes", True)
    elif strategy in ("UnderscoreEscapingWithSuffixes", "UnderscoreEscapingWithoutSuffixes"):
        with_suffixes = strategy == "UnderscoreEscapingWithSuffixes"
    else:
        raise ValueError(f"translation_strategy {strategy}: needs remote write 2.0, not modelled here")
    return Settings(
        namespace=c.get("namespace") or "",
        external_labels=dict(c.get("external_labels") or {}),
        included=included, excluded=excluded,
        target_info=(c.get("target_info") or {}).get("enabled", True),
        scope_info=not c.get("disable_scope_info", False),
        with_suffixes=bool(with_suffixes),
    )


# --- names (otlptranslator) ---------------------------------------------------------------

UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds",
    "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
    "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
    "Cel": "celsius", "Hz": "hertz", "1": "", "%": "percent",
}
PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month",
             "y": "year"}
_METRIC_SEP = re.compile(r"[^a-zA-Z0-9:]+")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9]+")


def _unit_suffixes(unit: str) -> tuple[str, str]:
    main_otel, _, per_otel = unit.partition("/")
    main_otel, per_otel = main_otel.strip(), per_otel.strip()
    main = UNITS.get(main_otel, main_otel) if main_otel and not set("{}") & set(main_otel) else ""
    per = ""
    if per_otel and not set("{}") & set(per_otel):
        per = PER_UNITS.get(per_otel, per_otel)
    if per:
        per = "per_" + per

    def clean(u: str) -> str:  # cleanUpUnit
        return re.sub(r"_+", "_", re.sub(r"[^a-zA-Z0-9:]", "_", u)).removeprefix("_")

    return clean(main), clean(per)


def metric_name(name: str, unit: str, kind: str, settings: Settings) -> str:
    """`kind`: gauge, counter (monotonic sum), updown (non-monotonic sum), histogram, summary."""
    if not settings.with_suffixes:
        tokens = [t for t in re.split(r"[^a-zA-Z0-9:_]+", name) if t]
        out = "_".join(tokens)
        if settings.namespace:
            out = "_".join(t for t in re.split(r"[^a-zA-Z0-9:_]+", settings.namespace) if t) + "_" + out
        elif out[:1].isdigit():
            out = "_" + out
        return out
    tokens = [t for t in _METRIC_SEP.split(name) if t]
    main, per = _unit_suffixes(unit)
    if main in tokens:
        main = ""
    if per == "per_":
        per = ""
    else:
        per = per.removesuffix("_")
        if per in tokens:
            per = ""
    if per:
        main = main.removesuffix("_")
    tokens += [t for t in (main, per) if t]
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind == "gauge":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    if settings.namespace:
        tokens.insert(0, settings.namespace)
    out = "_".join(tokens)
    if out[:1].isdigit():
        out = "_" + out
    if not out.strip("_"):
        raise ValueError(f"metric {name!r} normalises to an invalid name {out!r}")
    return out


def label_name(key: str) -> str:
    if not key:
        raise ValueError("label name is empty")
    reserved = len(key) >= 4 and key.startswith("__") and key.endswith("__")
    inner = key[2:-2] if reserved else key
    out = _LABEL_BAD.sub("_", inner)
    if reserved:
        out = f"__{out}__"
    if out[0].isdigit():
        out = "key_" + out
    if not out.strip("_"):
        raise ValueError(f"label {key!r} normalises to an invalid name {out!r}")
    return out


def le_value(bound: float) -> str:
    """Go's strconv.FormatFloat(bound, 'f', -1, 64): shortest round-trip digits, no exponent."""
    if math.isinf(bound):
        return "+Inf" if bound > 0 else "-Inf"
    text = format(Decimal(repr(bound)).normalize(), "f")
    return "0" if text in ("-0", "0") else text


# --- values and attributes ----------------------------------------------------------------


def _any_string(v) -> str:
    """pcommon.Value.AsString for the value kinds OTLP attributes carry."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        return repr(v.double_value)
    if kind is None:
        return ""
    raise ValueError(f"attribute value of kind {kind}: not modelled")


def _attrs(kvs) -> dict[str, str]:
    return {kv.key: _any_string(kv.value) for kv in kvs}


def _matches(key: str, patterns: Sequence[str]) -> bool:
    # fnmatch's [] classes are not contrib's; our patterns use only * and ?
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def promoted(resource: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """Resource attributes that resource_constant_labels copies onto each point."""
    if not settings.included and not settings.excluded:
        return {}
    include = settings.included or ("*",)
    return {k: v for k, v in resource.items()
            if _matches(k, include) and not _matches(k, settings.excluded)}


def labels_for(resource: Mapping[str, str], point_attrs: Mapping[str, str],
               settings: Settings, scope: tuple[str, str], name: str,
               extra: Sequence[tuple[str, str]] = ()) -> tuple[tuple[str, str], ...]:
    attrs = {**point_attrs, **promoted(resource, settings)}  # joinAttributeMaps: resource wins
    out: dict[str, str] = {}
    for key in sorted(attrs):
        final, value = label_name(key), attrs[key]
        if final in out:
            if out[final] != value:
                out[final] = out[final] + ";" + value
        else:
            out[final] = value
    if "service.name" in resource:
        job = resource["service.name"]
        if "service.namespace" in resource:
            job = f"{resource['service.namespace']}/{job}"
        out["job"] = job
    if "service.instance.id" in resource:
        out["instance"] = resource["service.instance.id"]
    for k, v in settings.external_labels.items():
        out.setdefault(k, v)
    if settings.scope_info:
        scope_name, scope_version = scope
        if scope_name:
            out["otel_scope_name"] = scope_name
        if scope_version:
            out["otel_scope_version"] = scope_version
    for k, v in extra:
        out[k] = v
    out["__name__"] = name
    return tuple(sorted(out.items()))


# --- conversion ---------------------------------------------------------------------------

Series = dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]


@dataclass
class Converted:
    series: Series = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # metric names dropped, and why

    def add(self, labels: tuple[tuple[str, str], ...], t_ms: int, value: float) -> None:
        self.series.setdefault(labels, []).append((t_ms, value))


def _ms(t_ns: int) -> int:
    return t_ns // 1_000_000


def _number(p) -> float:
    if p.flags & NO_RECORDED_VALUE:
        return STALE_NAN
    return float(p.as_int) if p.WhichOneof("value") == "as_int" else p.as_double


def convert(requests: Iterable[ExportMetricsServiceRequest], settings: Settings) -> Converted:
    out = Converted()
    for req in requests:
        for rm in req.resource_metrics:
            resource = _attrs(rm.resource.attributes)
            newest = 0
            for sm in rm.scope_metrics:
                scope = (sm.scope.name, sm.scope.version)
                for m in sm.metrics:
                    newest = max(newest, _convert_metric(out, m, resource, scope, settings))
            if settings.target_info and newest:
                _target_info(out, resource, settings, newest)
    return out


def _convert_metric(out: Converted, m, resource, scope, settings: Settings) -> int:
    kind = m.WhichOneof("data")
    newest = 0
    if kind == "gauge":
        points, mkind = m.gauge.data_points, "gauge"
    elif kind == "sum":
        if m.sum.aggregation_temporality != CUMULATIVE:
            out.dropped.append(f"{m.name}: delta sum")
            return 0
        points, mkind = m.sum.data_points, "counter" if m.sum.is_monotonic else "updown"
    elif kind == "histogram":
        if m.histogram.aggregation_temporality != CUMULATIVE:
            out.dropped.append(f"{m.name}: delta histogram")
            return 0
        points, mkind = m.histogram.data_points, "histogram"
    elif kind == "summary":
        points, mkind = m.summary.data_points, "summary"
    else:
        raise ValueError(f"{m.name}: {kind} is not modelled (the agent sends none)")
    if not points:
        out.dropped.append(f"{m.name}: empty data points")
        return 0
    name = metric_name(m.name, m.unit, mkind, settings)
    for p in points:
        attrs = _attrs(p.attributes)
        t = _ms(p.time_unix_nano)
        newest = max(newest, p.time_unix_nano)
        stale = bool(p.flags & NO_RECORDED_VALUE)
        if mkind in ("gauge", "counter", "updown"):
            out.add(labels_for(resource, attrs, settings, scope, name), t, _number(p))
        elif mkind == "histogram":
            if p.HasField("sum"):
                out.add(labels_for(resource, attrs, settings, scope, name + "_sum"), t,
                        STALE_NAN if stale else p.sum)
            out.add(labels_for(resource, attrs, settings, scope, name + "_count"), t,
                    STALE_NAN if stale else float(p.count))
            cumulative = 0
            for bound, n in zip(p.explicit_bounds, p.bucket_counts):
                cumulative += n
                out.add(labels_for(resource, attrs, settings, scope, name + "_bucket",
                                   (("le", le_value(bound)),)), t,
                        STALE_NAN if stale else float(cumulative))
            out.add(labels_for(resource, attrs, settings, scope, name + "_bucket",
                               (("le", "+Inf"),)), t, STALE_NAN if stale else float(p.count))
        else:  # summary
            out.add(labels_for(resource, attrs, settings, scope, name + "_sum"), t,
                    STALE_NAN if stale else p.sum)
            out.add(labels_for(resource, attrs, settings, scope, name + "_count"), t,
                    STALE_NAN if stale else float(p.count))
            for q in p.quantile_values:
                out.add(labels_for(resource, attrs, settings, scope, name,
                                   (("quantile", le_value(q.quantile)),)), t,
                        STALE_NAN if stale else q.value)
    return newest


def _target_info(out: Converted, resource: Mapping[str, str], settings: Settings,
                 newest_ns: int) -> None:
    rest = {k: v for k, v in resource.items() if k not in IDENTIFYING}
    if not rest:
        return
    name = f"{settings.namespace}_target_info" if settings.namespace else "target_info"
    no_scope = Settings(**{**settings.__dict__, "scope_info": False, "included": (),
                           "excluded": ()})
    labels = labels_for(resource, rest, no_scope, ("", ""), name)
    if not any(k in ("job", "instance") for k, _ in labels):
        return  # helper.go: target_info needs an identifying label
    out.add(labels, _ms(newest_ns), 1.0)


# --- wire format --------------------------------------------------------------------------


def _prompb_classes():
    f = descriptor_pb2.FileDescriptorProto(name="otel_agent_test_prompb.proto",
                                           package="prometheus", syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto

    def msg(name: str, *fields: tuple[str, int, int, str | None, bool]) -> None:
        d = f.message_type.add(name=name)
        for fname, number, ftype, type_name, repeated in fields:
            fd = d.field.add(name=fname, number=number, type=ftype,
                             label=T.LABEL_REPEATED if repeated else T.LABEL_OPTIONAL)
            if type_name:
                fd.type_name = type_name

    # prompb/types.proto and remote.proto (field numbers as there)
    msg("Label", ("name", 1, T.TYPE_STRING, None, False), ("value", 2, T.TYPE_STRING, None, False))
    msg("Sample", ("value", 1, T.TYPE_DOUBLE, None, False),
        ("timestamp", 2, T.TYPE_INT64, None, False))
    msg("TimeSeries", ("labels", 1, T.TYPE_MESSAGE, ".prometheus.Label", True),
        ("samples", 2, T.TYPE_MESSAGE, ".prometheus.Sample", True))
    msg("WriteRequest", ("timeseries", 1, T.TYPE_MESSAGE, ".prometheus.TimeSeries", True))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _prompb_classes()


def write_request(series: Series) -> bytes:
    """The snappy-compressed protobuf body of POST /api/v1/write (remote write 1.0)."""
    req = WriteRequest()
    for labels, samples in series.items():
        ts = req.timeseries.add()
        for k, v in labels:  # sorted by name, as Prometheus expects
            ts.labels.add(name=k, value=v)
        for t, v in sorted(samples):
            ts.samples.add(value=v, timestamp=t)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "otel-agent-tests/remote_write",
}
