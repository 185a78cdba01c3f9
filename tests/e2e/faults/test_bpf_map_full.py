"""Fault: the BPF maps are far too small for the node (OTEL_AGENT_BPF_MAP_ENTRIES=8, with a
dozen pods and every other cgroup of this machine competing for the entries).

BPF cannot count what it cannot insert. What must hold: the overflow is counted
(otel_agent.bpf.map.update_failures / evictions) and said in a log warning, the agent keeps
running, and the cgroup-file metrics, which need no map, keep flowing: every pod's exported
CPU and its ledger CPU match its cpu.stat within 1%, including pods removed mid-run.

The agent pushes to an OTLP sink here (the self-metrics are not billed, so the cost processor
does not keep them); the same requests are then written into a ledger with the cost
processor's own decode + store, as its receiver does.

Paths evicted from the cg_paths LRU before any read saw them are counted too (inserts -
entries - deletes; tests/kernel/ebpf/test_lifecycle.py). Their cost is bounded: only a
container born and dead between two reads needs its BPF path, and without it its CPU still
reaches the ledger through kubepods (as __unallocated__).
"""

from __future__ import annotations

import time

import pytest

from otel_agent.cost.ingest import decode
from otel_agent.cost.pricing import parse_pricing
from otel_agent.cost.store import Store
from otel_agent.k8s.static import write_static
from tests.support.sink import OtlpSink
from tests.e2e.faults.conftest import duty_burner, static_meta
from tests.support.pipeline import PRICING_YAML, agent_process, cpu_usage_seconds, ledger_cpu

pytestmark = [pytest.mark.kernel, pytest.mark.e2e, pytest.mark.timeout(180)]

MAP_ENTRIES = 8
PODS = 12


def _last(points, name: str) -> dict[tuple, float]:
    out: dict[tuple, tuple[int, float]] = {}
    for p in points:
        if p.name == name:
            key = (p.resource.get("k8s.pod.uid"), tuple(sorted(p.attributes.items())))
            if key not in out or p.time_unix_nano >= out[key][0]:
                out[key] = (p.time_unix_nano, p.value)
    return {k: v for k, (_, v) in out.items()}


def test_bpf_map_full_is_counted_and_cgroup_metrics_keep_flowing(synth, tmp_path):
    # Half the pods exist before the agent (found by its scan of the tree), half are created
    # after it attached (their cgroup_mkdir events compete for the path map's entries).
    pods = [synth.add_pod(f"team-{i % 3}", f"svc-{i}", containers=("app",)) for i in range(PODS // 2)]
    static = tmp_path / "pods.yaml"
    write_static(static, None, static_meta(pods))
    with OtlpSink() as sink:
        agent = agent_process(tmp_path, kubepods=synth.kubepods, endpoint=sink.endpoint,
                              bpf_profile="minimal", env_extra={"OTEL_AGENT_BPF_MAP_ENTRIES": str(MAP_ENTRIES)},
                              metadata=("--metadata", "static", "--static-metadata", str(static))).start()
        try:
            assert sink.wait_for(1, 90), agent.log()
            pods += [synth.add_pod(f"team-{i % 3}", f"svc-{i}", containers=("app",))
                     for i in range(PODS // 2, PODS)]
            write_static(static, None, static_meta(pods))
            burners = [synth.spawn(p.container("app"), duty_burner(0.6, sleep_seconds=0.2)) for p in pods]
            for b in burners:
                b.wait(timeout=90)
            time.sleep(2.5)
            truth = {p.uid: cpu_usage_seconds(p.path) for p in pods}
            removed = pods[::2]  # half go away: their finals must still come out
            for p in removed:
                synth.remove_pod(p)
            n = len(sink.requests)
            assert sink.wait_for(n + 3, 30)
            assert agent.alive(), agent.log()
        finally:
            code = agent.stop()
        log = agent.log(100000)
        assert code == 0, log
        requests = list(sink.requests)
        points = sink.points()

    assert "Traceback" not in log
    assert "eBPF profile minimal: attached lifecycle, cpu" in log, log
    assert f"of {MAP_ENTRIES} entries" in log or "lost data" in log  # the warning
    capacity = _last(points, "otel_agent.bpf.map.capacity")
    assert capacity and all(v == MAP_ENTRIES for k, v in capacity.items() if dict(k[1])["otel_agent.bpf.map.name"] != "tasks")
    failures = _last(points, "otel_agent.bpf.map.update_failures")
    evictions = _last(points, "otel_agent.bpf.map.evictions")
    lost = {dict(k[1])["otel_agent.bpf.map.name"]: v for k, v in failures.items() if v > 0}
    lost.update({f"{dict(k[1])['otel_agent.bpf.map.name']} (evicted)": v for k, v in evictions.items() if v > 0})
    assert lost, "a full map counted no failed insert"
    # The per-cgroup CPU map is an LRU hash: full shows as evictions (entries that were read
    # once and are gone while their cgroup lives).
    assert lost.get("cpu_time", 0) + lost.get("cpu_time (evicted)", 0) > 0, lost

    pod_cpu = {uid: v for (uid, _), v in _last(points, "k8s.pod.cpu.time").items()}
    for p in pods:
        assert pod_cpu[p.uid] == pytest.approx(truth[p.uid], rel=0.01), p.name

    db = tmp_path / "ledger.db"
    store = Store(f"sqlite:///{db}", pricing=parse_pricing(PRICING_YAML, "pricing.yaml"))
    try:
        for r in requests:
            store.write(decode(r, now_ns=time.time_ns()))
        store.refresh()
    finally:
        store.close()
    bills, _ = ledger_cpu(db)
    for p in pods:
        assert bills[p.uid].namespace == p.namespace
        assert bills[p.uid].cpu_seconds == pytest.approx(truth[p.uid], rel=0.01), p.name
    # the workload ran: 0.6 s by the burner's own clock (cpu.stat trailed it by 168 µs once)
    assert truth[pods[0].uid] >= 0.6 * 0.99
