"""Every metric the agent exports, declared once (DESIGN rule 7).

A source emits `Sample(metric=<key>)`; conversion looks the key up here to get the OTLP name
for the cgroup's scope, the unit, the description and the instrument. Names, units and
instruments follow the OpenTelemetry semantic conventions where they define the metric
(checked against SEMCONV_VERSION by tests/unit/agent/test_semconv.py and its checked-in
table); everything else is ours, under the `otel_agent.` prefix, never in a semconv
namespace (`container.*`, `k8s.*`, `system.*`). The same holds for data-point attributes.

A scope missing from a row's `names` means the metric is not exported for that scope.
`formerly` keeps the names a row was exported under before a rename, so that consumers (the
cost processor's ledger) keep accepting agents that are not upgraded yet.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping

from otel_agent.model import Scope

PREFIX = "otel_agent"
SEMCONV_VERSION = "1.44.0"  # the semantic-conventions release the names were checked against

# Data-point attributes of our own: semconv defines none for these.
ATTR_NETWORK_CLASS = f"{PREFIX}.network.class"  # pod-network | cluster-private | internet
ATTR_PRESSURE_RESOURCE = f"{PREFIX}.pressure.resource"  # cpu | memory | io
ATTR_PRESSURE_KIND = f"{PREFIX}.pressure.kind"  # some | full
ATTR_SKIP_REASON = f"{PREFIX}.skip.reason"
ATTR_BPF_MAP = f"{PREFIX}.bpf.map.name"
# The device plugin's extended resource a GPU count is of (nvidia.com/gpu, nvidia.com/mig-1g.10gb,
# amd.com/gpu, gpu.intel.com/i915; otel_agent/gpu.py). Semconv 1.44 has no GPU or
# extended-resource metric for Kubernetes and no attribute naming a resource of a pod spec.
ATTR_GPU_RESOURCE = f"{PREFIX}.gpu.resource"
# A claim's volume access modes (RWO, ROX, RWX, RWOP joined by +) and whether a running pod
# mounts it: semconv has k8s.persistentvolumeclaim.* and k8s.storageclass.name, not these.
ATTR_ACCESS_MODE = f"{PREFIX}.persistentvolume.access_mode"
ATTR_MOUNTED = f"{PREFIX}.persistentvolumeclaim.mounted"
CLAIM_ATTRIBUTES = ("k8s.namespace.name", "k8s.persistentvolumeclaim.name",
                    "k8s.persistentvolumeclaim.uid", "k8s.storageclass.name",
                    "k8s.persistentvolume.name", ATTR_ACCESS_MODE, ATTR_MOUNTED)


class Instrument(str, enum.Enum):
    COUNTER = "counter"  # cumulative monotonic sum
    UPDOWN = "updowncounter"  # cumulative non-monotonic sum
    GAUGE = "gauge"
    HISTOGRAM = "histogram"  # cumulative explicit-bucket histogram


@dataclass(frozen=True, slots=True)
class MetricDef:
    key: str
    names: Mapping[Scope, str]
    unit: str
    description: str
    instrument: Instrument
    source: str  # where the value comes from, for the README and `doctor`
    attributes: tuple[str, ...] = ()  # data-point attribute keys this metric carries
    # names this row was exported under before, per scope, oldest first
    formerly: Mapping[Scope, tuple[str, ...]] = field(default_factory=dict)


C, P, K, N = Scope.CONTAINER, Scope.POD, Scope.KUBEPODS, Scope.NODE


def _own(what: str, *scopes: Scope) -> dict[Scope, str]:
    """Our own name for each scope: otel_agent.<pod|container|node>.<what>.

    KUBEPODS has only semconv names (k8s.node.system_container.*, on the resource of kubelet's
    `pods` system container); should one of ours be needed, it would say `node.pods`.
    """
    base = {C: "container", P: "pod", N: "node", K: "node.pods"}
    return {s: f"{PREFIX}.{base[s]}.{what}" for s in scopes}


_TABLE: tuple[MetricDef, ...] = (
    # --- cgroup v2 files -------------------------------------------------------------------
    MetricDef(
        "cpu.time",
        {C: "container.cpu.time", P: "k8s.pod.cpu.time", N: "k8s.node.cpu.time",
         K: "k8s.node.system_container.cpu.time"},
        "s", "Total CPU time consumed (cpu.stat usage_usec).", Instrument.COUNTER, "cpu.stat",
        formerly={K: (f"{PREFIX}.node.pods.cpu.time",)},
    ),
    MetricDef(
        "cpu.mode_time", _own("cpu.mode_time", C, P, N),
        "s", "CPU time by mode (cpu.stat user_usec, system_usec); sums to cpu.time.",
        Instrument.COUNTER, "cpu.stat", ("cpu.mode",),
    ),
    MetricDef(
        "cpu.periods", _own("cpu.periods", C, P),
        "{period}", "Enforcement periods elapsed under a CPU limit (cpu.stat nr_periods).",
        Instrument.COUNTER, "cpu.stat",
    ),
    MetricDef(
        "cpu.throttled_periods", _own("cpu.throttled_periods", C, P),
        "{period}", "Periods in which the cgroup was throttled (cpu.stat nr_throttled).",
        Instrument.COUNTER, "cpu.stat",
    ),
    MetricDef(
        "cpu.throttled_time", _own("cpu.throttled_time", C, P),
        "s", "Time the cgroup spent throttled (cpu.stat throttled_usec).",
        Instrument.COUNTER, "cpu.stat",
    ),
    MetricDef(
        "memory.usage",
        {C: "container.memory.usage", P: "k8s.pod.memory.usage", N: "k8s.node.memory.usage",
         K: "k8s.node.system_container.memory.usage"},
        "By", "Memory in use, page cache included (memory.current).", Instrument.UPDOWN,
        "memory.current", formerly={K: (f"{PREFIX}.node.pods.memory.usage",)},
    ),
    MetricDef(
        "memory.working_set",
        {C: "container.memory.working_set", P: "k8s.pod.memory.working_set",
         N: "k8s.node.memory.working_set", K: "k8s.node.system_container.memory.working_set"},
        "By", "memory.current minus inactive_file: what the kubelet evicts on.",
        Instrument.UPDOWN, "memory.current, memory.stat",
        formerly={K: (f"{PREFIX}.node.pods.memory.working_set",)},
    ),
    MetricDef(
        "memory.rss",
        {C: "container.memory.rss", P: "k8s.pod.memory.rss", N: "k8s.node.memory.rss"},
        "By", "Anonymous memory (memory.stat anon).", Instrument.UPDOWN, "memory.stat",
    ),
    MetricDef(
        "memory.page_cache", _own("memory.page_cache", C, P, N),
        "By", "Page cache (memory.stat file).", Instrument.UPDOWN, "memory.stat",
    ),
    MetricDef(
        "memory.peak", _own("memory.peak", C, P),
        "By", "Highest memory.current seen since the cgroup was created (memory.peak).",
        Instrument.GAUGE, "memory.peak",
    ),
    MetricDef(
        "memory.oom_kills", _own("memory.oom_kills", C, P),
        "{kill}", "Processes killed by the OOM killer (memory.events oom_kill).",
        Instrument.COUNTER, "memory.events",
    ),
    MetricDef(
        "disk.io",
        {C: "container.disk.io", P: f"{PREFIX}.pod.disk.io"},
        "By", "Bytes read and written to block devices (io.stat rbytes, wbytes).",
        Instrument.COUNTER, "io.stat", ("disk.io.direction", "system.device"),
    ),
    MetricDef(
        "disk.operations", _own("disk.operations", C, P),
        "{operation}", "Block I/O operations (io.stat rios, wios).",
        Instrument.COUNTER, "io.stat", ("disk.io.direction", "system.device"),
    ),
    MetricDef(
        "pids", _own("pids", C, P),
        "{process}", "Tasks in the cgroup (pids.current).", Instrument.UPDOWN, "pids.current",
    ),
    MetricDef(
        "pressure.stall_time", _own("pressure.stall_time", C, P, N),
        "s", "Time some or all tasks stalled on a resource (cpu/memory/io.pressure total).",
        Instrument.COUNTER, "*.pressure", (ATTR_PRESSURE_RESOURCE, ATTR_PRESSURE_KIND),
    ),
    # --- eBPF ------------------------------------------------------------------------------
    MetricDef(
        "bpf.cpu.on_cpu_time", _own("cpu.on_cpu_time", C, P),
        "s", "On-CPU time: the scheduler's runtime deltas (sched_stat_runtime), which cpu.stat adds up too.",
        Instrument.COUNTER, "ebpf:cpu",
    ),
    MetricDef(
        "bpf.cpu.run_queue.delay", _own("cpu.run_queue.delay", C, P),
        "s", "Time runnable tasks waited for a CPU (sched_wakeup → sched_switch), log2 buckets.",
        Instrument.HISTOGRAM, "ebpf:cpu",
        formerly={C: ("container.cpu.run_queue.delay",), P: ("k8s.pod.cpu.run_queue.delay",)},
    ),
    MetricDef(
        "bpf.network.io",
        {C: "container.network.io", P: "k8s.pod.network.io"},
        "By", "Bytes sent and received (cgroup_skb egress/ingress); egress by peer class.",
        Instrument.COUNTER, "ebpf:network", ("network.io.direction", ATTR_NETWORK_CLASS),
    ),
    MetricDef(
        # semconv has the *.network.packet.count pattern only for system.*: ours, same shape
        "bpf.network.packets", _own("network.packet.count", C, P),
        "{packet}", "Packets sent and received (cgroup_skb egress/ingress).",
        Instrument.COUNTER, "ebpf:network", ("network.io.direction", ATTR_NETWORK_CLASS),
        formerly={C: ("container.network.packets",), P: ("k8s.pod.network.packets",)},
    ),
    MetricDef(
        "bpf.paging.faults",
        {C: "container.paging.faults", P: "k8s.pod.paging.faults"},
        "{fault}", "Page faults taken in user mode (exceptions:page_fault_user, x86): minor and "
        "major together, so no system.paging.fault.type (the tracepoint fires before the kernel "
        "knows which); faults the kernel takes on user memory inside system calls are not "
        "counted, so it can read below memory.stat pgfault.",
        Instrument.COUNTER, "ebpf:faults",
    ),
    MetricDef(
        "bpf.syscalls", _own("syscalls", C, P),
        "{syscall}", "System calls made (raw_syscalls:sys_enter).", Instrument.COUNTER,
        "ebpf:syscalls",
    ),
    MetricDef(
        "bpf.syscall.duration", _own("syscall.duration", C, P),
        "s", "Time spent in system calls (raw_syscalls sys_enter → sys_exit), log2 buckets.",
        Instrument.HISTOGRAM, "ebpf:syscalls",
    ),
    # --- Kubernetes metadata ---------------------------------------------------------------
    MetricDef(
        "k8s.cpu.request", {C: "k8s.container.cpu.request.desired"},
        "{cpu}", "CPU requested in the pod spec.", Instrument.UPDOWN, "kubernetes",
    ),
    MetricDef(
        "k8s.cpu.limit", {C: "k8s.container.cpu.limit.desired"},
        "{cpu}", "CPU limit in the pod spec.", Instrument.UPDOWN, "kubernetes",
    ),
    MetricDef(
        "k8s.memory.request", {C: "k8s.container.memory.request.desired"},
        "By", "Memory requested in the pod spec.", Instrument.UPDOWN, "kubernetes",
    ),
    MetricDef(
        "k8s.memory.limit", {C: "k8s.container.memory.limit.desired"},
        "By", "Memory limit in the pod spec.", Instrument.UPDOWN, "kubernetes",
    ),
    MetricDef(
        "k8s.gpu.request", {C: f"{PREFIX}.container.gpu.request"},
        "{device}", "GPUs (device-plugin extended resources) in the pod spec: the limit, which "
        "Kubernetes makes the request too; MIG slices counted as slices.",
        Instrument.UPDOWN, "kubernetes", (ATTR_GPU_RESOURCE,),
    ),
    MetricDef(
        "k8s.node.gpu.allocatable", {N: f"{PREFIX}.node.gpu.allocatable"},
        "{device}", "GPUs the node offers to pods (status.allocatable), by extended resource.",
        Instrument.UPDOWN, "kubernetes", (ATTR_GPU_RESOURCE,),
    ),
    MetricDef(
        "k8s.node.gpu.capacity", {N: f"{PREFIX}.node.gpu.capacity"},
        "{device}", "GPUs the node has (status.capacity), by extended resource.",
        Instrument.UPDOWN, "kubernetes", (ATTR_GPU_RESOURCE,),
    ),
    MetricDef(
        # semconv's k8s.persistentvolumeclaim.storage.capacity sits on a claim's own resource;
        # this agent reports every claim of the cluster on its node resource (k8s/volumes.py)
        "k8s.claim.capacity", {N: f"{PREFIX}.cluster.persistentvolumeclaim.capacity"},
        "By", "Capacity of each bound persistent volume claim's volume in the cluster (only "
        "from the agent with cluster_objects on).", Instrument.UPDOWN, "kubernetes",
        CLAIM_ATTRIBUTES,
    ),
    MetricDef(
        "k8s.node.cpu.allocatable", {N: "k8s.node.cpu.allocatable"},
        "{cpu}", "CPU the node offers to pods.", Instrument.UPDOWN, "kubernetes",
    ),
    MetricDef(
        "k8s.node.cpu.capacity", {N: f"{PREFIX}.node.cpu.capacity"},
        "{cpu}", "CPU the node has; capacity − allocatable is non-allocatable overhead.",
        Instrument.UPDOWN, "kubernetes",
    ),
    MetricDef(
        "k8s.node.memory.allocatable", {N: "k8s.node.memory.allocatable"},
        "By", "Memory the node offers to pods.", Instrument.UPDOWN, "kubernetes",
    ),
    MetricDef(
        "k8s.node.memory.capacity", {N: f"{PREFIX}.node.memory.capacity"},
        "By", "Memory the node has.", Instrument.UPDOWN, "kubernetes",
    ),
    # --- the agent's own health (node resource) --------------------------------------------
    MetricDef(
        "self.cycle.duration", {N: f"{PREFIX}.cycle.duration"},
        "s", "Wall time of the last completed collection cycle (read + convert).", Instrument.GAUGE,
        "agent",
    ),
    MetricDef(
        "self.series.exported", {N: f"{PREFIX}.series.exported"},
        "{series}", "Data points handed to the exporter.", Instrument.COUNTER, "agent",
    ),
    MetricDef(
        "self.entities.skipped", {N: f"{PREFIX}.entities.skipped"},
        "{entity}", "Cgroups, files or pods skipped, by reason.", Instrument.COUNTER, "agent",
        (ATTR_SKIP_REASON,),
    ),
    MetricDef(
        "self.export.failures", {N: f"{PREFIX}.export.failures"},
        "{export}", "Exports that failed after retries.", Instrument.COUNTER, "agent",
    ),
    MetricDef(
        "self.bpf.map.entries", {N: f"{PREFIX}.bpf.map.entries"},
        "{entry}", "Entries in a BPF map.", Instrument.GAUGE, "ebpf", (ATTR_BPF_MAP,),
    ),
    MetricDef(
        "self.bpf.map.capacity", {N: f"{PREFIX}.bpf.map.capacity"},
        "{entry}", "max_entries of a BPF map.", Instrument.GAUGE, "ebpf", (ATTR_BPF_MAP,),
    ),
    MetricDef(
        "self.bpf.map.update_failures", {N: f"{PREFIX}.bpf.map.update_failures"},
        "{update}", "Map updates a BPF program could not make (map full).",
        Instrument.COUNTER, "ebpf", (ATTR_BPF_MAP,),
    ),
    MetricDef(
        "self.bpf.map.evictions", {N: f"{PREFIX}.bpf.map.evictions"},
        "{entry}", "Entries an LRU BPF map dropped before their final value was exported.",
        Instrument.COUNTER, "ebpf", (ATTR_BPF_MAP,),
    ),
)

METRICS: dict[str, MetricDef] = {m.key: m for m in _TABLE}
assert len(METRICS) == len(_TABLE), "duplicate metric key"


def metric(key: str) -> MetricDef:
    """The row for `key`; a KeyError here is a programming error in a source."""
    return METRICS[key]


_SCOPE_ORDER = (Scope.CONTAINER, Scope.POD, Scope.NODE, Scope.KUBEPODS)


def markdown_table() -> str:
    """The README's metric list, generated from this table (a test keeps them equal)."""
    lines = [
        "| metric (per resource) | unit | type | source | attributes | description |",
        "|---|---|---|---|---|---|",
    ]
    for m in _TABLE:
        names = "<br>".join(f"`{m.names[s]}`" for s in _SCOPE_ORDER if s in m.names)
        attrs = ", ".join(f"`{a}`" for a in m.attributes) or ""
        lines.append(f"| {names} | `{m.unit}` | {m.instrument.value} | {m.source} | {attrs} | "
                     f"{m.description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
