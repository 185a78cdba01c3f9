"""Short-lived containers, map pressure, and what happens without the privileges BPF needs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from otel_agent.cgroups.layout import classify
from otel_agent.model import Scope
from tests.kernel.ebpf.cgtools import V2_ROOT, StolenTime, value, wait_json, wait_rusage

pytestmark = pytest.mark.kernel


def test_containers_born_and_dead_between_two_reads_are_billed_then_freed(collector, cgroups):
    collector.read()
    stolen = StolenTime()
    uid, pod = cgroups.pod()
    made = []  # (cgroup id, rel path, container id, CPU seconds of its process)
    for batch in range(5):  # 20 containers, 4 alive at a time, ~0.3 s of CPU each
        live = []
        for _ in range(4):
            cid, ctr = cgroups.container(pod)
            live.append((os.stat(ctr).st_ino, ctr, cid, cgroups.spawn(ctr, "burn", "0.3")))
        for cgid, ctr, cid, p in live:
            _, cpu = wait_rusage(p)
            ctr.rmdir()
            made.append((cgid, cgroups.rel(ctr), cid, cpu))
    r = collector.read()
    steal = stolen.seconds()

    kubepods = cgroups.rel(cgroups.kubepods)
    for cgid, rel, cid, cpu in made:
        assert cgid in r.removed, f"container {cid[:12]} not reported removed"
        assert r.paths.get(cgid) == rel
        c = classify(r.paths[cgid], kubepods=kubepods)
        assert c is not None and c.scope is Scope.CONTAINER and c.pod_uid == uid and c.container_id == cid
        ebpf = value(r, cgid, "bpf.cpu.on_cpu_time")
        # rusage leaves out time the hypervisor stole; eBPF, timing switches, includes it.
        assert cpu - 0.05 * cpu <= ebpf <= cpu + 0.05 * cpu + steal, (cid[:12], ebpf, cpu, steal)

    ids = {m[0] for m in made}
    collector.ack(r.removed)
    after = collector.read()
    assert not ids & {s.cgroup_id for s in after.samples}
    assert not ids & {h.cgroup_id for h in after.histograms}
    assert not ids & (set(after.paths) | after.removed)
    # Freed in the kernel too, not only hidden: the map no longer holds them.
    assert not ids & {k for k, _ in collector._readers["cpu_time"].read()}
    assert not ids & {k for k, _ in collector._readers["cg_paths"].read()}


def test_tiny_map_fills_says_so_and_keeps_counting(cgroups, caplog):
    from otel_agent.ebpf import BpfCollector, BpfConfig, probe

    col = BpfCollector(BpfConfig(profile="minimal", cgroup_root=V2_ROOT, map_max_entries=4))
    col.start()
    try:
        _, pod = cgroups.pod()
        ids = []
        with caplog.at_level(logging.WARNING, logger="otel_agent.ebpf"):
            for _ in range(6):  # six cgroups, each read while alive, into maps of four
                _, ctr = cgroups.container(pod)
                ids.append(os.stat(ctr).st_ino)
                wait_json(cgroups.spawn(ctr, "burn", "0.05"))
                r = col.read()
                assert value(r, ids[-1], "bpf.cpu.on_cpu_time") > 0.04  # the newest is counted
        health = {(s.metric, dict(s.attributes)["otel_agent.bpf.map.name"]): s.value for s in r.health}
        assert health[("self.bpf.map.capacity", "cpu_time")] == 4
        assert health[("self.bpf.map.entries", "cpu_time")] >= 4 * 0.9
        assert health[("self.bpf.map.evictions", "cpu_time")] + \
            health[("self.bpf.map.update_failures", "cpu_time")] >= 1
        assert any("cpu_time" in m and "near capacity" in m for m in caplog.messages)
        assert any("cpu_time" in m and "lost data" in m for m in caplog.messages)
        checks = {c.name: c for c in probe(col.cfg, collector=col) if c.name.startswith("bpf map")}
        assert not checks["bpf map cpu_time"].ok and "raise bpf_map_entries" in checks["bpf map cpu_time"].detail
    finally:
        col.stop()
        col.stop()  # idempotent


_START = textwrap.dedent("""
    import json, sys
    from otel_agent.ebpf import BpfCollector, BpfConfig
    from otel_agent.errors import SourceError
    col = BpfCollector(BpfConfig(profile="standard"))
    try:
        status = col.start()
    except SourceError as e:
        print(json.dumps({"error": str(e)}))
    else:
        print(json.dumps({k: [v.attached, v.detail] for k, v in status.items()}))
        col.stop()
""")


def _start_without(caps: str) -> dict:
    r = subprocess.run(["capsh", f"--drop={caps}", "--", "-c", f"{sys.executable} -c '{_START}'"],
                       capture_output=True, text=True, timeout=60, cwd=os.getcwd())
    assert r.returncode == 0, r.stderr
    import json

    return json.loads(r.stdout.strip().splitlines()[-1])


def test_without_bpf_capabilities_start_says_which(collector):
    out = _start_without("cap_bpf,cap_perfmon,cap_sys_admin")
    assert "CAP_BPF" in out["error"] and "CAP_PERFMON" in out["error"]


def test_without_net_admin_only_the_network_family_fails(collector):
    out = _start_without("cap_net_admin")
    assert out["network"][0] is False and "CAP_NET_ADMIN" in out["network"][1]
    assert out["cpu"][0] and out["faults"][0] and out["lifecycle"][0]


def test_paths_evicted_before_any_read_are_counted(cgroups):
    """cg_paths is an LRU hash: paths of cgroups created faster than the agent reads push each
    other out before user space could see them. The program counts its inserts, so evictions
    are inserts - entries - the agent's own deletes, never invisible."""
    from otel_agent.ebpf import BpfCollector, BpfConfig

    col = BpfCollector(BpfConfig(profile="minimal", cgroup_root=V2_ROOT, map_max_entries=4))
    col.start()
    try:
        col.read()
        _, pod = cgroups.pod()
        for _ in range(9):
            cgroups.container(pod)
        r = col.read()
    finally:
        col.stop()
    health = {(s.metric, dict(s.attributes)["otel_agent.bpf.map.name"]): s.value for s in r.health}
    assert health[("self.bpf.map.entries", "cg_paths")] == 4
    # 10 mkdirs (pod + 9 containers) into 4 entries: at least 6 pushed out unseen
    assert health[("self.bpf.map.evictions", "cg_paths")] >= 6, health
