"""tests/support/remote_write.py against the rules it claims to follow, case by case.

The dashboard test trusts this translation to put our data into Prometheus as the Collector's
`prometheus_remote_write` exporter would; these are the cases written down in the sources it
follows (otlptranslator's examples and tests, contrib's helper.go), plus our own names.
"""

from __future__ import annotations

import math
import struct

import cramjam
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import \
    ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2

from tests.support import remote_write as rw

S = rw.Settings(included=("*",), target_info=False)


@pytest.mark.parametrize("name, unit, kind, want", [
    # otlptranslator's own examples (metric_namer.go doc comments, README)
    ("http.server.duration", "s", "histogram", "http_server_duration_seconds"),
    ("requests.count", "1", "counter", "requests_count_total"),
    ("memory.usage", "By", "gauge", "memory_usage_bytes"),
    ("system.cpu.utilization", "1", "gauge", "system_cpu_utilization_ratio"),
    ("system.io", "By", "counter", "system_io_bytes_total"),
    ("foo.speed", "m/s", "gauge", "foo_speed_meters_per_second"),
    ("metric_with__double_underscores", "", "gauge", "metric_with_double_underscores"),
    ("seconds.total", "s", "counter", "seconds_total"),  # unit token present, total moved last
    ("total.requests", "", "counter", "requests_total"),
    ("0.metric", "", "gauge", "_0_metric"),
    ("weird.unit", "{packet}/s", "counter", "weird_unit_per_second_total"),
    # ours
    ("container.cpu.time", "s", "counter", "container_cpu_time_seconds_total"),
    ("k8s.node.system_container.cpu.time", "s", "counter",
     "k8s_node_system_container_cpu_time_seconds_total"),
    ("container.memory.working_set", "By", "updown", "container_memory_working_set_bytes"),
    ("k8s.container.cpu.request.desired", "{cpu}", "updown", "k8s_container_cpu_request_desired"),
    ("otel_agent.container.cpu.run_queue.delay", "s", "histogram",
     "otel_agent_container_cpu_run_queue_delay_seconds"),
    ("otel_agent.container.network.packet.count", "{packet}", "counter",
     "otel_agent_container_network_packet_count_total"),
    ("otel_agent.cost.total", "{USD}", "updown", "otel_agent_cost_total"),
    ("otel_agent.bpf.map.entries", "{entry}", "gauge", "otel_agent_bpf_map_entries"),
])
def test_metric_names(name, unit, kind, want):
    assert rw.metric_name(name, unit, kind, S) == want


def test_namespace_and_no_suffixes():
    assert rw.metric_name("container.cpu.time", "s", "counter",
                          rw.Settings(namespace="k8s")) == "k8s_container_cpu_time_seconds_total"
    assert rw.metric_name("container.cpu.time", "s", "counter",
                          rw.Settings(with_suffixes=False)) == "container_cpu_time"


@pytest.mark.parametrize("key, want", [
    ("k8s.namespace.name", "k8s_namespace_name"),
    ("k8s.node.label.node.kubernetes.io/instance-type", "k8s_node_label_node_kubernetes_io_instance_type"),
    ("0abc", "key_0abc"),
    ("__name__", "__name__"),
    ("a..b", "a_b"),
])
def test_label_names(key, want):
    assert rw.label_name(key) == want


@pytest.mark.parametrize("bound, want", [
    (1e-06, "0.000001"), (1.0, "1"), (0.5, "0.5"), (1024.0, "1024"), (2 ** -20, "0.00000095367431640625"),
    (0.1, "0.1"), (1e21, "1000000000000000000000"), (math.inf, "+Inf"),
])
def test_le_is_formatted_like_go(bound, want):
    assert rw.le_value(bound) == want


def test_labels_collide_resource_wins_job_instance_scope():
    res = {"service.name": "cost", "service.namespace": "otel", "service.instance.id": "i-1",
           "k8s.namespace.name": "shop", "a.b": "res"}
    labels = dict(rw.labels_for(res, {"a.b": "point", "a_b": "other", "x": "1"}, S,
                                ("otel_agent", "0.1.0"), "m"))
    assert labels["a_b"] == "res;other"  # a.b (the resource's) sorts before a_b; joined with ;
    assert labels["job"] == "otel/cost" and labels["instance"] == "i-1"
    assert labels["otel_scope_name"] == "otel_agent" and labels["otel_scope_version"] == "0.1.0"
    assert labels["__name__"] == "m" and labels["k8s_namespace_name"] == "shop"
    none = dict(rw.labels_for(res, {}, rw.Settings(scope_info=False), ("s", ""), "m"))
    assert "k8s_namespace_name" not in none and "otel_scope_name" not in none  # nothing promoted
    some = rw.Settings(included=("k8s.*",), excluded=("k8s.pod.*",))
    assert rw.promoted({"k8s.namespace.name": "a", "k8s.pod.name": "p", "x": "y"}, some) == \
        {"k8s.namespace.name": "a"}


def test_gateway_settings_are_read_from_the_config(tmp_path):
    s = rw.gateway_settings()
    assert "*" in s.included and s.target_info is False and s.with_suffixes
    old = tmp_path / "old.yaml"
    old.write_text("exporters:\n  prometheusremotewrite:\n    resource_to_telemetry_conversion:\n"
                   "      enabled: true\n    add_metric_suffixes: false\n")
    o = rw.gateway_settings(old)
    assert o.included == ("*",) and o.target_info is True and o.with_suffixes is False
    v2 = tmp_path / "v2.yaml"
    v2.write_text("exporters:\n  prometheus_remote_write:\n    translation_strategy: NoTranslation\n")
    with pytest.raises(ValueError, match="remote write 2.0"):
        rw.gateway_settings(v2)


def _request() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    for k, v in (("k8s.namespace.name", "shop"), ("service.name", "agent")):
        rm.resource.attributes.add(key=k).value.string_value = v
    sm = rm.scope_metrics.add()
    sm.scope.name = "otel_agent"
    c = sm.metrics.add(name="container.cpu.time", unit="s")
    c.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    c.sum.is_monotonic = True
    c.sum.data_points.add(time_unix_nano=2_000_999_999, as_double=1.5)
    d = sm.metrics.add(name="deltas", unit="1")
    d.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    d.sum.data_points.add(time_unix_nano=1, as_int=1)
    g = sm.metrics.add(name="gone", unit="By")
    g.gauge.data_points.add(time_unix_nano=3_000_000_000, as_int=7,
                            flags=metrics_pb2.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK)
    h = sm.metrics.add(name="wait", unit="s")
    h.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    h.histogram.data_points.add(time_unix_nano=4_000_000_000, count=6, explicit_bounds=[0.5, 1],
                                bucket_counts=[1, 2, 3])  # no sum: no _sum series
    return req


def test_convert_types_temporality_staleness_and_target_info():
    out = rw.convert([_request()], rw.Settings(included=("*",)))
    by_name = {dict(k)["__name__"]: (dict(k), v) for k, v in out.series.items() if "le" not in dict(k)}
    assert by_name["container_cpu_time_seconds_total"][1] == [(2000, 1.5)]
    assert by_name["container_cpu_time_seconds_total"][0]["job"] == "agent"
    assert "deltas" not in str(out.series) and out.dropped == ["deltas: delta sum"]
    [(t, v)] = by_name["gone_bytes"][1]
    assert struct.pack("<d", v) == struct.pack("<Q", 0x7FF0000000000002)  # the stale marker
    assert by_name["wait_seconds_count"][1] == [(4000, 6.0)] and "wait_seconds_sum" not in by_name
    buckets = {dict(k)["le"]: v[0][1] for k, v in out.series.items() if "le" in dict(k)}
    assert buckets == {"0.5": 1.0, "1": 3.0, "+Inf": 6.0}  # made cumulative
    # target_info: the resource minus service.*, job from service.name, at the newest point
    labels, samples = by_name["target_info"]
    assert labels == {"__name__": "target_info", "job": "agent", "k8s_namespace_name": "shop"}
    assert samples == [(4000, 1.0)]


def test_write_request_is_snappy_protobuf_remote_write():
    out = rw.convert([_request()], S)
    body = rw.write_request(out.series)
    msg = rw.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    got = {tuple((l.name, l.value) for l in ts.labels): [(s.timestamp, s.value) for s in ts.samples]
           for ts in msg.timeseries}
    assert set(got) == set(out.series)
    key = next(k for k in got if dict(k)["__name__"] == "container_cpu_time_seconds_total")
    assert got[key] == [(2000, 1.5)] and list(key) == sorted(key)
