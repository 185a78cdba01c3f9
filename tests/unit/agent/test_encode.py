"""Samples → OTLP bytes: resources per container/pod/node, names and instruments from the one
table, cumulative temporality with the family's start time, gauges as gauges; and the same
messages as the OpenTelemetry SDK's encoder, decoded and compared, when built and when patched."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_agent.metrics import METRICS, Instrument
from otel_agent.model import (
    CgroupId, CgroupRef, ContainerId, ContainerMeta, HistogramSample, NodeMeta, PodMeta, PodUid,
    QosClass, Sample, Scope,
)
from otel_agent.otlp.encode import Encoder, Snapshot, StartTimes
from otel_agent.otlp.flatten import flatten_pb
from tests.support.sdk_reference import sdk_request

UID = PodUid("0f6c3d52-1111-2222-3333-444455556666")
CID = ContainerId("4f1e" * 16)
NODE, KP, POD, CTR = CgroupId(1), CgroupId(2), CgroupId(30), CgroupId(31)
STARTS = StartTimes(cgroup=1_000, ebpf=2_000, agent=3_000)

REFS = {
    NODE: CgroupRef(NODE, Scope.NODE, "/sys/fs/cgroup"),
    KP: CgroupRef(KP, Scope.KUBEPODS, "/sys/fs/cgroup/kubepods.slice"),
    POD: CgroupRef(POD, Scope.POD, "/p", pod_uid=UID, qos=QosClass.BURSTABLE),
    CTR: CgroupRef(CTR, Scope.CONTAINER, "/p/c", pod_uid=UID, container_id=CID,
                   runtime="containerd", qos=QosClass.BURSTABLE),
}
POD_META = PodMeta(
    UID, "web-7d9f8-abcde", "shop", node_name="node-a", labels={"team": "payments"},
    workload={"k8s.deployment.name": "web", "k8s.replicaset.name": "web-7d9f8"},
    containers=(ContainerMeta("web", CID, cpu_request_cores=0.5),),
)
NODE_META = NodeMeta("node-a", uid="n-1", labels={
    "node.kubernetes.io/instance-type": "m5.xlarge", "topology.kubernetes.io/zone": "eu-west-1a"})


def convert(samples, histograms=(), pods=None, node=NODE_META, extra=None):
    c = Encoder(node_name="node-a", extra_attributes=extra or {}, start_times=STARTS)
    enc = c.encode(Snapshot(9_000, REFS, samples, histograms,
                            {UID: POD_META} if pods is None else pods, node))
    return c, ExportMetricsServiceRequest.FromString(enc.request())


def attrs_of(kvs) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}


def test_one_resource_per_container_pod_and_node_with_semconv_attributes():
    _, data = convert([
        Sample(NODE, "cpu.time", 100.0), Sample(KP, "cpu.time", 60.0),
        Sample(POD, "cpu.time", 12.5), Sample(CTR, "cpu.time", 12.0),
    ], extra={"k8s.cluster.name": "prod-eu"})
    res = [attrs_of(rm.resource.attributes) for rm in data.resource_metrics]
    assert len(res) == 4  # node, kubepods (the "pods" system container), pod, container
    node = next(r for r in res if "k8s.pod.uid" not in r and "k8s.node.system_container.name" not in r)
    pod = next(r for r in res if "k8s.pod.uid" in r and "container.id" not in r)
    ctr = next(r for r in res if "container.id" in r)
    assert node == {"k8s.cluster.name": "prod-eu", "k8s.node.name": "node-a", "k8s.node.uid": "n-1",
                    "k8s.node.label.node.kubernetes.io/instance-type": "m5.xlarge",
                    "k8s.node.label.topology.kubernetes.io/zone": "eu-west-1a",
                    "cloud.availability_zone": "eu-west-1a"}
    assert pod["k8s.namespace.name"] == "shop" and pod["k8s.pod.name"] == "web-7d9f8-abcde"
    assert pod["k8s.deployment.name"] == "web" and pod["k8s.pod.label.team"] == "payments"
    assert pod["otel_agent.cgroup.id"] == str(POD) and pod["k8s.cluster.name"] == "prod-eu"
    assert ctr["k8s.container.name"] == "web" and ctr["container.id"] == CID
    assert ctr["container.runtime.name"] == "containerd" and ctr["otel_agent.cgroup.id"] == str(CTR)

    names = {rm.scope_metrics[0].metrics[0].name for rm in data.resource_metrics}
    assert "container.cpu.time" in names and "k8s.pod.cpu.time" in names
    node_metrics = {m.name for rm in data.resource_metrics
                    if "k8s.pod.uid" not in attrs_of(rm.resource.attributes)
                    for m in rm.scope_metrics[0].metrics}
    assert node_metrics == {"k8s.node.cpu.time", "k8s.node.system_container.cpu.time"}
    # kubepods is kubelet's "pods" system container: its own resource, the node's attributes
    by_metric = {m.name: attrs_of(rm.resource.attributes) for rm in data.resource_metrics
                 for m in rm.scope_metrics[0].metrics}
    kubepods, node = by_metric["k8s.node.system_container.cpu.time"], by_metric["k8s.node.cpu.time"]
    assert kubepods == {**node, "k8s.node.system_container.name": "pods"}


def test_counters_are_cumulative_monotonic_with_their_family_start_time():
    _, data = convert([
        Sample(POD, "cpu.time", 12.5),
        Sample(POD, "bpf.network.io", 4096.0, (("network.io.direction", "transmit"),
                                                ("otel_agent.network.class", "internet"))),
        Sample(NODE, "self.series.exported", 7.0),
        Sample(POD, "memory.working_set", 1 << 20),
        Sample(CTR, "k8s.cpu.request", 0.5),
        Sample(NODE, "self.cycle.duration", 0.01),
    ])
    seen = set()
    for rm in data.resource_metrics:
        for m in rm.scope_metrics[0].metrics:
            data = getattr(m, m.WhichOneof("data"))
            if m.name == "k8s.pod.cpu.time":
                assert m.WhichOneof("data") == "sum" and data.is_monotonic
                assert data.aggregation_temporality == 2  # cumulative
                assert data.data_points[0].start_time_unix_nano == STARTS.cgroup
                assert m.unit == "s"
            elif m.name == "k8s.pod.network.io":
                assert data.data_points[0].start_time_unix_nano == STARTS.ebpf
                assert attrs_of(data.data_points[0].attributes)["network.io.direction"] == "transmit"
                assert m.unit == "By"
            elif m.name == "otel_agent.series.exported":
                assert data.data_points[0].start_time_unix_nano == STARTS.agent
            elif m.name in ("k8s.pod.memory.working_set", "k8s.container.cpu.request.desired"):
                # semconv: UpDownCounters, i.e. cumulative sums that are not monotonic
                assert m.WhichOneof("data") == "sum" and not data.is_monotonic
                assert data.aggregation_temporality == 2
            elif m.name == "otel_agent.cycle.duration":
                assert m.WhichOneof("data") == "gauge"
            seen.add(m.name)
            assert data.data_points[0].time_unix_nano == 9_000
    assert {"k8s.pod.memory.working_set", "k8s.container.cpu.request.desired",
            "otel_agent.cycle.duration", "k8s.pod.cpu.time"} <= seen


def test_histogram_and_unknown_pod_falls_back_to_cgroup_path_attributes():
    h = HistogramSample(CTR, "bpf.cpu.run_queue.delay", (1e-6, 2e-6), (3, 2, 1), 5e-6, 6)
    _, data = convert([Sample(CTR, "cpu.time", 1.0)], [h], pods={})
    ctr = next(rm for rm in data.resource_metrics if "container.id" in attrs_of(rm.resource.attributes))
    attrs = attrs_of(ctr.resource.attributes)
    assert attrs["k8s.pod.uid"] == UID and "k8s.pod.name" not in attrs
    hist = next(m for m in ctr.scope_metrics[0].metrics if m.name == "otel_agent.container.cpu.run_queue.delay")
    assert hist.WhichOneof("data") == "histogram"
    assert list(hist.histogram.data_points[0].bucket_counts) == [3, 2, 1]
    assert list(hist.histogram.data_points[0].explicit_bounds) == [1e-6, 2e-6]
    assert hist.histogram.data_points[0].count == 6 and hist.histogram.data_points[0].sum == 5e-6
    assert hist.histogram.data_points[0].start_time_unix_nano == STARTS.ebpf


def test_metric_only_exported_for_scopes_the_table_names():
    # cpu.periods has no node name: a node sample must not appear at all.
    _, data = convert([Sample(NODE, "cpu.periods", 5.0), Sample(POD, "cpu.periods", 5.0)])
    names = [p.name for p in flatten_pb(data)]
    assert names == ["otel_agent.pod.cpu.periods"]


def test_resource_is_rebuilt_when_metadata_or_series_change_and_patched_otherwise():
    c = Encoder(node_name="node-a", start_times=STARTS)
    snap = Snapshot(9_000, REFS, [Sample(POD, "cpu.time", 1.0)], (), {UID: POD_META}, NODE_META)
    c.encode(snap)
    assert c.rebuilt == 1
    c.encode(Snapshot(9_500, REFS, [Sample(POD, "cpu.time", 2.0)], (), {UID: POD_META}, NODE_META))
    assert c.rebuilt == 0  # same series, same metadata objects: values written in place
    relabelled = PodMeta(UID, POD_META.name, "shop", labels={"team": "search"})
    enc = c.encode(Snapshot(9_900, REFS, [Sample(POD, "cpu.time", 3.0)], (), {UID: relabelled}, NODE_META))
    assert c.rebuilt == 1
    rm = ExportMetricsServiceRequest.FromString(enc.request()).resource_metrics[0]
    assert attrs_of(rm.resource.attributes)["k8s.pod.label.team"] == "search"
    c.encode(Snapshot(9_950, REFS, [Sample(POD, "cpu.time", 3.0), Sample(POD, "pids", 4.0)], (),
                      {UID: relabelled}, NODE_META))
    assert c.rebuilt == 1  # a new series


def test_every_table_row_is_complete():
    for m in METRICS.values():
        assert m.names and m.unit and m.description
        if m.instrument is Instrument.HISTOGRAM:
            assert m.unit == "s"
    names = [n for m in METRICS.values() for n in m.names.values()]
    assert len(names) == len(set(names)), "two rows export the same name"


# --- equivalence with the SDK's encoder ----------------------------------------------------

_NUMBER_KEYS = sorted(k for k, m in METRICS.items() if m.instrument is not Instrument.HISTOGRAM)
_HIST_KEYS = sorted(k for k, m in METRICS.items() if m.instrument is Instrument.HISTOGRAM)
_values = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.just(0.0),
                    st.integers(0, 2**53).map(float))
_attrs = st.sampled_from([(), (("cpu.mode", "user"),), (("cpu.mode", "system"),),
                          (("network.io.direction", "transmit"), ("otel_agent.network.class", "é中"))])


@st.composite
def snapshots(draw):
    samples = []
    seen = set()
    for _ in range(draw(st.integers(0, 30))):
        cid = draw(st.sampled_from(list(REFS)))
        key = draw(st.sampled_from(_NUMBER_KEYS))
        attrs = draw(_attrs)
        if (cid, key, attrs) not in seen:  # one point per series, as the agent makes
            seen.add((cid, key, attrs))
            samples.append(Sample(cid, key, draw(_values), attrs))
    samples.sort(key=lambda s: s.cgroup_id)  # sources hand samples over grouped by cgroup
    hists = []
    for cid in draw(st.lists(st.sampled_from([POD, CTR]), unique=True)):
        n = draw(st.integers(1, 33))
        counts = tuple(draw(st.lists(st.integers(0, 2**63), min_size=n, max_size=n)))
        bounds = tuple(float(2 ** k) for k in range(n - 1))
        hists.append(HistogramSample(cid, draw(st.sampled_from(_HIST_KEYS)), bounds, counts,
                                     draw(st.floats(0, 1e12)), draw(st.integers(0, 2**63))))
    pods = draw(st.sampled_from([{}, {UID: POD_META}]))
    node = draw(st.sampled_from([None, NODE_META]))
    return Snapshot(draw(st.integers(1, 2**63)), REFS, samples, hists, pods, node)


def _same(ours: bytes, snap: Snapshot, extra: dict) -> None:
    theirs = sdk_request(snap, node_name="node-a", extra_attributes=extra, start_times=STARTS)
    mine = ExportMetricsServiceRequest.FromString(ours)
    assert mine == theirs
    # Bytes too, but for zero histogram counts, which fixed width writes out (decoded equal).
    if not any(h.count == 0 for h in snap.histograms):
        assert ours == theirs.SerializeToString()


@settings(max_examples=150, deadline=None)
@given(first=snapshots(), second=snapshots(), extra=st.sampled_from([{}, {"k8s.cluster.name": "prod"}]))
def test_same_messages_as_the_sdk_encoder_when_built_and_when_patched(first, second, extra):
    enc = Encoder(node_name="node-a", extra_attributes=extra, start_times=STARTS)
    _same(enc.encode(first).request(), first, extra)
    # The same series again with other values and time: written in place, not rebuilt.
    again = Snapshot(second.time_unix_nano, first.refs,
                     [s._replace(value=v.value) for s, v in zip(first.samples, second.samples)]
                     + list(first.samples[len(second.samples):]),
                     first.histograms, first.pods, first.node)
    _same(enc.encode(again).request(), again, extra)
    # The very same sample objects (files that did not change): only the time is written.
    later = Snapshot(again.time_unix_nano + 1, again.refs, again.samples, again.histograms,
                     again.pods, again.node)
    _same(enc.encode(later).request(), later, extra)
    _same(enc.encode(second).request(), second, extra)


def test_nan_and_infinite_values_encode_as_the_sdk_does():
    snap = Snapshot(5, REFS, [Sample(POD, "cpu.time", math.inf), Sample(CTR, "cpu.time", math.nan)])
    mine = ExportMetricsServiceRequest.FromString(Encoder(node_name=None, start_times=STARTS)
                                                  .encode(snap).request())
    theirs = sdk_request(snap, node_name=None, start_times=STARTS)
    assert mine.SerializeToString() == theirs.SerializeToString()


def test_requests_split_between_resources_under_the_size_limit():
    samples = [Sample(CgroupId(100 + i), "cpu.time", float(i)) for i in range(50)]
    refs = {CgroupId(100 + i): CgroupRef(CgroupId(100 + i), Scope.POD, f"/p{i}",
                                         pod_uid=PodUid(f"uid-{i}")) for i in range(50)}
    enc = Encoder(node_name="n", start_times=STARTS).encode(Snapshot(7, refs, samples))
    one = max(len(c) for c in enc.chunks)
    reqs = enc.requests(max_bytes=5 * one)
    assert len(reqs) >= 10 and all(len(r) <= 5 * one for r in reqs)
    got = [p.value for r in reqs for p in flatten_pb(ExportMetricsServiceRequest.FromString(r))]
    assert got == [float(i) for i in range(50)] and enc.points == 50


def test_values_written_in_place_survive_a_new_layout_and_every_split():
    """A value written into the kept buffer in one cycle is still there when another resource
    is built and the buffers are laid out again, and every way of reading the bytes agrees."""
    enc = Encoder(node_name="node-a", start_times=STARTS)
    pods = {UID: POD_META}
    first = Snapshot(1_000, REFS, [Sample(POD, "cpu.time", 1.0), Sample(CTR, "cpu.time", 2.0)],
                     (), pods, NODE_META)
    _same(enc.encode(first).request(), first, {})
    moved = Sample(POD, "cpu.time", 5.0)
    second = Snapshot(2_000, REFS, [moved, first.samples[1]], (), pods, NODE_META)
    _same(enc.encode(second).request(), second, {})
    assert enc.rebuilt == 0
    third = Snapshot(3_000, REFS, [Sample(NODE, "cpu.time", 9.0), moved, first.samples[1]], (),
                     pods, NODE_META)
    out = enc.encode(third)
    assert enc.rebuilt == 1  # the node's resource only: the pod's 5.0 was written in place
    _same(out.request(), third, {})
    assert b"".join(out.requests()) == b"".join(out.chunks) == out.request()
    assert out.requests(max_bytes=1) == [bytes(c) for c in out.chunks]  # one resource each
