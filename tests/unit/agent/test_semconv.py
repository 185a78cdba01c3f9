"""Our metric and attribute names against the OpenTelemetry semantic conventions (DESIGN rule 7).

The conventions are a checked-in table (tests/fixtures/semconv/, made by
scripts/semconv_table.py from the release named in otel_agent.metrics.SEMCONV_VERSION). Checked
twice: the declarations in otel_agent/metrics.py, and what the agent really puts on the wire
(an agent cycle on a fixture cgroup tree, the eBPF decoder's samples through the encoder).

* A name outside `otel_agent.` must be semconv's, not deprecated, with semconv's instrument and
  unit; its data-point attributes are semconv's for that metric, or ours.
* A name of ours must not be one semconv defines: `otel_agent.pod.X` is checked against
  `k8s.pod.X`, and so on, so a new semconv release that adds our metric fails here.
* Attribute keys (data point and resource) are semconv's registry keys (not deprecated, enum
  values among its members) or ours under `otel_agent.`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_agent.agent import Agent
from otel_agent.config import AgentConfig
from otel_agent.ebpf.classes import CLASS_NAMES
from otel_agent.ebpf.decode import RawCounters, to_samples
from otel_agent.metrics import METRICS, PREFIX, SEMCONV_VERSION, Instrument
from otel_agent.model import (
    CgroupId,
    CgroupRef,
    ContainerMeta,
    NodeMeta,
    PodMeta,
    QosClass,
    Scope,
)
from otel_agent.otlp.encode import Encoder, Snapshot, StartTimes
from otel_agent.otlp.flatten import Point, flatten_pb
from tests.unit.agent.test_agent_cycle import (
    CTR_ID,
    FIXTURE,
    POD,
    DictMetadata,
    RecordingExporter,
)

TABLE = Path(__file__).resolve().parents[2] / "fixtures" / "semconv" / f"semconv-{SEMCONV_VERSION}.yaml"
OURS = f"{PREFIX}."

# Where a name of ours would live in semconv if semconv had it.
_SEMCONV_HOME = {f"{OURS}container.": "container.", f"{OURS}pod.": "k8s.pod.",
                 f"{OURS}node.": "k8s.node."}


@pytest.fixture(scope="module")
def semconv() -> dict:
    return yaml.safe_load(TABLE.read_text(encoding="utf-8"))


def test_the_table_is_the_release_the_code_names(semconv):
    assert semconv["version"] == SEMCONV_VERSION
    # sanity: the table knows the metrics this file is about
    assert semconv["metrics"]["container.memory.usage"]["instrument"] == "updowncounter"
    assert "k8s.pod.uid" in semconv["attributes"]


def _all_names():
    for m in METRICS.values():
        for scope, name in m.names.items():
            yield m, scope, name


def _semconv_metric_problems(semconv, name: str, instrument: str, unit: str,
                             attributes) -> list[str]:
    row = semconv["metrics"].get(name)
    if row is None:
        return [f"{name}: not a semconv {SEMCONV_VERSION} metric: use semconv's name or ours "
                f"under {OURS}"]
    out = []
    if "deprecated" in row:
        out.append(f"{name}: deprecated in semconv ({row['deprecated']})")
    if row["instrument"] != instrument:
        out.append(f"{name}: semconv makes it a {row['instrument']}, we send a {instrument}")
    if row["unit"] != unit:
        out.append(f"{name}: semconv unit {row['unit']!r}, ours {unit!r}")
    for a in attributes:
        if not a.startswith(OURS) and a not in row["attributes"]:
            out.append(f"{name}: attribute {a} is not one of semconv's for it {row['attributes']}")
    return out


def _attribute_problems(semconv, key: str, value: str | None = None) -> list[str]:
    if key.startswith(OURS):
        return []
    attrs = semconv["attributes"]
    row = attrs.get(key)
    if row is None:  # a template attribute: k8s.pod.label.<key>
        row = next((attrs[p] for p in _prefixes(key) if attrs.get(p, {}).get("type", "")
                    .startswith("template")), None)
    if row is None:
        return [f"attribute {key}: not in semconv {SEMCONV_VERSION}: ours go under {OURS}"]
    if "deprecated" in row:
        return [f"attribute {key}: deprecated in semconv ({row['deprecated']})"]
    if value is not None and row.get("members") and value not in row["members"]:
        return [f"attribute {key}={value!r}: semconv's values are {row['members']}"]
    return []


def _prefixes(key: str):
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        yield ".".join(parts[:i])


def test_declared_semconv_names_have_semconvs_instrument_unit_and_attributes(semconv):
    problems = []
    for m, _scope, name in _all_names():
        if name.startswith(OURS):
            continue
        problems += _semconv_metric_problems(semconv, name, m.instrument.value, m.unit, m.attributes)
    assert problems == []


def test_our_own_names_are_not_ones_semconv_defines(semconv):
    problems = []
    for m, _scope, name in _all_names():
        if not name.startswith(OURS):
            continue
        assert OURS.rstrip(".") not in {n.split(".")[0] for n in semconv["metrics"]}
        for ours, home in _SEMCONV_HOME.items():
            if name.startswith(ours) and home + name[len(ours):] in semconv["metrics"]:
                problems.append(f"{name}: semconv defines {home + name[len(ours):]}: use it")
    assert problems == []


def test_declared_attributes_are_semconvs_or_ours(semconv):
    keys = {a for m in METRICS.values() for a in m.attributes}
    assert [p for k in sorted(keys) for p in _attribute_problems(semconv, k)] == []


def test_former_names_are_not_exported_any_more():
    exported = {name for _m, _s, name in _all_names()}
    former = {n for m in METRICS.values() for names in m.formerly.values() for n in names}
    assert not exported & former
    assert all(set(m.formerly) <= set(m.names) for m in METRICS.values())


# --- what goes on the wire ---------------------------------------------------------------

_KIND = {("sum", True): Instrument.COUNTER, ("sum", False): Instrument.UPDOWN,
         ("gauge", False): Instrument.GAUGE, ("histogram", False): Instrument.HISTOGRAM}


def _wire_problems(semconv, points: list[Point]) -> list[str]:
    problems: set[str] = set()
    for p in points:
        instrument = _KIND[(p.kind, p.monotonic)]
        if p.kind != "gauge":
            assert p.temporality == "cumulative", p
        if not p.name.startswith(OURS):
            problems.update(_semconv_metric_problems(semconv, p.name, instrument.value, p.unit,
                                                     p.attributes))
        for k, v in p.attributes.items():
            problems.update(_attribute_problems(semconv, k, v))
        for k, v in p.resource.items():
            problems.update(_attribute_problems(semconv, k, v))
    return sorted(problems)


class _FullMetadata(DictMetadata):
    def node(self):
        return NodeMeta("node-a", uid="n-1", labels={
            "node.kubernetes.io/instance-type": "m5.xlarge",
            "topology.kubernetes.io/zone": "eu-west-1a", "topology.kubernetes.io/region": "eu-west-1",
            "karpenter.sh/capacity-type": "spot"},
            cpu_capacity_cores=4, cpu_allocatable_cores=3.5,
            memory_capacity_bytes=16 << 30, memory_allocatable_bytes=15 << 30)


def test_an_agent_cycle_exports_only_semconv_or_own_names(tmp_path, semconv):
    tree = tmp_path / "cg"
    shutil.copytree(FIXTURE, tree)
    meta, exp = _FullMetadata(), RecordingExporter()
    meta.pods[POD] = PodMeta(
        POD, "web-1", "shop", node_name="node-a", labels={"team": "payments"},
        workload={"k8s.deployment.name": "web", "k8s.replicaset.name": "web-7d9f8"},
        containers=(ContainerMeta("web", CTR_ID, 0.5, 1.0, 1 << 28, 1 << 29),), qos=QosClass.BURSTABLE)
    agent = Agent(AgentConfig(node_name="node-a", bpf_profile="off",
                              resource_attributes={"k8s.cluster.name": "prod-eu"}),
                  cgroup_root=tree, metadata=meta, exporter=exp)
    assert agent.export(agent.collect())
    points = exp.exports[-1]
    names = {p.name for p in points}
    # the file and metadata families this check is about are all there
    assert {"container.memory.usage", "k8s.pod.memory.working_set", "container.disk.io",
            "k8s.container.cpu.request.desired", "k8s.node.cpu.allocatable",
            "otel_agent.container.pressure.stall_time", "otel_agent.entities.skipped",
            "k8s.node.system_container.cpu.time"} <= names, names
    assert _wire_problems(semconv, points) == []


def test_ebpf_samples_on_the_wire_are_semconv_or_own_names(semconv):
    node, kubepods, pod, ctr = CgroupId(1), CgroupId(2), CgroupId(3), CgroupId(4)
    raw = RawCounters(
        cpu_ns={pod: 1_500_000_000, ctr: 1_000_000_000},
        runq={c: ((1, 2) + (0,) * 30, 5000) for c in (pod, ctr)},
        net={(c, d, k): (1000, 3) for c in (pod, ctr) for d in (0, 1) for k in CLASS_NAMES},
        faults={pod: 9, ctr: 9},
        syscalls={c: (4, ((0, 4) + (0,) * 30, 8000)) for c in (pod, ctr)},
    )
    samples, hists = to_samples(raw)
    refs = {
        node: CgroupRef(node, Scope.NODE, "/"),
        kubepods: CgroupRef(kubepods, Scope.KUBEPODS, "/kubepods.slice"),
        pod: CgroupRef(pod, Scope.POD, "/p", pod_uid=POD),
        ctr: CgroupRef(ctr, Scope.CONTAINER, "/p/c", pod_uid=POD, container_id=CTR_ID,
                       runtime="containerd"),
    }
    enc = Encoder(node_name="node-a", start_times=StartTimes(1, 2, 3))
    request = enc.encode(Snapshot(10, refs, samples, hists, {POD: PodMeta(POD, "web-1", "shop")})).request()
    points = list(flatten_pb(ExportMetricsServiceRequest.FromString(request)))
    assert {"container.network.io", "k8s.pod.paging.faults",
            "otel_agent.container.cpu.run_queue.delay",
            "otel_agent.pod.network.packet.count"} <= {p.name for p in points}
    assert _wire_problems(semconv, points) == []


def test_a_drifting_name_fails_the_check(semconv):
    """The check itself: each kind of drift it exists to catch is reported."""
    assert _semconv_metric_problems(semconv, "container.cpu.run_queue.delay", "histogram", "s", ())
    assert _semconv_metric_problems(semconv, "container.memory.usage", "gauge", "By", ())
    assert _semconv_metric_problems(semconv, "k8s.container.cpu.request", "updowncounter", "{cpu}", ())
    assert _semconv_metric_problems(semconv, "k8s.pod.network.io", "counter", "By", ("reason",))
    assert _attribute_problems(semconv, "pressure.resource")
    assert _attribute_problems(semconv, "container.runtime")  # deprecated for .name
    assert _attribute_problems(semconv, "network.io.direction", "egress")
    assert not _attribute_problems(semconv, "k8s.pod.label.team")
    assert not _attribute_problems(semconv, "otel_agent.pressure.kind")
