"""What the agent remembers between cycles, on a copy of a fixture cgroup tree (pure v2 node
with memory and io), with a recording exporter and a dict-backed metadata source.

A container whose cgroup disappears is exported once more with its final counters; finals are
dropped only after an export succeeded, and kept while the pod's metadata is unknown (so the
ledger can attribute it late rather than never).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_agent.agent import Agent
from otel_agent.config import AgentConfig
from otel_agent.k8s.source import SourceStatus
from otel_agent.model import NodeMeta, PodMeta, PodUid
from otel_agent.otlp.flatten import flatten_pb

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "cgroups" / "trees" / "pure-v2"
POD = PodUid("0b6f3f1e-1111-4a5b-8c9d-000000000001")
CTR_DIR = ("kubepods.slice/kubepods-pod0b6f3f1e_1111_4a5b_8c9d_000000000001.slice/"
           "cri-containerd-49c94cce41278d95b3fee260adf3b954163b862ec6b39b52fa5e09c334785723.scope")
CTR_ID = "49c94cce41278d95b3fee260adf3b954163b862ec6b39b52fa5e09c334785723"


class DictMetadata:
    name = "dict"

    def __init__(self) -> None:
        self.pods: dict[PodUid, PodMeta] = {}

    def start(self) -> None: ...
    def stop(self) -> None: ...

    def pod(self, uid):
        return self.pods.get(uid)

    def node(self):
        return NodeMeta("node-a")

    def status(self):
        return SourceStatus(True, "dict")


class RecordingExporter:
    def __init__(self) -> None:
        self.exports: list[list] = []
        self.fail = False

    def export(self, encoded) -> bool:
        if self.fail:
            return False
        self.exports.append([p for r in encoded.requests()
                             for p in flatten_pb(ExportMetricsServiceRequest.FromString(r))])
        return True

    def shutdown(self) -> None:
        pass


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "cg"
    shutil.copytree(FIXTURE, root)
    return root


def container_cpu(points) -> list[float]:
    return [p.value for p in points if p.name == "container.cpu.time"
            and p.resource.get("container.id") == CTR_ID]


def make_agent(tree: Path, meta: DictMetadata, exporter: RecordingExporter) -> Agent:
    return Agent(AgentConfig(node_name="node-a", bpf_profile="off"), cgroup_root=tree,
                 metadata=meta, exporter=exporter)


def test_dead_container_exported_once_more_then_forgotten(tree: Path):
    meta, exp = DictMetadata(), RecordingExporter()
    meta.pods[POD] = PodMeta(POD, "web-1", "shop")
    agent = make_agent(tree, meta, exp)
    assert agent.export(agent.collect())
    before = container_cpu(exp.exports[-1])
    assert len(before) == 1 and before[0] > 0

    shutil.rmtree(tree / CTR_DIR)
    assert agent.export(agent.collect())
    assert container_cpu(exp.exports[-1]) == before  # the final value, once more

    assert agent.export(agent.collect())
    assert container_cpu(exp.exports[-1]) == []  # settled: gone from the export


def test_finals_survive_failed_exports(tree: Path):
    meta, exp = DictMetadata(), RecordingExporter()
    meta.pods[POD] = PodMeta(POD, "web-1", "shop")
    agent = make_agent(tree, meta, exp)
    assert agent.export(agent.collect())
    before = container_cpu(exp.exports[-1])
    shutil.rmtree(tree / CTR_DIR)
    exp.fail = True
    for _ in range(3):
        assert not agent.export(agent.collect())
    exp.fail = False
    assert agent.export(agent.collect())
    assert container_cpu(exp.exports[-1]) == before
    assert agent.export_failures == 3


def test_unknown_pod_keeps_its_final_until_metadata_arrives(tree: Path):
    meta, exp = DictMetadata(), RecordingExporter()
    agent = make_agent(tree, meta, exp)  # the API knows nothing yet
    assert agent.export(agent.collect())
    shutil.rmtree(tree / CTR_DIR)
    for _ in range(3):
        assert agent.export(agent.collect())
        pts = [p for p in exp.exports[-1] if p.name == "container.cpu.time"
               and p.resource.get("container.id") == CTR_ID]
        assert len(pts) == 1 and "k8s.namespace.name" not in pts[0].resource
        assert pts[0].resource["k8s.pod.uid"] == POD
    meta.pods[POD] = PodMeta(POD, "web-1", "shop")  # the API is back
    assert agent.export(agent.collect())
    pts = [p for p in exp.exports[-1] if p.name == "container.cpu.time"
           and p.resource.get("container.id") == CTR_ID]
    assert len(pts) == 1 and pts[0].resource["k8s.namespace.name"] == "shop"
    assert agent.export(agent.collect())
    assert container_cpu(exp.exports[-1]) == []


def test_metrics_the_kernel_offers_in_the_fixture_are_exported(tree: Path):
    meta, exp = DictMetadata(), RecordingExporter()
    meta.pods[POD] = PodMeta(POD, "web-1", "shop")
    agent = make_agent(tree, meta, exp)
    assert agent.export(agent.collect())
    names = {p.name for p in exp.exports[-1]}
    assert {"container.memory.working_set", "container.memory.usage", "container.disk.io",
            "k8s.pod.cpu.time", "otel_agent.cycle.duration"} <= names
    skipped = {p.attributes["otel_agent.skip.reason"] for p in exp.exports[-1]
               if p.name == "otel_agent.entities.skipped"}
    assert skipped  # the fixture has unknown layouts: counted, not guessed


class FakeBpf:
    """Stands in for BpfCollector: the agent only needs read()/ack()."""

    start_time_unix_nano = 1

    def __init__(self) -> None:
        self.values: dict[int, float] = {}
        self.cpu: dict[int, float] = {}  # on-CPU seconds
        self.paths: dict[int, str] = {}
        self.removed: set[int] = set()
        self.acked: set[int] = set()

    def read(self):
        from otel_agent.ebpf import BpfReading
        from otel_agent.model import Sample

        attrs = (("network.io.direction", "transmit"), ("otel_agent.network.class", "internet"))
        samples = [Sample(cid, "bpf.network.io", v, attrs) for cid, v in self.values.items()]
        samples += [Sample(cid, "bpf.cpu.on_cpu_time", v) for cid, v in self.cpu.items()]
        counted = set(self.values) | set(self.cpu)
        return BpfReading(samples=samples, histograms=[],
                          paths={c: p for c, p in self.paths.items() if c in counted},
                          removed=set(self.removed), health=[])

    def ack(self, ids):
        self.acked |= set(ids)
        for cid in ids:
            self.values.pop(cid, None)
            self.cpu.pop(cid, None)
            self.removed.discard(cid)


def agent_with_fake_bpf(tree: Path) -> tuple[Agent, RecordingExporter, FakeBpf]:
    meta, exp = DictMetadata(), RecordingExporter()
    meta.pods[POD] = PodMeta(POD, "web-1", "shop")
    bpf = FakeBpf()
    agent = Agent(AgentConfig(node_name="node-a"), cgroup_root=tree, metadata=meta,
                  exporter=exp, bpf=bpf)
    return agent, exp, bpf


def test_pod_bpf_series_sum_their_containers_and_stay_cumulative_after_a_container_dies(tree: Path):
    agent, exp, bpf = agent_with_fake_bpf(tree)
    ctr_id = (tree / CTR_DIR).stat().st_ino
    bpf.values[ctr_id] = 1000.0

    def pod_net():
        return [p.value for p in exp.exports[-1] if p.name == "k8s.pod.network.io"
                and p.resource.get("k8s.pod.uid") == POD]

    assert agent.export(agent.collect())
    assert pod_net() == [1000.0]
    bpf.values[ctr_id] = 1500.0
    shutil.rmtree(tree / CTR_DIR)  # the container dies; the kernel reports its removal
    bpf.removed.add(ctr_id)
    assert agent.export(agent.collect())
    assert pod_net() == [1500.0]
    assert ctr_id in bpf.acked  # its entries are freed in the kernel map...
    assert agent.export(agent.collect())
    assert pod_net() == [1500.0]  # ...and the pod's counter does not go backwards


def test_a_dead_container_whose_removal_bpf_missed_is_acked_not_resurrected(tree: Path):
    """cg_removed is an LRU hash: a burst of removals can push a record out before the agent
    reads it. The directory being gone says the counters are final all the same: the final is
    exported, the BPF entries are freed, and the container never comes back as a BPF-only
    cgroup whose on-CPU time (lower than cpu.stat's) would be a counter reset, billed twice."""
    agent, exp, bpf = agent_with_fake_bpf(tree)
    ctr_id = (tree / CTR_DIR).stat().st_ino
    bpf.cpu[ctr_id] = 0.05  # its map entry was evicted once: less than cpu.stat says
    bpf.paths[ctr_id] = "/" + CTR_DIR
    assert agent.export(agent.collect())
    shutil.rmtree(tree / CTR_DIR)  # dies; its removal record never reaches the agent
    for _ in range(3):
        assert agent.export(agent.collect())
    series = [v for e in exp.exports for v in container_cpu(e)]
    assert len(series) == 2 and series[0] == series[1] > 0.05  # live, then the final: cpu.stat's
    assert ctr_id in bpf.acked

