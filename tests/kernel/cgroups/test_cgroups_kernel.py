"""The cgroup layer on real cgroup v2 directories made by the synthetic kubelet.

Checks what fixtures cannot: that ids are the kernel's inodes, that a process's CPU time
lands in its pod's cpu.stat and comes out of the reader unchanged, that removal shows as
`gone`, and what a hybrid node leaves out of v2 is reported absent rather than as zero.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_agent.cgroups.discovery import discover
from otel_agent.cgroups.layout import classify
from otel_agent.cgroups.mount import cgroup2_mounts, controllers, find_cgroup2_mount
from otel_agent.cgroups.reader import CgroupReader
from otel_agent.model import QosClass, Scope
from demo.synthetic import SyntheticNode, sweep_stale, unique_prefix

pytestmark = pytest.mark.kernel

BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"


@pytest.fixture(scope="module")
def root() -> Path:
    return find_cgroup2_mount()


@pytest.fixture(params=["systemd", "cgroupfs"])
def node(root, request):
    n = SyntheticNode(root, unique_prefix("otel-agent-test-cgroups"), driver=request.param)
    with n:
        yield n
    assert not n.path.exists(), f"{n.path} left behind"


def burn(node: SyntheticNode, container, seconds: float) -> float:
    """Run a CPU burner in `container`; returns its CPU seconds from the kernel's rusage."""
    proc = node.spawn(container, [sys.executable, "-c", BURN.format(s=seconds)])
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return ru.ru_utime + ru.ru_stime


def usage_seconds(path: Path) -> float:
    for line in (path / "cpu.stat").read_text().splitlines():
        key, value = line.split()
        if key == "usage_usec":
            return int(value) / 1e6
    raise AssertionError(f"{path}/cpu.stat has no usage_usec")


def test_the_mount_is_a_cgroup2_mount(root):
    assert root in cgroup2_mounts()
    assert (root / "cgroup.controllers").is_file()


def test_pod_cpu_time_matches_rusage_and_cpu_stat(root, node):
    pod = node.add_pod("team-a", "burner", qos=QosClass.BURSTABLE, containers=["app", "idle"])
    app, idle = pod.containers
    d = discover(root, kubepods=node.kubepods)
    refs = {r.cgroup_id: r for r in d.refs}
    # discovery's ids (d_ino) are the inodes the synthetic kubelet saw with stat()
    assert refs[pod.cgroup_id].scope is Scope.POD and refs[pod.cgroup_id].pod_uid == pod.uid
    assert refs[app.cgroup_id].scope is Scope.CONTAINER
    assert refs[app.cgroup_id].container_id == app.id and refs[idle.cgroup_id].pod_uid == pod.uid
    assert not d.skipped

    rusage_s = burn(node, app, 1.0)
    with CgroupReader(root) as reader:
        reading = reader.read(d.refs)
    cpu = {s.cgroup_id: s.value for s in reading.samples if s.metric == "cpu.time"}
    assert cpu[pod.cgroup_id] == pytest.approx(rusage_s, rel=0.02)
    assert cpu[pod.cgroup_id] == usage_seconds(pod.path)  # nothing runs there any more
    assert cpu[app.cgroup_id] == cpu[pod.cgroup_id] and cpu[idle.cgroup_id] == 0
    assert cpu[d.refs[1].cgroup_id] >= cpu[pod.cgroup_id]  # kubepods holds every pod
    modes = {s.attributes: s.value for s in reading.samples
             if s.cgroup_id == pod.cgroup_id and s.metric == "cpu.mode_time"}
    assert sum(modes.values()) == pytest.approx(cpu[pod.cgroup_id], abs=2e-3)


def test_the_child_joined_its_container_before_exec(node):
    pod = node.add_pod("team-a", "sleeper", containers=["app"], runtime="cri-o")
    proc = node.spawn(pod.containers[0], ["sleep", "30"])
    rel = "/" + str(pod.containers[0].path.relative_to(node.root))
    assert Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines()[-1] == f"0::{rel}"
    assert classify(rel, node.kubepods).container_id == pod.containers[0].id
    node.remove_pod(pod)  # kills the sleeper
    assert proc.returncode is not None and not pod.path.exists()


def test_removed_pod_is_gone_and_memory_absent_on_this_kernel(root, node):
    keep = node.add_pod("team-b", "keep", qos=QosClass.GUARANTEED, runtime="docker")
    drop = node.add_pod("team-b", "drop", qos=QosClass.BEST_EFFORT, containers=["a", "b"])
    refs = discover(root, kubepods=node.kubepods).refs
    with CgroupReader(root) as reader:
        first = reader.read(refs)
        node.remove_pod(drop)
        second = reader.read(refs)  # same refs: the kept descriptors now fail with ENODEV
        assert second.gone == {drop.cgroup_id} | {c.cgroup_id for c in drop.containers}
        assert reader.open_cgroups == len(refs) - 3
        assert not {s.cgroup_id for s in second.samples} & second.gone
    assert keep.cgroup_id in {s.cgroup_id for s in second.samples}
    pod_memory = [s for s in first.samples
                  if s.cgroup_id == keep.cgroup_id and s.metric.startswith("memory.")]
    if "memory" in controllers(root):  # a pure-v2 node: real values
        assert "memory.current" not in first.absent and pod_memory
    else:  # this machine: memory bound to v1, so no file, no sample, and said so
        assert not (keep.path / "memory.current").exists()
        assert {"memory.current", "memory.stat"} <= first.absent and not pod_memory
    if "io" not in controllers(root):
        assert "io.stat" in first.absent
        assert not [s for s in first.samples if s.metric.startswith("disk.")]


def test_dead_containers_usage_stays_with_the_pod(root, node):
    pod = node.add_pod("team-c", "job", containers=[])
    job = node.add_container(pod, "once")
    rusage_s = burn(node, job, 0.2)
    node.remove_container(job)
    assert not job.path.exists() and pod.containers == []
    d = discover(root, kubepods=node.kubepods)
    assert [r.scope for r in d.refs if r.pod_uid == pod.uid] == [Scope.POD]
    with CgroupReader(root) as reader:
        (cpu,) = [s.value for s in reader.read(d.refs).samples
                  if s.cgroup_id == pod.cgroup_id and s.metric == "cpu.time"]
    assert cpu == pytest.approx(rusage_s, rel=0.05)


def test_sweep_stale_removes_dead_runs_only(root):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = SyntheticNode(root, f"otel-agent-test-sweep-{dead.pid}-abc123")
    stale.create()
    pod = stale.add_pod("x", "orphan", containers=["app"])
    orphan = stale.spawn(pod.containers[0], ["sleep", "30"])
    live = SyntheticNode(root, unique_prefix("otel-agent-test-sweep"))
    with live:
        removed = sweep_stale(root, "otel-agent-test-sweep-*")
        assert removed == [stale.path] and live.path.exists()
        assert orphan.wait(timeout=5) == -9
    assert not stale.path.exists() and not live.path.exists()


def test_discoverer_sees_every_creation_and_removal_on_real_cgroupfs(root, node):
    """nr_descendants of kubepods counts tiers, pods and containers as the kernel has them;
    a walk is skipped only while nothing was created or removed."""
    from otel_agent.cgroups.discovery import Discoverer

    def ids(d):
        return {r.cgroup_id for r in d.refs if r.scope in (Scope.POD, Scope.CONTAINER)}

    p = node.add_pod("shop", "web-1", containers=("app",))
    d = Discoverer(root, kubepods=node.kubepods)
    try:
        assert ids(d.discover(0.0)) == {p.cgroup_id, p.containers[0].cgroup_id}
        d.discover(1.0)
        assert d.walks == 1
        q = node.add_pod("shop", "web-2", containers=("app", "sidecar"))  # created: count moves
        assert ids(d.discover(2.0)) == {p.cgroup_id, p.containers[0].cgroup_id, q.cgroup_id,
                                        *(c.cgroup_id for c in q.containers)}
        assert d.walks == 2
        node.remove_pod(p)  # removed: count moves too
        assert ids(d.discover(3.0)) == {q.cgroup_id, *(c.cgroup_id for c in q.containers)}
        assert d.walks == 3
        d.discover(4.0)
        assert d.walks == 3
    finally:
        d.close()


def test_agent_reads_a_container_created_while_another_went_in_the_same_cycle(root, node):
    """One removal and one creation leave kubepods' descendant count unchanged, so the walk is
    skipped; the reader's ENODEV for the removed one makes the agent walk and read the new one
    in the same cycle (and export the removed one's final)."""
    from otel_agent.agent import Agent
    from otel_agent.config import AgentConfig
    from tests.unit.agent.test_agent_cycle import DictMetadata, RecordingExporter

    pod = node.add_pod("shop", "web-1", containers=("a",))
    meta, exp = DictMetadata(), RecordingExporter()
    agent = Agent(AgentConfig(node_name="node-a", kubepods=node.kubepods, bpf_profile="off"),
                  cgroup_root=root, metadata=meta, exporter=exp)
    try:
        for _ in range(2):
            assert agent.export(agent.collect())
        walks = agent.discoverer.walks
        old = pod.container("a")
        node.remove_container(old, pod)
        new = node.add_container(pod, "b")
        assert agent.export(agent.collect())
        ids = {p.resource.get("container.id") for p in exp.exports[-1] if p.name == "container.cpu.time"}
        assert {old.id, new.id} <= ids
        assert agent.discoverer.walks == walks + 1
    finally:
        agent.close()
