"""The plain data every layer shares.

Sources (cgroup files, BPF maps, the Kubernetes API) do I/O and return these; conversion to
OTLP or ledger rows is pure code over them (DESIGN rule 4). The cgroup id, the inode number of
the cgroup v2 directory, is the join key between all of them (DESIGN rule 1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, NewType

CgroupId = NewType("CgroupId", int)
PodUid = NewType("PodUid", str)
ContainerId = NewType("ContainerId", str)

Attributes = tuple[tuple[str, str], ...]
"""Data-point attributes, sorted by key, hashable (e.g. (("network.io.direction", "transmit"),))."""


class Scope(str, enum.Enum):
    """What a cgroup stands for; picks the OTLP resource and the metric name."""

    CONTAINER = "container"
    POD = "pod"
    KUBEPODS = "kubepods"  # the parent of all pod cgroups: all pods, dead ones included
    NODE = "node"  # the cgroup v2 root: the whole machine


class QosClass(str, enum.Enum):
    GUARANTEED = "Guaranteed"
    BURSTABLE = "Burstable"
    BEST_EFFORT = "BestEffort"


@dataclass(frozen=True, slots=True)
class CgroupRef:
    """One cgroup the agent accounts for, as found on disk (or learnt from a BPF event)."""

    cgroup_id: CgroupId
    scope: Scope
    path: str  # absolute path of the cgroup v2 directory
    pod_uid: PodUid | None = None
    container_id: ContainerId | None = None
    runtime: str | None = None  # containerd, cri-o, docker
    qos: QosClass | None = None


class Sample(NamedTuple):
    """One reading of one counter or gauge for one cgroup.

    `metric` is a key of `otel_agent.metrics.METRICS`; `value` is in that row's unit.
    A NamedTuple rather than a dataclass: tens of thousands are made every cycle on a big
    node, and a tuple is built about four times faster than a frozen dataclass.
    """

    cgroup_id: CgroupId
    metric: str
    value: float
    attributes: Attributes = ()


class HistogramSample(NamedTuple):
    """A cumulative histogram for one cgroup: counts per bucket, bounds in the metric's unit.

    `bucket_counts` has len(explicit_bounds) + 1 entries, as in OTLP.
    """

    cgroup_id: CgroupId
    metric: str
    explicit_bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]
    sum: float
    count: int
    attributes: Attributes = ()


@dataclass(frozen=True, slots=True)
class ContainerMeta:
    name: str
    container_id: ContainerId | None = None  # without the runtime:// prefix
    cpu_request_cores: float | None = None
    cpu_limit_cores: float | None = None
    memory_request_bytes: int | None = None
    memory_limit_bytes: int | None = None
    # GPUs the container holds, as sorted (extended resource, count) pairs, e.g.
    # (("nvidia.com/gpu", 1.0),): its limit, which Kubernetes makes its request too
    # (otel_agent/gpu.py says which resources are GPUs).
    gpus: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class PodMeta:
    uid: PodUid
    name: str
    namespace: str
    node_name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # Owning workload as semantic-convention attributes, e.g. {"k8s.deployment.name": "web"}.
    workload: Mapping[str, str] = field(default_factory=dict)
    containers: tuple[ContainerMeta, ...] = ()
    qos: QosClass | None = None

    def container_by_id(self, container_id: str) -> ContainerMeta | None:
        for c in self.containers:
            if c.container_id == container_id:
                return c
        return None


@dataclass(frozen=True, slots=True)
class NodeMeta:
    name: str
    uid: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    cpu_capacity_cores: float | None = None
    cpu_allocatable_cores: float | None = None
    memory_capacity_bytes: int | None = None
    memory_allocatable_bytes: int | None = None
    # spec.providerID (aws:///us-east-1a/i-0abc..., azure:///subscriptions/..., gce://p/z/name):
    # the cloud's id of the machine, which the cost processor matches invoice lines by
    provider_id: str | None = None
    # GPU extended resources in status.capacity / status.allocatable, sorted (name, count)
    gpu_capacity: tuple[tuple[str, float], ...] = ()
    gpu_allocatable: tuple[tuple[str, float], ...] = ()
