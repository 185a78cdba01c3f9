"""Raw map contents → Samples and HistogramSamples. Pure: no BCC, no kernel.

The collector copies maps into plain dicts (RawCounters); everything about units, attribute
names and histogram bounds is decided here, where a unit test can see it. Keeping the series
monotonic across evictions (Cumulative, HeldBack) is accounting: otel_agent/accounting.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from otel_agent.ebpf.classes import CLASS_NAMES
from otel_agent.metrics import ATTR_NETWORK_CLASS
from otel_agent.model import Attributes, CgroupId, HistogramSample, Sample

HIST_SLOTS = 32  # bpf/common.h
HIST_UNIT_NS = 1024  # the kernel buckets delta_ns >> 10


def log2_bounds_seconds(slots: int = HIST_SLOTS) -> tuple[float, ...]:
    """Upper bounds of the kernel's log2 slots: slot 0 is [0, 1 unit), slot k >= 1 is
    [2^(k-1), 2^k) units; the last slot is the overflow bucket, so slots - 1 bounds."""
    return tuple((1 << k) * HIST_UNIT_NS / 1e9 for k in range(slots - 1))


BOUNDS = log2_bounds_seconds()
DIRECTIONS = {0: "transmit", 1: "receive"}

Hist = tuple[tuple[int, ...], int]  # (slot counts, sum in ns)


@dataclass
class RawCounters:
    """Map contents summed over CPUs, values in the kernel's units (ns, bytes, counts)."""

    cpu_ns: dict[int, int] = field(default_factory=dict)
    runq: dict[int, Hist] = field(default_factory=dict)
    net: dict[tuple[int, int, int], tuple[int, int]] = field(default_factory=dict)  # (id, dir, class)
    faults: dict[int, int] = field(default_factory=dict)
    syscalls: dict[int, tuple[int, Hist]] = field(default_factory=dict)  # id → (count, hist)

    def cgroup_ids(self) -> set[int]:
        ids = set(self.cpu_ns) | set(self.runq) | set(self.faults) | set(self.syscalls)
        ids.update(k[0] for k in self.net)
        return ids


def net_attributes(direction: int, peer_class: int) -> Attributes:
    return (
        ("network.io.direction", DIRECTIONS.get(direction, str(direction))),
        (ATTR_NETWORK_CLASS, CLASS_NAMES.get(peer_class, "other")),
    )


def _hist(cgid: int, metric: str, h: Hist) -> HistogramSample:
    slots, sum_ns = h
    return HistogramSample(
        cgroup_id=CgroupId(cgid), metric=metric, explicit_bounds=BOUNDS,
        bucket_counts=tuple(slots), sum=sum_ns / 1e9, count=sum(slots),
    )


def to_samples(raw: RawCounters) -> tuple[list[Sample], list[HistogramSample]]:
    samples: list[Sample] = []
    hists: list[HistogramSample] = []
    for cgid, ns in raw.cpu_ns.items():
        samples.append(Sample(CgroupId(cgid), "bpf.cpu.on_cpu_time", ns / 1e9))
    for cgid, h in raw.runq.items():
        hists.append(_hist(cgid, "bpf.cpu.run_queue.delay", h))
    for (cgid, direction, cls), (nbytes, packets) in raw.net.items():
        attrs = net_attributes(direction, cls)
        samples.append(Sample(CgroupId(cgid), "bpf.network.io", float(nbytes), attrs))
        samples.append(Sample(CgroupId(cgid), "bpf.network.packets", float(packets), attrs))
    for cgid, n in raw.faults.items():
        samples.append(Sample(CgroupId(cgid), "bpf.paging.faults", float(n)))
    for cgid, (n, h) in raw.syscalls.items():
        samples.append(Sample(CgroupId(cgid), "bpf.syscalls", float(n)))
        hists.append(_hist(cgid, "bpf.syscall.duration", h))
    return samples, hists


def held_back(slots, now_ns: int) -> tuple[dict[int, int], dict[int, Hist]]:
    """What the CPU program holds in its per-CPU slots (struct cpu_slot, bpf/cpu.c) and has not
    written to cpu_time / runq yet, per cgroup: the scheduler's runtime deltas added up while
    one cgroup's tasks follow each other (pend_ns), and run-queue waits held as a small
    histogram. Without it a map value lags by up to the running task's whole slice: a CPU hog
    alone on its CPU is not switched out for seconds. A running task whose slice no runtime
    event has counted yet (a real-time task before 6.8, which the program counts from switch
    to switch) adds its time since it was switched in, when its cgroup is known. now_ns is
    CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns()."""
    cpu: dict[int, int] = {}
    waits: dict[int, Hist] = {}
    for s in slots:
        if s.pend_ns and s.pend_cgroup:
            cpu[s.pend_cgroup] = cpu.get(s.pend_cgroup, 0) + s.pend_ns
        running = s.cur_task != 0 and s.cur_task != s.idle_task
        if running and not s.counted and s.cur_cgroup and s.last_ns and now_ns > s.last_ns:
            cpu[s.cur_cgroup] = cpu.get(s.cur_cgroup, 0) + now_ns - s.last_ns
        if s.wait_n and s.wait_cgroup:
            slots_, total = waits.get(s.wait_cgroup, ((0,) * HIST_SLOTS, 0))
            waits[s.wait_cgroup] = (tuple(a + int(b) for a, b in zip(slots_, s.wait_slots)),
                                    total + s.wait_sum_ns)
    return cpu, waits
