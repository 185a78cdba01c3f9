"""Collection-cycle time and agent RSS for 10, 100 and 1000 synthetic pods (3 containers each,
real cgroup directories), pinned to one core.

A cycle is what the agent does every interval before handing data to the exporter: discover
cgroups, read their stat files, resolve metadata, convert to the OTLP data model. The export
(protobuf encoding + gRPC send) runs after it and is reported on its own line, against a real
OTLP/gRPC receiver on loopback. Each size runs in a fresh process so RSS is that size's own.

    .venv/bin/python -m bench.agent            # all sizes
    .venv/bin/python -m bench.agent --pods 100 # one size (what the parent runs per size)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

TARGET_MS = {100: 20.0, 1000: 200.0}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_size(pods: int, cycles: int) -> dict:
    from otel_agent.agent import Agent
    from otel_agent.cgroups.mount import find_cgroup2_mount
    from otel_agent.config import AgentConfig
    from otel_agent.k8s.static import StaticSource, write_static
    from otel_agent.model import ContainerMeta, NodeMeta, PodMeta
    from otel_agent.otlp.exporter import make_exporter
    from tests.support.sink import OtlpSink
    from demo.synthetic import SyntheticNode, unique_prefix

    os.sched_setaffinity(0, {0})
    root = find_cgroup2_mount()
    with SyntheticNode(root, unique_prefix("otel-agent-bench")) as synth, OtlpSink() as sink, \
            tempfile.TemporaryDirectory() as tmp:
        metas = []
        for i in range(pods):
            p = synth.add_pod(f"ns-{i % 10}", f"pod-{i}", containers=("app", "sidecar", "init"))
            metas.append(PodMeta(p.uid, p.name, p.namespace, labels={"team": f"t{i % 7}"},
                                 workload={"k8s.deployment.name": f"d{i % 50}"},
                                 containers=tuple(ContainerMeta(c.name, c.id, cpu_request_cores=0.1)
                                                  for c in p.containers)))
        static = Path(tmp) / "pods.yaml"
        write_static(static, NodeMeta("bench-node", cpu_capacity_cores=2.0), metas)
        cfg = AgentConfig(node_name="bench-node", kubepods=synth.kubepods, bpf_profile="off",
                          endpoint=sink.endpoint, insecure=True)
        meta = StaticSource(static)
        meta.start()
        agent = Agent(cfg, cgroup_root=root, metadata=meta, exporter=make_exporter(cfg))
        agent.export(agent.collect())  # warm: descriptors opened, resources cached
        wall, cpu, export_s, points = [], [], [], 0
        for _ in range(cycles):
            c0, w0 = time.process_time(), time.perf_counter()
            cycle = agent.collect()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            e0 = time.perf_counter()
            assert agent.export(cycle), "export failed"
            export_s.append(time.perf_counter() - e0)
            points = cycle.points
        rss = rss_mib()
        agent.close()
        meta.stop()
    return {"pods": pods, "cgroups": pods * 4, "points": points,
            "cycle_ms_median": statistics.median(wall) * 1000,
            "cycle_cpu_ms_median": statistics.median(cpu) * 1000,
            "export_ms_median": statistics.median(export_s) * 1000,
            "rss_mib": rss}


def agent_process_memory(pods: int = 100, exports: int = 8) -> dict:
    """The real `otel-agent run` process with the `standard` eBPF profile on `pods` pods:
    steady RSS after `exports` exports, and its peak (VmHWM: BCC's compile)."""
    import signal

    from otel_agent.cgroups.mount import find_cgroup2_mount
    from tests.support.sink import OtlpSink
    from demo.synthetic import SyntheticNode, unique_prefix

    root = find_cgroup2_mount()
    with SyntheticNode(root, unique_prefix("otel-agent-bench")) as synth, OtlpSink() as sink:
        for i in range(pods):
            synth.add_pod(f"ns-{i % 10}", f"pod-{i}", containers=("app", "sidecar", "init"))
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
                   OTEL_EXPORTER_OTLP_INSECURE="true", OTEL_METRIC_EXPORT_INTERVAL="1000")
        t0 = time.monotonic()
        agent = subprocess.Popen([sys.executable, "-m", "otel_agent", "run", "--metadata", "cgroup",
                                  "--kubepods", synth.kubepods, "--bpf-profile", "standard",
                                  "--health-listen", "off"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert sink.wait_for(1, 120), "agent exported nothing"
            first_s = time.monotonic() - t0
            assert sink.wait_for(exports, 120)
            status = Path(f"/proc/{agent.pid}/status").read_text()
            cpu_ticks = sum(int(x) for x in Path(f"/proc/{agent.pid}/stat").read_text()
                            .rsplit(")", 1)[1].split()[11:13])
        finally:
            agent.send_signal(signal.SIGTERM)
            _, err = agent.communicate(timeout=60)
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
          if line.startswith(("VmRSS", "VmHWM", "RssAnon", "RssFile"))}
    bpf_on = "attached cpu" in err or "attached lifecycle" in err
    return {"pods": pods, "bpf": bpf_on, "first_export_s": first_s,
            "rss_mib": kb["VmRSS"] / 1024, "peak_mib": kb["VmHWM"] / 1024,
            "anon_mib": kb["RssAnon"] / 1024, "file_mib": kb["RssFile"] / 1024,
            "cpu_s": cpu_ticks / os.sysconf("SC_CLK_TCK")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int)
    ap.add_argument("--cycles", type=int, default=15)
    a = ap.parse_args(argv)
    if a.pods:
        print(json.dumps(one_size(a.pods, a.cycles)))
        return
    print("agent collection cycle (discover + read + metadata + convert), one core, "
          "median of 15 cycles; export = encode + gRPC send to a loopback receiver")
    print(f"{'pods':>6} {'cgroups':>8} {'points':>7} {'cycle ms':>9} {'cpu ms':>7} "
          f"{'target':>7} {'export ms':>10} {'RSS MiB':>8}")
    for n in (10, 100, 1000):
        out = subprocess.run([sys.executable, "-m", "bench.agent", "--pods", str(n),  # noqa
                              "--cycles", str(a.cycles)], capture_output=True, text=True,
                             check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        target = TARGET_MS.get(n)
        print(f"{n:>6} {r['cgroups']:>8} {r['points']:>7} {r['cycle_ms_median']:>9.1f} "
              f"{r['cycle_cpu_ms_median']:>7.1f} {('≤' + format(target, 'g')) if target else '-':>7} "
              f"{r['export_ms_median']:>10.1f} {r['rss_mib']:>8.0f}")




def main_memory() -> None:
    m = agent_process_memory()
    print(f"\nagent process, {m['pods']} pods x 3 containers, eBPF standard "
          f"{'attached' if m['bpf'] else 'NOT attached'}: first export after "
          f"{m['first_export_s']:.1f} s; after 8 exports RSS {m['rss_mib']:.0f} MiB "
          f"({m['anon_mib']:.0f} anon + {m['file_mib']:.0f} file-backed), peak {m['peak_mib']:.0f} MiB, "
          f"CPU {m['cpu_s']:.1f} s in total")


if __name__ == "__main__":
    main()
    if len(sys.argv) == 1:
        main_memory()
