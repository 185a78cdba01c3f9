"""Faults and syscalls families (raw tracepoints) against what the process itself did."""

from __future__ import annotations

import os

import pytest

from tests.kernel.ebpf.cgtools import hist, value, wait_json

pytestmark = pytest.mark.kernel

PAGES = 20_000
CALLS = 50_000


def test_page_faults_are_the_cgroups_own(collector, cgroups):
    """Each fresh page written is one user-mode fault in the writer's cgroup; the kernel's own
    count for the process (rusage, kernel-mode faults too) bounds it from above."""
    _, pod = cgroups.pod()
    _, ctr = cgroups.container(pod)
    cgid = os.stat(ctr).st_ino
    out = wait_json(cgroups.spawn(ctr, "touch", str(PAGES)))
    r = collector.read()
    faults = value(r, cgid, "bpf.paging.faults")
    # + a few for the exit path after the process counted its own
    assert PAGES <= faults <= out["faults_total"] + 50, (faults, out["faults_total"])


def test_syscalls_counted_and_timed_per_cgroup(collector, cgroups):
    _, pod = cgroups.pod()
    _, quiet_pod = cgroups.pod()
    _, ctr = cgroups.container(pod)
    _, quiet = cgroups.container(quiet_pod)
    cgid, quiet_id = os.stat(ctr).st_ino, os.stat(quiet).st_ino
    wait_json(cgroups.spawn(ctr, "syscalls", str(CALLS)))
    wait_json(cgroups.spawn(quiet, "syscalls", "0"))
    r = collector.read()
    busy = value(r, cgid, "bpf.syscalls")
    idle = value(r, quiet_id, "bpf.syscalls")
    # The same interpreter start-up in both: the difference is the loop, give or take noise.
    assert CALLS <= busy - idle <= CALLS * 1.05 + 500, (busy, idle)
    h = hist(r, cgid, "bpf.syscall.duration")
    # Every call that returned was timed (an exit_group never returns).
    assert busy - 2 <= h.count <= busy, (h.count, busy)
    assert 0 < h.sum < 5.0
