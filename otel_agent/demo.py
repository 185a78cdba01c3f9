"""`make demo`: the whole path on one machine, in about a minute.

Synthetic tenants run in real kubelet-layout cgroups (systemd driver, containerd scopes)
under a demo-only prefix: a CPU-heavy service, a network-heavy pair and a burst of
short-lived jobs that each live well under one export interval. The real agent runs as a
separate process (`otel-agent run`, static metadata, eBPF when the kernel allows), pushes OTLP
over gRPC, and we print what arrived next to what the kernel itself counted. Everything the
demo creates is removed at the end, and leftovers of a crashed earlier run are swept first.
"""

from __future__ import annotations

import os

# The demo forks workloads while its OTLP receiver's gRPC threads run; gRPC's fork handlers are
# for children that use gRPC, which ours do not.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import argparse  # noqa: E402
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from otel_agent.cgroups.mount import find_cgroup2_mount
from otel_agent.k8s.convert import workload_attributes
from otel_agent.k8s.static import write_static
from otel_agent.model import ContainerMeta, NodeMeta, PodMeta, QosClass
from otel_agent.otlp.sink import OtlpSink
from otel_agent.render import format_table, usage_rows
from otel_agent.synthetic import SynthPod, SyntheticNode, sweep_stale, unique_prefix

DEMO_PREFIX = "otel-agent-demo"

BURN = "import time\nend=time.process_time()+{s}\nwhile time.process_time()<end: pass\n"
# A duty-cycled burner: about `share` of one core for `s` seconds of wall time.
DUTY = ("import time\nend=time.monotonic()+{s}\n"
        "while time.monotonic()<end:\n"
        "    t=time.monotonic()+0.01*{share}\n"
        "    while time.monotonic()<t: pass\n"
        "    time.sleep(0.01*(1-{share}))\n")
RECV = ("import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        "s.bind(('127.0.0.1',0));s.listen(1);print(s.getsockname()[1],flush=True)\n"
        "c,_=s.accept()\nwhile c.recv(1<<16): pass\n")
SEND = ("import socket,time\nc=socket.create_connection(('127.0.0.1',{port}))\nbuf=b'x'*65536\n"
        "end=time.monotonic()+{s}\nwhile time.monotonic()<end:\n"
        "    c.sendall(buf*8); time.sleep(0.02)\nc.close()\n")


def _pod_meta(p: SynthPod, node: str, owner: tuple[str, str], labels: dict[str, str],
              cpu_request: float, mem_request: int) -> PodMeta:
    return PodMeta(
        p.uid, p.name, p.namespace, node_name=node, labels=labels,
        workload=workload_attributes(owner[0], owner[1], labels), qos=p.qos,
        containers=tuple(ContainerMeta(c.name, c.id, cpu_request_cores=cpu_request,
                                       memory_request_bytes=mem_request) for c in p.containers),
    )


def _node_meta() -> NodeMeta:
    cores = os.cpu_count() or 1
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    return NodeMeta("demo-node", uid="demo-node-uid",
                    labels={"node.kubernetes.io/instance-type": "m5.large",
                            "topology.kubernetes.io/zone": "eu-west-1a"},
                    cpu_capacity_cores=float(cores), cpu_allocatable_cores=cores * 0.9,
                    memory_capacity_bytes=mem, memory_allocatable_bytes=int(mem * 0.9))


def _cpu_usage_seconds(path: Path) -> float | None:
    try:
        for line in (path / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    except OSError:
        return None
    return None


def run(duration_seconds: float, interval_ms: int, jobs: int, bpf_profile: str) -> int:
    if os.geteuid() != 0:
        print("demo: needs root (it creates cgroups and, for eBPF, loads BPF programs)",
              file=sys.stderr)
        return 2
    root = find_cgroup2_mount()
    for stale in sweep_stale(root, f"{DEMO_PREFIX}-*"):
        print(f"demo: removed leftovers of an earlier run: {stale}")
    workdir = Path(tempfile.mkdtemp(prefix="otel-agent-demo-"))
    static = workdir / "pods.yaml"
    node = _node_meta()
    metas: list[PodMeta] = []
    truth: dict[str, float] = {}  # pod name -> cpu seconds the kernel counted

    with SyntheticNode(root, unique_prefix(DEMO_PREFIX)) as synth, OtlpSink() as sink:
        web = synth.add_pod("shop", "web-7d9f8-x2k4p", containers=("web", "sidecar"))
        ingest = synth.add_pod("media", "ingest-0", containers=("ingest",))
        upload = synth.add_pod("media", "uploader-5c6b7-q9wz1", containers=("uploader",))
        for p, owner, labels, req in (
            (web, ("ReplicaSet", "web-7d9f8"), {"app": "web", "team": "payments",
                                                "pod-template-hash": "7d9f8"}, 0.5),
            (ingest, ("StatefulSet", "ingest"), {"app": "ingest", "team": "media"}, 0.1),
            (upload, ("ReplicaSet", "uploader-5c6b7"), {"app": "uploader", "team": "media",
                                                        "pod-template-hash": "5c6b7"}, 0.1),
        ):
            metas.append(_pod_meta(p, node.name, owner, labels, req, 128 << 20))
        write_static(static, node, metas)

        env = dict(os.environ,
                   OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint, OTEL_EXPORTER_OTLP_INSECURE="true",
                   OTEL_METRIC_EXPORT_INTERVAL=str(interval_ms),
                   OTEL_RESOURCE_ATTRIBUTES="k8s.cluster.name=demo")
        agent_cmd = [sys.executable, "-m", "otel_agent", "run", "--metadata", "static",
                     "--static-metadata", str(static), "--kubepods", synth.kubepods,
                     "--bpf-profile", bpf_profile, "--health-listen", "off",
                     "--node-name", node.name, "--pod-labels", "app,team"]
        print(f"demo: agent: {' '.join(agent_cmd[2:])}")
        print(f"demo: pods under {synth.path}; OTLP receiver at {sink.endpoint}")
        agent_log = open(workdir / "agent.log", "w")
        agent = subprocess.Popen(agent_cmd, env=env, stdout=agent_log, stderr=subprocess.STDOUT)
        try:
            if not sink.wait_for(1, 60):
                print("demo: the agent exported nothing within 60 s; its log:", file=sys.stderr)
                print((workdir / "agent.log").read_text(), file=sys.stderr)
                return 1
            procs = [
                synth.spawn(web.container("web"), [sys.executable, "-c",
                                                   DUTY.format(s=duration_seconds, share=0.6)]),
                synth.spawn(web.container("sidecar"), [sys.executable, "-c",
                                                       DUTY.format(s=duration_seconds, share=0.05)]),
            ]
            rx = synth.spawn(ingest.container("ingest"), [sys.executable, "-c", RECV],
                             stdout=subprocess.PIPE, text=True)
            port = int(rx.stdout.readline())
            procs.append(synth.spawn(upload.container("uploader"), [
                sys.executable, "-c", SEND.format(port=port, s=duration_seconds * 0.8)]))
            procs.append(rx)

            # A burst of short-lived jobs, each created and gone within one export interval.
            t_end = time.monotonic() + duration_seconds
            gap = max(duration_seconds / max(jobs, 1), 0.5)
            minute = int(time.time() // 60)  # CronJob names its Jobs <cronjob>-<scheduled minute>
            for i in range(jobs):
                job_name = f"nightly-report-{minute + i}"
                job = synth.add_pod("batch", f"{job_name}-{i:05x}", containers=("report",))
                metas.append(_pod_meta(job, node.name, ("Job", job_name),
                                       {"app": "report", "team": "analytics"}, 0.25, 64 << 20))
                write_static(static, node, metas)
                burner = synth.spawn(job.container("report"),
                                     [sys.executable, "-c", BURN.format(s=0.3)])
                burner.wait()
                truth[job.name] = _cpu_usage_seconds(job.path) or 0.0
                synth.remove_pod(job)
                time.sleep(max(0.0, min(gap - 0.4, t_end - time.monotonic())))
            for p in procs:
                p.wait(timeout=duration_seconds + 30)
            for p in (web, ingest, upload):
                truth[p.name] = _cpu_usage_seconds(p.path) or 0.0
            # Two more exports carry the final totals.
            n = len(sink.requests)
            sink.wait_for(n + 2, 3 * interval_ms / 1000 + 10)
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
            agent_log.close()

        points = sink.points()
        rows = usage_rows(points)
        print()
        print(format_table(rows))
        print()
        print("Exported vs the kernel's own cpu.stat, per pod:")
        exported = {u.pod: u.cpu_seconds for u in rows if not u.container}
        worst = 0.0
        for name, kernel in sorted(truth.items()):
            got = exported.get(name)
            if got is None:
                print(f"  {name:<34} kernel {kernel:8.3f} s   exported: MISSING")
                worst = float("inf")
                continue
            err = abs(got - kernel) / kernel * 100 if kernel else 0.0
            worst = max(worst, err)
            print(f"  {name:<34} kernel {kernel:8.3f} s   exported {got:8.3f} s   ({err:.2f}% off)")
        log = (workdir / "agent.log").read_text()
        bpf_on = "eBPF off" not in log and "eBPF unavailable" not in log
        print()
        print(f"{len(sink.requests)} OTLP requests received; eBPF "
              f"{'on (' + bpf_profile + ')' if bpf_on else 'off: see ' + str(workdir / 'agent.log')}; "
              f"short-lived jobs billed: {sum(1 for n in truth if n.startswith('nightly') and n in exported)}/{jobs}")
        print(f"worst pod CPU error vs cpu.stat: {worst:.2f}%")
    return 0 if worst < 5 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m otel_agent.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--duration-seconds", type=float, default=30.0)
    ap.add_argument("--interval-ms", type=int, default=3000)
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--bpf-profile", default="standard",
                    choices=("off", "minimal", "standard", "comprehensive"))
    a = ap.parse_args(argv)
    return run(a.duration_seconds, a.interval_ms, a.jobs, a.bpf_profile)


if __name__ == "__main__":
    sys.exit(main())
