"""The accounting core from tables of readings: each row is one cycle (what the files said,
what the BPF maps held, which cgroups the kernel saw removed, whether the export succeeded)
and what the cycle must export and free. No kernel, no files, no clock (kubeletstats'
accumulator tests are the model)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from otel_agent.accounting import Accounts, Cumulative, HeldBack
from otel_agent.model import CgroupId, CgroupRef, PodUid, Sample, Scope

UID = PodUid("0b6f3f1e-1111-4a5b-8c9d-000000000001")
POD, A, B, GHOST = CgroupId(10), CgroupId(11), CgroupId(12), CgroupId(13)
KP = "kubepods.slice"
POD_DIR = f"/{KP}/kubepods-pod0b6f3f1e_1111_4a5b_8c9d_000000000001.slice"
REFS = {
    GHOST: CgroupRef(GHOST, Scope.CONTAINER, POD_DIR + "/cri-containerd-" + "c" * 64 + ".scope", UID, "c" * 64),
    POD: CgroupRef(POD, Scope.POD, POD_DIR, UID),
    A: CgroupRef(A, Scope.CONTAINER, POD_DIR + "/cri-containerd-" + "a" * 64 + ".scope", UID, "a" * 64),
    B: CgroupRef(B, Scope.CONTAINER, POD_DIR + "/cri-containerd-" + "b" * 64 + ".scope", UID, "b" * 64),
}
GHOST_PATH = POD_DIR + "/cri-containerd-" + "c" * 64 + ".scope"
NET = (("network.io.direction", "transmit"), ("otel_agent.network.class", "internet"))


@dataclass
class Bpf:
    samples: list = field(default_factory=list)
    histograms: list = field(default_factory=list)
    paths: dict = field(default_factory=dict)
    removed: set = field(default_factory=set)


@dataclass
class Row:
    """One cycle. files: cgroup -> cpu.time read from cpu.stat (absent: not on disk).
    on_cpu / net: cgroup -> BPF on-CPU seconds / bytes sent (None: no BPF at all)."""

    files: dict
    on_cpu: dict | None = None
    net: dict | None = None
    removed: set = field(default_factory=set)
    paths: dict = field(default_factory=dict)
    exported: bool = True
    pods_known: bool = True
    now: float = 0.0
    # expected
    cpu: dict = field(default_factory=dict)  # cgroup -> cpu.time exported (exactly these)
    pod_net: float | None = None
    acked: set = field(default_factory=set)
    forgotten: set = field(default_factory=set)


def run(rows: list[Row], grace_seconds: float = 900.0) -> None:
    acc = Accounts(kubepods=KP, grace_seconds=grace_seconds)
    for i, row in enumerate(rows):
        refs = {c: REFS[c] for c in row.files}
        files = [Sample(c, "cpu.time", v) for c, v in row.files.items()]
        bpf = None
        if row.on_cpu is not None or row.net is not None:
            samples = [Sample(c, "bpf.cpu.on_cpu_time", v) for c, v in (row.on_cpu or {}).items()]
            samples += [Sample(c, "bpf.network.io", v, NET) for c, v in (row.net or {}).items()]
            bpf = Bpf(samples, [], dict(row.paths), set(row.removed))
        out = acc.account(refs, files, (), bpf)
        cpu = {s.cgroup_id: s.value for s in out.samples if s.metric == "cpu.time"}
        assert cpu == pytest.approx(row.cpu), f"row {i}: cpu.time"
        for c in cpu:
            assert c in out.refs, f"row {i}: {c} exported without a resource"
        if row.pod_net is not None:
            pod = [s.value for s in out.samples if s.metric == "bpf.network.io" and s.cgroup_id == POD]
            assert pod == [pytest.approx(row.pod_net)], f"row {i}: pod network"
        if row.exported:
            done = acc.settle(out, pods_known={UID} if row.pods_known else set(), now=row.now)
            assert done.bpf_acked == row.acked, f"row {i}: acked"
            assert done.forgotten == row.forgotten, f"row {i}: forgotten"


def test_dead_container_is_exported_once_more_then_forgotten():
    run([
        Row({POD: 5.0, A: 2.0, B: 3.0}, cpu={POD: 5.0, A: 2.0, B: 3.0}),
        Row({POD: 5.5, A: 2.5}, cpu={POD: 5.5, A: 2.5, B: 3.0}, forgotten={B}),  # B's final
        Row({POD: 6.0, A: 3.0}, cpu={POD: 6.0, A: 3.0}),
    ])


def test_finals_survive_failed_exports():
    run([
        Row({POD: 5.0, A: 2.0, B: 3.0}, cpu={POD: 5.0, A: 2.0, B: 3.0}),
        Row({POD: 5.0, A: 2.0}, exported=False, cpu={POD: 5.0, A: 2.0, B: 3.0}),
        Row({POD: 5.0, A: 2.0}, exported=False, cpu={POD: 5.0, A: 2.0, B: 3.0}),
        Row({POD: 5.0, A: 2.0}, cpu={POD: 5.0, A: 2.0, B: 3.0}, forgotten={B}),
        Row({POD: 5.0, A: 2.0}, cpu={POD: 5.0, A: 2.0}),
    ])


def test_a_final_waits_for_its_pods_metadata_then_for_the_grace_period():
    run([
        Row({POD: 5.0, A: 2.0, B: 3.0}, pods_known=False, cpu={POD: 5.0, A: 2.0, B: 3.0}),
        Row({POD: 5.0, A: 2.0}, pods_known=False, now=0.0, cpu={POD: 5.0, A: 2.0, B: 3.0}),
        Row({POD: 5.0, A: 2.0}, pods_known=False, now=50.0, cpu={POD: 5.0, A: 2.0, B: 3.0}),
        Row({POD: 5.0, A: 2.0}, pods_known=False, now=101.0, cpu={POD: 5.0, A: 2.0, B: 3.0},
            forgotten={B}),  # unknown for longer than the grace period: late, not never
        Row({POD: 5.0, A: 2.0}, cpu={POD: 5.0, A: 2.0}),
    ], grace_seconds=100.0)


def test_bpf_tail_completes_a_stale_final_once():
    # A's file was last read at 2.0 s while BPF said 1.9; it ran 0.3 s more before it died.
    run([
        Row({POD: 5.0, A: 2.0}, on_cpu={A: 1.9}, cpu={POD: 5.0, A: 2.0}),
        Row({POD: 5.3}, on_cpu={A: 2.2}, removed={A}, cpu={POD: 5.3, A: 2.3},
            acked={A}, forgotten={A}),
    ])
    # The export failed: the tail is not added twice when BPF is read again.
    run([
        Row({POD: 5.0, A: 2.0}, on_cpu={A: 1.9}, cpu={POD: 5.0, A: 2.0}),
        Row({POD: 5.3}, on_cpu={A: 2.2}, removed={A}, exported=False, cpu={POD: 5.3, A: 2.3}),
        Row({POD: 5.3}, on_cpu={A: 2.2}, removed={A}, cpu={POD: 5.3, A: 2.3}, acked={A},
            forgotten={A}),
    ])


def test_a_final_is_bpfs_own_total_when_file_plus_tail_falls_short():
    # BPF saw A's whole life and was read after the file: it holds 0.1 s the file reading does
    # not (A ran while a busy node preempted the agent between its two reads). File + tail,
    # 2.0 + 0.9, is 0.1 s short of the kernel's 3.0; BPF's total, the scheduler's runtime
    # deltas that cpu.stat adds up too, is not. Both are lower bounds: the larger is billed.
    run([
        Row({POD: 5.0, A: 2.0}, on_cpu={A: 2.1}, cpu={POD: 5.0, A: 2.0}),
        Row({POD: 6.0}, on_cpu={A: 3.0}, removed={A}, cpu={POD: 6.0, A: 3.0}, acked={A},
            forgotten={A}),
    ])


def test_without_bpf_at_the_last_read_the_larger_of_file_and_bpf():
    run([
        Row({POD: 5.0, A: 2.0}, on_cpu={}, cpu={POD: 5.0, A: 2.0}),
        Row({POD: 5.0}, on_cpu={A: 2.4}, removed={A}, cpu={POD: 5.0, A: 2.4}, acked={A},
            forgotten={A}),
    ])


def test_a_container_born_and_dead_between_reads_is_billed_its_bpf_time():
    run([
        Row({POD: 5.0}, on_cpu={GHOST: 0.07}, paths={GHOST: GHOST_PATH}, removed={GHOST},
            cpu={POD: 5.0, GHOST: 0.07}, acked={GHOST}),
        Row({POD: 5.0}, on_cpu={}, cpu={POD: 5.0}),
    ])


def test_pod_bpf_series_sum_containers_and_never_go_down_when_one_is_freed():
    run([
        Row({POD: 5.0, A: 2.0, B: 3.0}, net={A: 100.0, B: 1000.0}, cpu={POD: 5.0, A: 2.0, B: 3.0},
            pod_net=1100.0),
        Row({POD: 5.0, A: 2.0}, net={A: 150.0, B: 1500.0}, removed={B},
            cpu={POD: 5.0, A: 2.0, B: 3.0}, pod_net=1650.0, acked={B}, forgotten={B}),
        Row({POD: 5.0, A: 2.0}, net={A: 200.0}, cpu={POD: 5.0, A: 2.0}, pod_net=1700.0),
    ])


def test_a_dead_container_whose_removal_record_was_lost_is_acked_not_resurrected():
    # cg_removed is an LRU hash: the directory being gone says the counters are final.
    run([
        Row({POD: 5.0, A: 2.0}, on_cpu={A: 0.05}, paths={A: REFS[A].path}, cpu={POD: 5.0, A: 2.0}),
        Row({POD: 5.0}, on_cpu={A: 0.05}, paths={A: REFS[A].path}, cpu={POD: 5.0, A: 2.0},
            acked={A}, forgotten={A}),
        Row({POD: 5.0}, on_cpu={}, cpu={POD: 5.0}),
    ])


@pytest.mark.parametrize("reads, expected, restarts", [
    ([5, 7, 9], [5, 7, 9], 0),
    ([5, 7, 2, 4], [5, 7, 9, 11], 1),  # evicted after 7, counted again from zero
    ([5, 1, 1, 3], [5, 6, 6, 8], 1),
    ([(1, 2), (3, 4), (1, 1)], [(1, 2), (3, 4), (4, 5)], 1),  # a histogram: all slots rebased
])
def test_cumulative_keeps_an_evicted_series_monotonic(reads, expected, restarts):
    c = Cumulative()
    got, n = [], 0
    for r in reads:
        v, restarted = c.update("k", r)
        got.append(v)
        n += restarted
    assert got == expected and n == restarts


@pytest.mark.parametrize("reads, expected", [
    ([(5, 1), (6, 1), (9, 0)], [6, 7, 9]),
    ([(5, 3), (6, 0), (9, 0)], [8, 8, 9]),  # a flush missed between the two reads: a pause
])
def test_held_back_adds_what_the_slots_hold_and_never_goes_down(reads, expected):
    h = HeldBack()
    assert [h.apply("k", v, extra) for v, extra in reads] == expected


def test_a_cgroup_billed_from_bpf_before_its_files_were_read_never_goes_down():
    # Found by BPF first (created after the walk), then read: the file's cpu.time (exact) is
    # below BPF's (high under load). The series holds until the file catches up: a drop
    # would be taken for a counter reset and billed twice.
    run([
        Row({POD: 5.0}, on_cpu={GHOST: 0.50}, paths={GHOST: GHOST_PATH}, cpu={POD: 5.0, GHOST: 0.50}),
        Row({POD: 5.2, GHOST: 0.47}, on_cpu={GHOST: 0.52}, paths={GHOST: GHOST_PATH},
            cpu={POD: 5.2, GHOST: 0.50}),
        Row({POD: 5.4, GHOST: 0.58}, on_cpu={GHOST: 0.62}, paths={GHOST: GHOST_PATH},
            cpu={POD: 5.4, GHOST: 0.58}),
        Row({POD: 5.4, GHOST: 0.59}, on_cpu={GHOST: 0.63}, paths={GHOST: GHOST_PATH},
            cpu={POD: 5.4, GHOST: 0.59}),
    ])
