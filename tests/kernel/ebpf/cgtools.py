"""Kernel-tier helpers for the eBPF source: real cgroups in kubelet's layout, real processes.

Every test builds its cgroups under /sys/fs/cgroup/unified/otel-ebpf-test-<pid>-<n>/ and removes
them afterwards, killing whatever is left inside. Processes join their cgroup between fork and
exec, so all of their CPU time, faults and sockets belong to it.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

V2_ROOT = Path("/sys/fs/cgroup/unified")
WORKLOAD = Path(__file__).with_name("workload.py")
_counter = itertools.count()


def steal_ticks() -> list[int]:
    """Per-CPU steal time from /proc/stat, in USER_HZ ticks: time the hypervisor ran something
    else while this guest's vCPU had a task current."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        f = line.split()
        if f[0].startswith("cpu") and f[0] != "cpu":
            out.append(int(f[8]))
    return out


class StolenTime:
    """Upper bound of the CPU time the hypervisor stole on this machine between start and now.

    With paravirt steal accounting (KVM/Firecracker guests) the kernel leaves stolen time out
    of every task's sum_exec_runtime, hence out of rusage and cpu.stat. The CPU program counts
    the scheduler's runtime deltas, which leave it out too; only a slice no runtime event
    counted (a real-time task before 6.8) is timed from switch to switch, wall-clock time
    billed to the task that was current. There eBPF may exceed the kernel's CPU time by at most
    the steal of the interval. /proc/stat
    counts it in whole ticks (truncated): a CPU whose counter moved by n ticks stole less than
    n + 1; one whose counter did not move stole no whole tick, and is allowed nothing, so on an
    unloaded host the bound is zero and the assertion as strict as without it.
    """

    def __init__(self) -> None:
        self._start = steal_ticks()

    def seconds(self) -> float:
        hz = os.sysconf("SC_CLK_TCK")
        moved = [b - a for a, b in zip(self._start, steal_ticks())]
        return sum(n + 1 for n in moved if n > 0) / hz


def cpu_usage_seconds(cg: Path) -> float:
    for line in (cg / "cpu.stat").read_text().splitlines():
        k, v = line.split()
        if k == "usage_usec":
            return int(v) / 1e6
    raise AssertionError(f"no usage_usec in {cg}/cpu.stat")


class Cgroups:
    """Creates kubelet-layout pod and container cgroups under one test prefix."""

    def __init__(self) -> None:
        self.prefix = V2_ROOT / f"otel-ebpf-test-{os.getpid()}-{next(_counter)}"
        self.kubepods = self.prefix / "kubepods.slice"
        self.burstable = self.kubepods / "kubepods-burstable.slice"
        self.burstable.mkdir(parents=True)
        self.procs: list[subprocess.Popen] = []

    def pod(self) -> tuple[str, Path]:
        uid = str(uuid.uuid4())
        p = self.burstable / f"kubepods-burstable-pod{uid.replace('-', '_')}.slice"
        p.mkdir()
        return uid, p

    def container(self, pod: Path) -> tuple[str, Path]:
        cid = uuid.uuid4().hex + uuid.uuid4().hex
        c = pod / f"cri-containerd-{cid}.scope"
        c.mkdir()
        return cid, c

    def rel(self, path: Path) -> str:
        return "/" + str(path.relative_to(V2_ROOT))

    def spawn(self, cg: Path, *args: str, cpu: int | None = None) -> subprocess.Popen:
        procs = str(cg / "cgroup.procs")

        def join() -> None:  # in the child, before exec
            with open(procs, "w") as f:
                f.write("0")
            if cpu is not None:  # after joining: the wait of the migration is the cgroup's
                os.sched_setaffinity(0, {cpu})
            # The kernel's run_delay so far was spent before joining: not the cgroup's.
            with open(f"/tmp/otel-ebpf-join-{os.getpid()}", "w") as f, open("/proc/self/schedstat") as s:
                f.write(s.read().split()[1])

        p = subprocess.Popen([sys.executable, str(WORKLOAD), *args], stdout=subprocess.PIPE,
                             text=True, preexec_fn=join)
        self.procs.append(p)
        return p

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for d in sorted((p for p in self.prefix.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _rmdir(d)
        _rmdir(self.prefix)


def _rmdir(d: Path) -> None:
    for _ in range(50):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # still populated: kill what is left and retry
            kill = d / "cgroup.kill"
            if kill.exists():
                kill.write_text("1")
            time.sleep(0.02)
    d.rmdir()


def run_delay_at_join(p: subprocess.Popen) -> float:
    """Seconds the process had waited for a CPU before it joined its cgroup."""
    path = Path(f"/tmp/otel-ebpf-join-{p.pid}")
    try:
        return int(path.read_text()) / 1e9
    finally:
        path.unlink(missing_ok=True)


def wait_json(p: subprocess.Popen, timeout: float = 30) -> dict:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"workload failed: {p.args}"
    return json.loads(out.strip().splitlines()[-1])


def wait_rusage(p: subprocess.Popen) -> tuple[dict, float]:
    """Reap with wait4: (its JSON line, user+system CPU seconds of the process)."""
    out = p.stdout.read() if p.stdout else ""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    assert p.returncode == 0, f"workload failed: {p.args}"
    return json.loads(out.strip().splitlines()[-1]), ru.ru_utime + ru.ru_stime



def value(reading, cgid: int, metric: str, attrs: dict[str, str] | None = None) -> float:
    """Sum of the samples of one cgroup and metric whose attributes include `attrs`."""
    want = set((attrs or {}).items())
    return sum(s.value for s in reading.samples
               if s.cgroup_id == cgid and s.metric == metric and want <= set(s.attributes))


def hist(reading, cgid: int, metric: str):
    hs = [h for h in reading.histograms if h.cgroup_id == cgid and h.metric == metric]
    return hs[0] if hs else None
