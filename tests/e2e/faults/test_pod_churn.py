"""Fault: a pod churn storm, 500 short-lived pods in 5 minutes on this 2-core machine
(agent with eBPF → rotel → cost processor, every pod's cgroups really created, run and removed).

Lifetimes cycle through 0.3, 0.8, 2 and 3.5 s against a 1 s collection interval, so about
a third of the pods are born and dead between two reads of the cgroup files and are billed
from their BPF on-CPU time and the path seen at cgroup_mkdir. What must hold:

* memory stays bounded: the agent's RSS (from /proc/PID/status, sampled every few seconds)
  after the last pod is at most its RSS after the first 100 pods + RSS_MARGIN_KIB;
* nothing is leaked: no cgroup directory is left, the agent's descriptors come back to their
  count before the storm (it closes the files of removed cgroups), and the kernel holds no
  dying cgroup under our prefix (a kept descriptor would pin one);
* every pod is billed: each of the 500 pod uids is in the ledger with CPU, and the sum billed
  is within 3% of the sum of the pods' own cpu.stat (read after their work ended, before rmdir).
"""

from __future__ import annotations

import heapq
import os
import time
import uuid

import pytest

from otel_agent.k8s.static import write_static
from otel_agent.model import PodMeta
from tests.e2e.faults.conftest import burner
from tests.support.pipeline import (agent_process, cpu_seconds_of, cpu_usage_seconds, fd_count, ledger_cpu,
                                    proc_status_kib)

pytestmark = [pytest.mark.kernel, pytest.mark.e2e]

PODS = int(os.environ.get("OTEL_AGENT_CHURN_PODS", "500"))
SECONDS = float(os.environ.get("OTEL_AGENT_CHURN_SECONDS", "300"))
LIFETIMES = (0.3, 0.8, 2.0, 3.5)
WORK_SECONDS = 0.03  # CPU each pod's process burns (plus its own start-up)
# Headroom for RSS after the first 100 pods: glibc arenas and Python's allocator keep freed
# pages, and gRPC grows its buffers to the largest request seen. Per-pod state that leaked
# would grow with every pod; 400 more pods at even 40 KiB each would pass this margin.
RSS_MARGIN_KIB = 16 * 1024


def _dying(path) -> int:
    for line in (path / "cgroup.stat").read_text().splitlines():
        if line.startswith("nr_dying_descendants "):
            return int(line.split()[1])
    return 0


@pytest.mark.timeout(int(SECONDS) + 150)
def test_pod_churn_storm_bounded_memory_no_leak_every_pod_billed(synth, ledger, tmp_path):
    rotel, cost = ledger["rotel"], ledger["cost"]
    names = [(f"churn-{i % 5}", f"job-{i}", str(uuid.uuid4())) for i in range(PODS)]
    static = tmp_path / "pods.yaml"
    write_static(static, None, [PodMeta(uid, name, ns, node_name="node-a") for ns, name, uid in names])
    agent = agent_process(tmp_path, kubepods=synth.kubepods, endpoint=rotel.endpoint, interval_ms=1000,
                          bpf_profile="standard",
                          metadata=("--metadata", "static", "--static-metadata", str(static))).start()
    truth: dict[str, float] = {}
    samples: list[tuple[float, int, int]] = []  # (seconds into the storm, RSS KiB, fds)
    rss_after_100 = None
    try:
        deadline = time.monotonic() + 90
        while cost.points() == 0:
            assert time.monotonic() < deadline and agent.alive(), agent.log()
            time.sleep(0.5)
        time.sleep(3)
        fds_before = fd_count(agent.pid)
        t0 = time.monotonic()
        spacing = SECONDS / PODS
        live: list[tuple[float, int, object, object]] = []  # (remove at, i, pod, process)
        next_sample = t0
        i = 0
        while i < PODS or live:
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - t0, proc_status_kib(agent.pid), fd_count(agent.pid)))
                next_sample += 5
            if i < PODS and now >= t0 + i * spacing:
                ns, name, uid = names[i]
                pod = synth.add_pod(ns, name, uid=uid, containers=("main",))
                proc = synth.spawn(pod.container("main"), burner(WORK_SECONDS))
                heapq.heappush(live, (now + LIFETIMES[i % len(LIFETIMES)], i, pod, proc))
                i += 1
                if i == 100:
                    rss_after_100 = proc_status_kib(agent.pid)
                continue
            if live and now >= live[0][0]:
                _, _, pod, proc = heapq.heappop(live)
                assert proc.wait(timeout=30) == 0
                truth[pod.uid] = cpu_usage_seconds(pod.path)
                synth.remove_pod(pod)
                continue
            wake = [next_sample, now + 0.05]
            if i < PODS:
                wake.append(t0 + i * spacing)
            if live:
                wake.append(live[0][0])
            time.sleep(max(0.0, min(wake) - time.monotonic()))
        storm_seconds = time.monotonic() - t0
        time.sleep(4)  # the last finals go out, then are acked and forgotten
        rss_end = proc_status_kib(agent.pid)
        fds_end = fd_count(agent.pid)
        samples.append((time.monotonic() - t0, rss_end, fds_end))
        agent_cpu = cpu_seconds_of(agent.pid)
        assert agent.alive(), agent.log()
    finally:
        code = agent.stop()
    assert code == 0, agent.log()
    cost.wait_quiet()
    assert cost.stop() == 0, cost.log()

    report = (f"{PODS} pods in {storm_seconds:.0f} s; agent RSS KiB after 100 pods {rss_after_100}, "
              f"at the end {rss_end}; fds {fds_before} -> {fds_end}; agent CPU "
              f"{agent_cpu:.1f} s; samples {samples}")
    print(report)
    assert storm_seconds < SECONDS + 30, report  # the machine kept up with the schedule
    assert rss_end <= rss_after_100 + RSS_MARGIN_KIB, report
    assert fds_end <= fds_before, report
    left = [p for p in synth.kubepods_path.rglob("*") if p.is_dir() and "-pod" in p.name]
    assert not left, left
    assert _dying(synth.path) == 0

    bills, unallocated = ledger_cpu(cost.db)
    missing = [uid for uid in truth if uid not in bills or bills[uid].cpu_seconds <= 0]
    assert not missing, f"{len(missing)} of {PODS} pods not billed"
    assert {bills[uid].namespace for uid in truth} == {f"churn-{k}" for k in range(5)}
    billed, kernel = sum(bills[uid].cpu_seconds for uid in truth), sum(truth.values())
    worst = max(abs(bills[uid].cpu_seconds / truth[uid] - 1) for uid in truth)
    print(f"billed {billed:.3f} s, cpu.stat {kernel:.3f} s, unallocated {unallocated:.3f} s, "
          f"worst pod off by {worst:.1%}")
    assert billed == pytest.approx(kernel, rel=0.03)
