"""Samples → OTLP: resources per container/pod/node, names from the one table, cumulative
temporality with the family's start time, gauges as gauges."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import AggregationTemporality, Gauge, Histogram, Sum

from otel_agent.metrics import METRICS, Instrument
from otel_agent.model import (
    CgroupId, CgroupRef, ContainerId, ContainerMeta, HistogramSample, NodeMeta, PodMeta, PodUid,
    QosClass, Sample, Scope,
)
from otel_agent.otlp.convert import Converter, Snapshot, StartTimes
from otel_agent.otlp.flatten import flatten_sdk

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
    c = Converter(node_name="node-a", extra_attributes=extra or {}, start_times=STARTS)
    return c, c.convert(Snapshot(9_000, REFS, samples, histograms,
                                 {UID: POD_META} if pods is None else pods, node))


def by_name(data):
    return {(p.name, tuple(sorted(p.attributes.items()))): p for p in flatten_sdk(data)}


def test_one_resource_per_container_pod_and_node_with_semconv_attributes():
    _, data = convert([
        Sample(NODE, "cpu.time", 100.0), Sample(KP, "cpu.time", 60.0),
        Sample(POD, "cpu.time", 12.5), Sample(CTR, "cpu.time", 12.0),
    ], extra={"k8s.cluster.name": "prod-eu"})
    res = [dict(rm.resource.attributes) for rm in data.resource_metrics]
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
    node_metrics = {m.name for rm in data.resource_metrics if "k8s.pod.uid" not in rm.resource.attributes
                    for m in rm.scope_metrics[0].metrics}
    assert node_metrics == {"k8s.node.cpu.time", "k8s.node.system_container.cpu.time"}
    # kubepods is kubelet's "pods" system container: its own resource, the node's attributes
    by_metric = {m.name: dict(rm.resource.attributes) for rm in data.resource_metrics
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
            if m.name == "k8s.pod.cpu.time":
                assert isinstance(m.data, Sum) and m.data.is_monotonic
                assert m.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
                assert m.data.data_points[0].start_time_unix_nano == STARTS.cgroup
                assert m.unit == "s"
            elif m.name == "k8s.pod.network.io":
                assert m.data.data_points[0].start_time_unix_nano == STARTS.ebpf
                assert dict(m.data.data_points[0].attributes)["network.io.direction"] == "transmit"
                assert m.unit == "By"
            elif m.name == "otel_agent.series.exported":
                assert m.data.data_points[0].start_time_unix_nano == STARTS.agent
            elif m.name in ("k8s.pod.memory.working_set", "k8s.container.cpu.request.desired"):
                # semconv: UpDownCounters, i.e. cumulative sums that are not monotonic
                assert isinstance(m.data, Sum) and not m.data.is_monotonic
                assert m.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
            elif m.name == "otel_agent.cycle.duration":
                assert isinstance(m.data, Gauge)
            seen.add(m.name)
            assert m.data.data_points[0].time_unix_nano == 9_000
    assert {"k8s.pod.memory.working_set", "k8s.container.cpu.request.desired",
            "otel_agent.cycle.duration", "k8s.pod.cpu.time"} <= seen


def test_histogram_and_unknown_pod_falls_back_to_cgroup_path_attributes():
    h = HistogramSample(CTR, "bpf.cpu.run_queue.delay", (1e-6, 2e-6), (3, 2, 1), 5e-6, 6)
    _, data = convert([Sample(CTR, "cpu.time", 1.0)], [h], pods={})
    ctr = next(rm for rm in data.resource_metrics if "container.id" in rm.resource.attributes)
    attrs = dict(ctr.resource.attributes)
    assert attrs["k8s.pod.uid"] == UID and "k8s.pod.name" not in attrs
    hist = next(m for m in ctr.scope_metrics[0].metrics if m.name == "otel_agent.container.cpu.run_queue.delay")
    assert isinstance(hist.data, Histogram)
    assert list(hist.data.data_points[0].bucket_counts) == [3, 2, 1]
    assert hist.data.data_points[0].start_time_unix_nano == STARTS.ebpf


def test_metric_only_exported_for_scopes_the_table_names():
    # cpu.periods has no node name: a node sample must not appear at all.
    _, data = convert([Sample(NODE, "cpu.periods", 5.0), Sample(POD, "cpu.periods", 5.0)])
    names = [p.name for p in flatten_sdk(data)]
    assert names == ["otel_agent.pod.cpu.periods"]


def test_resource_is_rebuilt_when_metadata_changes_and_cached_otherwise():
    c, _ = convert([Sample(POD, "cpu.time", 1.0)])
    r1 = c.resource(REFS[POD], POD_META, NODE_META)
    assert c.resource(REFS[POD], POD_META, NODE_META) is r1
    relabelled = PodMeta(UID, POD_META.name, "shop", labels={"team": "search"})
    r2 = c.resource(REFS[POD], relabelled, NODE_META)
    assert r2 is not r1 and r2.attributes["k8s.pod.label.team"] == "search"


def test_every_table_row_is_complete():
    for m in METRICS.values():
        assert m.names and m.unit and m.description
        if m.instrument is Instrument.HISTOGRAM:
            assert m.unit == "s"
    names = [n for m in METRICS.values() for n in m.names.values()]
    assert len(names) == len(set(names)), "two rows export the same name"


def test_fast_number_point_equals_the_sdk_constructor():
    from opentelemetry.sdk.metrics.export import NumberDataPoint

    from otel_agent.otlp.convert import _number_point

    assert _number_point({"a": "b"}, 1, 2, 3.5) == NumberDataPoint({"a": "b"}, 1, 2, 3.5)
