"""`make demo`: the whole story on one machine, in about a minute: kernel → agent → Collector →
cost processor → a chargeback ledger that adds up, checked against the kernel.

Why each piece is the real one: the point is to show that money billed to a tenant is what the
kernel counted for it, so nothing in the path is simulated. Tenants are real processes in real
kubelet-layout cgroups (demo/synthetic.py) in three namespaces: a CPU-heavy web service,
a network-heavy uploader sending to an ingest pod over loopback TCP, and a CronJob's burst of
short-lived jobs that each live well under one export interval. The agent (`otel-agent run`,
static metadata, eBPF when the kernel allows) pushes OTLP/gRPC to rotel, a Rust OpenTelemetry
collector from PyPI, which forwards it to the cost processor (`otel-agent cost serve`, SQLite
ledger, shipped pricing); without rotel the agent pushes to the cost processor directly.

Then the report, through the real report CLI: the chargeback table per namespace, the ledger's
reconciliation (allocated + overhead + idle = node), the per-pod billed CPU next to the pod
cgroup's own cpu.stat, the uploader's billed egress next to what its socket sent (tcp_info),
and a self-contained HTML report. The demo exits 1 if the pipeline lost data: a pod billed
more than 5% away from cpu.stat, a short-lived job missing, egress outside what the socket sent
plus one header per segment (when eBPF network is attached), or a ledger that does not balance.

The cgroups and processes it creates are removed at the end (leftovers of a crashed run are
swept first); the ledger, logs and report stay in a temp directory it prints, so the reader can
run `otel-agent cost report` on them. The helpers that start the cost processor and rotel
(demo/processes.py) are the tests' too.

The demo is not part of the agent's package (nor of its image): `make demo` runs
`python -m demo` from a clone.
"""

from __future__ import annotations

import os

# The demo forks workloads while gRPC channels may exist; gRPC's fork handlers are for
# children that use gRPC, which ours do not.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import argparse  # noqa: E402
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from otel_agent.cgroups.mount import find_cgroup2_mount
from otel_agent.errors import OtelAgentError
from otel_agent.k8s.convert import workload_attributes
from otel_agent.k8s.static import write_static
from otel_agent.k8s.volumes import ClaimMeta
from otel_agent.model import ContainerMeta, NodeMeta, PodMeta
from demo.processes import (agent_command, agent_env, cpu_usage_seconds, free_port, rotel_binary,
                            start_cost_processor, start_rotel, stop_process, wait_for_ledger)
from demo.synthetic import SynthPod, SyntheticNode, sweep_stale, unique_prefix

DEMO_PREFIX = "otel-agent-demo"
DEMO_INSTANCE = "i-0d3e0a11c0ffee001"  # the demo node's EC2 instance (spec.providerID)
DEMO_PROVIDER_ID = f"aws:///eu-west-1a/{DEMO_INSTANCE}"
BILLING_TOLERANCE = 0.05  # a pod billed further than this from its cpu.stat is data lost

BURN = "import time\nend=time.process_time()+{s}\nwhile time.process_time()<end: pass\n"
# A duty-cycled burner: about `share` of one core for `s` seconds of wall time.
DUTY = ("import time\nend=time.monotonic()+{s}\n"
        "while time.monotonic()<end:\n"
        "    t=time.monotonic()+0.01*{share}\n"
        "    while time.monotonic()<t: pass\n"
        "    time.sleep(0.01*(1-{share}))\n")
# Receiver: prints its port, reads to EOF, closes (the sender waits for that close).
RECV = ("import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        "s.bind(('127.0.0.1',0));s.listen(1);print(s.getsockname()[1],flush=True)\n"
        "c,_=s.accept()\nwhile c.recv(1<<16): pass\nc.close()\n")
# Sender: `rate` bytes/s for `s` seconds, then the kernel's own count of what the socket put
# on the wire (tcp_info: payload incl. retransmissions at offset 200, segments at 136) as JSON.
SEND = ("import socket,time,json\nc=socket.create_connection(('127.0.0.1',{port}))\n"
        "buf=b'x'*65536\nn=0\nend=time.monotonic()+{s}\n"
        "while time.monotonic()<end:\n"
        "    c.sendall(buf); n+=len(buf); time.sleep(65536/{rate})\n"
        "c.shutdown(socket.SHUT_WR)\nc.recv(1)\n"
        "i=c.getsockopt(socket.IPPROTO_TCP,socket.TCP_INFO,256)\n"
        "print(json.dumps({{'sent':n,'bytes_sent':int.from_bytes(i[200:208],'little'),"
        "'segs_out':int.from_bytes(i[136:140],'little')}}),flush=True)\n")
# Largest IP + TCP header one skb carries (IPv6 40 + TCP with full options 60): the egress
# cgroup_skb sees at most the payload plus this per segment.
MAX_HEADER_BYTES = 100


def hour_window(start: datetime, end: datetime) -> str:
    """An RFC 3339 pair on hour boundaries covering [start, end]: the ledger is hourly."""
    lo = start.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    hi = end.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return f"{lo:%Y-%m-%dT%H:%M:%SZ},{hi:%Y-%m-%dT%H:%M:%SZ}"


# --- the demo's tenants ---------------------------------------------------------------------


def _pod_meta(p: SynthPod, node: str, owner: tuple[str, str], labels: dict[str, str],
              cpu_request: float, mem_request: int,
              gpus: tuple[tuple[str, float], ...] = ()) -> PodMeta:
    return PodMeta(
        p.uid, p.name, p.namespace, node_name=node, labels=labels,
        workload=workload_attributes(owner[0], owner[1], labels), qos=p.qos,
        containers=tuple(ContainerMeta(c.name, c.id, cpu_request_cores=cpu_request,
                                       memory_request_bytes=mem_request, gpus=gpus)
                         for c in p.containers),
    )


# The demo node's GPUs are metadata only (there is no GPU here): the node declares two, as a
# device plugin would in its capacity, and ml/train-0 holds one of them in its limits.
DEMO_GPUS = (("nvidia.com/gpu", 2.0),)
# Two persistent volume claims in ml (metadata only too, in the static file's claims:): the
# trainer's checkpoints, mounted, and an old dataset no pod mounts (__unmounted__).
DEMO_CLAIMS = (
    ClaimMeta("0b6c2a1e-7d1f-4c55-9a57-3f0c1d2e4b60", "checkpoints", "ml", 100 << 30, "standard",
              "pvc-0b6c2a1e", "RWO", True),
    ClaimMeta("5e9d8c7b-1a2b-4c3d-8e9f-0a1b2c3d4e5f", "old-datasets", "ml", 50 << 30, "standard",
              "pvc-5e9d8c7b", "RWO", False),
)
TRAIN_GPUS = (("nvidia.com/gpu", 1.0),)


def _node_meta(with_memory: bool) -> NodeMeta:
    """This machine as a node. Memory capacity only when memory is measured here: otherwise
    the whole node's memory would show as idle money nobody could have used."""
    cores = os.cpu_count() or 1
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    return NodeMeta("demo-node", uid="demo-node-uid", provider_id=DEMO_PROVIDER_ID,
                    labels={"node.kubernetes.io/instance-type": "m5.large",
                            "topology.kubernetes.io/zone": "eu-west-1a"},
                    cpu_capacity_cores=float(cores), cpu_allocatable_cores=cores * 0.9,
                    memory_capacity_bytes=mem if with_memory else None,
                    memory_allocatable_bytes=int(mem * 0.9) if with_memory else None,
                    gpu_capacity=DEMO_GPUS, gpu_allocatable=DEMO_GPUS)


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def run(duration_seconds: float, interval_ms: int, jobs: int, bpf_profile: str,
        use_rotel: bool = True) -> int:
    if os.geteuid() != 0:
        print("demo: needs root (it creates cgroups and, for eBPF, loads BPF programs)",
              file=sys.stderr)
        return 2
    t_begin = time.monotonic()
    root = find_cgroup2_mount()
    for stale in sweep_stale(root, f"{DEMO_PREFIX}-*"):
        _say(f"demo: removed leftovers of an earlier run: {stale}")
    workdir = Path(tempfile.mkdtemp(prefix="otel-agent-demo-"))
    static = workdir / "pods.yaml"
    metas: list[PodMeta] = []
    truth: dict[str, float] = {}  # namespace/pod -> CPU seconds the pod cgroup's cpu.stat counted
    jobs_made: list[str] = []
    procs: list[subprocess.Popen] = []  # agent, rotel, cost processor: stopped in reverse
    started = datetime.now(timezone.utc)
    net: dict = {}

    with SyntheticNode(root, unique_prefix(DEMO_PREFIX)) as synth:
        with_memory = (synth.kubepods_path / "memory.current").exists()
        node = _node_meta(with_memory)
        web = synth.add_pod("shop", "web-7d9f8-x2k4p", containers=("web", "sidecar"))
        ingest = synth.add_pod("media", "ingest-0", containers=("ingest",))
        upload = synth.add_pod("media", "uploader-5c6b7-q9wz1", containers=("uploader",))
        train = synth.add_pod("ml", "train-0", containers=("trainer",))
        for p, owner, labels, req in (
            (web, ("ReplicaSet", "web-7d9f8"), {"app": "web", "team": "payments",
                                                "pod-template-hash": "7d9f8"}, 0.5),
            (ingest, ("StatefulSet", "ingest"), {"app": "ingest", "team": "media"}, 0.1),
            (upload, ("ReplicaSet", "uploader-5c6b7"), {"app": "uploader", "team": "media",
                                                        "pod-template-hash": "5c6b7"}, 0.1),
        ):
            metas.append(_pod_meta(p, node.name, owner, labels, req, 128 << 20))
        metas.append(_pod_meta(train, node.name, ("StatefulSet", "train"),
                               {"app": "train", "team": "research"}, 0.1, 128 << 20, TRAIN_GPUS))
        write_static(static, node, metas, DEMO_CLAIMS)

        try:
            cost, cost_port, ledger = start_cost_processor(workdir)
            procs.append(cost)
            hop = f"cost processor (port {cost_port})"
            endpoint = f"http://127.0.0.1:{cost_port}"
            binary = rotel_binary() if use_rotel else None
            if binary is not None:
                rotel_port = free_port()
                procs.append(start_rotel(binary, rotel_port, cost_port, workdir / "rotel.log"))
                endpoint = f"http://127.0.0.1:{rotel_port}"
                hop = f"rotel (port {rotel_port}) → {hop}"
            elif use_rotel:
                _say("demo: rotel is not installed (pip install rotel): the agent pushes to the "
                     "cost processor directly")
            _say(f"demo: pipeline: agent → OTLP/gRPC → {hop} → SQLite ledger {ledger}")
            _say(f"demo: pods under {synth.path}; export every {interval_ms / 1000:g} s")
            agent_log = open(workdir / "agent.log", "ab")
            agent = subprocess.Popen(
                agent_command(static, synth.kubepods, node.name, bpf_profile),
                # Loopback never leaves a real node and is free by default; here it stands in
                # for traffic to another node, so it is priced as cluster-private.
                env=agent_env(endpoint, interval_ms, "demo", OTEL_AGENT_CLUSTER_OBJECTS="on",
                              OTEL_AGENT_CLUSTER_CIDRS="127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"),
                stdout=agent_log, stderr=subprocess.STDOUT)
            agent_log.close()
            procs.append(agent)
            if not wait_for_ledger(ledger, 0, 60):
                _say("demo: nothing reached the ledger within 60 s; the agent's log:")
                _say((workdir / "agent.log").read_text(errors="replace")[-3000:])
                return 1
            _say(f"demo: first export in the ledger after {time.monotonic() - t_begin:.0f} s; "
                 f"tenants run for {duration_seconds:g} s")

            work = [
                synth.spawn(web.container("web"), [sys.executable, "-c",
                                                   DUTY.format(s=duration_seconds, share=0.5)]),
                synth.spawn(web.container("sidecar"), [sys.executable, "-c",
                                                       DUTY.format(s=duration_seconds, share=0.05)]),
                synth.spawn(train.container("trainer"), [sys.executable, "-c",
                                                         DUTY.format(s=duration_seconds, share=0.05)]),
            ]
            rx = synth.spawn(ingest.container("ingest"), [sys.executable, "-c", RECV],
                             stdout=subprocess.PIPE, text=True)
            port = int(rx.stdout.readline())
            tx = synth.spawn(upload.container("uploader"), [
                sys.executable, "-c", SEND.format(port=port, s=duration_seconds * 0.8,
                                                  rate=8 << 20)],
                stdout=subprocess.PIPE, text=True)

            # A CronJob's burst: each Job is created, burns 0.3 CPU-s and is gone well within
            # one export interval, so only the agent's memory of dead cgroups can bill it.
            t_end = time.monotonic() + duration_seconds
            gap = max(duration_seconds / max(jobs, 1), 0.5)
            minute = int(time.time() // 60)  # CronJob names its Jobs <cronjob>-<scheduled minute>
            for i in range(jobs):
                job_name = f"nightly-report-{minute + i}"
                job = synth.add_pod("batch", f"{job_name}-{i:05x}", containers=("report",))
                metas.append(_pod_meta(job, node.name, ("Job", job_name),
                                       {"app": "report", "team": "analytics"}, 0.25, 64 << 20))
                write_static(static, node, metas, DEMO_CLAIMS)
                burner = synth.spawn(job.container("report"),
                                     [sys.executable, "-c", BURN.format(s=0.3)])
                burner.wait()
                truth[f"batch/{job.name}"] = cpu_usage_seconds(job.path) or 0.0
                jobs_made.append(f"batch/{job.name}")
                synth.remove_pod(job)
                time.sleep(max(0.0, min(gap - 0.4, t_end - time.monotonic())))
            for p in work:
                p.wait(timeout=duration_seconds + 30)
            out, _ = tx.communicate(timeout=duration_seconds + 30)
            rx.wait(timeout=30)
            net = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            for p in (web, ingest, upload, train):
                truth[f"{p.namespace}/{p.name}"] = cpu_usage_seconds(p.path) or 0.0

            # SIGTERM: the agent's last export carries the final totals; wait until they are
            # in the ledger (through rotel), then stop the cost processor (its final refresh).
            t_stop_ns = time.time_ns()
            stop_process(agent)
            if not wait_for_ledger(ledger, t_stop_ns, 30):
                _say("demo: the agent's final export did not reach the ledger within 30 s")
                return 1
        finally:
            for p in reversed(procs):
                stop_process(p)
    finished = datetime.now(timezone.utc)
    agent_text = (workdir / "agent.log").read_text(errors="replace")
    return _report(workdir, ledger, hour_window(started, finished), truth, jobs_made, net,
                   agent_text, with_memory, t_begin)


def _report(workdir: Path, ledger: str, window: str, truth: dict[str, float], jobs: list[str],
            net: dict, agent_log: str, with_memory: bool, t_begin: float) -> int:
    from otel_agent.cost.allocation import allocations, reconcile
    from otel_agent.cost.pricing import default_pricing
    from otel_agent.cost.report_cli import main as report_main
    from otel_agent.cost.store import Store
    from otel_agent.cost.types import Model
    from otel_agent.cost.window import parse_window

    args = ["--ledger", ledger, "--window", window, "--model", "chargeback", "--share-idle", "none"]
    _say()
    _say("Chargeback by namespace (otel-agent cost report --by namespace --model chargeback "
         "--share-idle none):")
    _say("  idle and overhead stay as their own rows: this node's idle cores over the demo's "
         "minutes (plus the 5 min a capacity reading holds) would otherwise dwarf the tenants;")
    _say("  overhead is the non-allocatable 10% plus everything else this machine ran.")
    rc = report_main([*args, "--by", "namespace", "--format", "table"])
    html = workdir / "report.html"
    rc = rc or report_main([*args, "--by", "workload", "--format", "html", "--output", str(html)])
    if rc:
        _say(f"demo: the report CLI failed ({rc})")
        return 1

    store = Store(ledger, pricing=default_pricing())
    try:
        w = parse_window(window, datetime.now(timezone.utc))
        per_pod = {a.name: a for a in allocations(store, w, aggregate="namespace,pod",
                                                  model=Model.USAGE, refresh=False)[0]}
        per_ns = {a.name: a for a in allocations(store, w, aggregate="namespace",
                                                 model=Model.CHARGEBACK, refresh=False)[0]}
        balanced = all(r.balanced for r in reconcile(store, w, refresh=False))
    finally:
        store.close()

    _say()
    _say("Billed CPU vs the kernel's own cpu.stat, per pod:")
    worst, missing = 0.0, []
    for name, kernel in sorted(truth.items()):
        a = per_pod.get(name)
        if a is None or a.cpu_core_hours <= 0:
            _say(f"  {name:<44} kernel {kernel:8.3f} s   billed: MISSING")
            missing.append(name)
            continue
        billed = a.cpu_core_hours * 3600
        err = abs(billed - kernel) / kernel if kernel else 0.0
        worst = max(worst, err)
        _say(f"  {name:<44} kernel {kernel:8.3f} s   billed {billed:8.3f} s   ({err * 100:.2f}% off)")
    bpf_net = bool(re.search(r"eBPF profile \S+: attached .*network", agent_log))
    up = per_pod.get("media/uploader-5c6b7-q9wz1")
    egress_ok = True
    if net and up is not None:
        lo, hi = net["bytes_sent"], net["bytes_sent"] + MAX_HEADER_BYTES * net["segs_out"]
        ok = lo <= up.network_bytes <= hi
        egress_ok = ok or not bpf_net
        _say(f"  media/uploader egress: socket sent {net['bytes_sent']:,} B in {net['segs_out']:,} "
             f"segments, billed {up.network_bytes:,.0f} B "
             + ("(payload + headers: as the kernel counted)" if ok else
                f"(outside [{lo:,}, {hi:,}])" if bpf_net else "(eBPF network not attached)"))
    if not with_memory:
        _say("  memory: not measured on this node (the memory controller is bound to cgroup v1):"
             " no memory series were sent, so no memory is billed; absent, not zero.")
    # GPUs (metadata only: the node declares 2, ml/train-0 holds 1 the whole time): the node's
    # GPU-hours are half held, half idle, and their money adds up to the node's.
    node_gpu_h = sum(a.gpu_hours for a in per_ns.values())
    ml, idle = per_ns.get("ml"), per_ns.get("__idle__")
    gpu_ok = (ml is not None and idle is not None and node_gpu_h > 0
              and abs(ml.gpu_hours / node_gpu_h - 0.5) < 0.02)
    if ml is not None and idle is not None:
        _say(f"  GPUs: ml/train-0 held 1 of the node's 2 (fake) GPUs: {ml.gpu_hours:.4f} GPU-h, "
             f"{ml.gpu_cost:.4f} {ml.currency}; idle {idle.gpu_hours:.4f} GPU-h, "
             f"{idle.gpu_cost:.4f} {idle.currency} "
             f"({100 * ml.gpu_hours / node_gpu_h:.1f}% of the node's GPU-hours held)")
    # Claims (static metadata): 150 GiB in ml, billed while the agent reported them, like the GPUs
    pv_ok = (ml is not None and node_gpu_h > 0
             and abs(ml.pv_byte_hours / 2**30 / (node_gpu_h / 2) - 150) < 150 * 0.03)
    if ml is not None:
        _say(f"  claims: ml/checkpoints (100 GiB, mounted by train-0) and ml/old-datasets (50 GiB, "
             f"__unmounted__): {ml.pv_byte_hours / 2**30:.3f} GiB-h, {ml.pv_cost:.6f} {ml.currency}")
    invoice_ok = _invoice(workdir, ledger, window)
    billed_jobs = sum(1 for j in jobs if j not in missing)
    _say()
    _say(f"short-lived jobs billed: {billed_jobs}/{len(jobs)}; worst pod CPU error vs cpu.stat: "
         f"{worst * 100:.2f}%; ledger reconciled per node and hour: {'yes' if balanced else 'NO'}")
    _say(f"HTML report (by workload): {html}")
    _say(f"ledger, logs and report kept in {workdir}; try:")
    _say(f"  otel-agent cost report --ledger {ledger} --window {window} --by label:team")
    _say(f"demo: {time.monotonic() - t_begin:.0f} s")
    lost = missing or worst > BILLING_TOLERANCE or not balanced or not egress_ok or not gpu_ok \
        or not pv_ok or not invoice_ok
    if lost:
        _say("demo: FAILED: the pipeline lost or misbilled data (see above)")
    return 1 if lost else 0


# The demo's invoice: AWS's FOCUS export columns (Data Exports, "FOCUS 1.2 with AWS columns"),
# the few the importer reads plus a few that show its shape. Per hour: the node's instance at a
# spot price (well under the list rates), the EKS control plane, a NAT gateway; for the month:
# Business support and an instance of another team's (not in this cluster).
_FOCUS_COLUMNS = ("BilledCost", "BillingAccountId", "BillingCurrency", "BillingPeriodEnd",
                  "BillingPeriodStart", "ChargeCategory", "ChargePeriodEnd", "ChargePeriodStart",
                  "EffectiveCost", "ProviderName", "ResourceId", "ServiceCategory", "ServiceName",
                  "SkuId", "x_UsageType")


def _invoice(workdir: Path, ledger: str, window: str) -> bool:
    """Write a small FOCUS invoice for the demo's hours, import it, print the reconciliation
    (through the real CLI); False if it does not balance."""
    import csv

    from otel_agent.cost.invoice_cli import main as invoice_main
    from otel_agent.cost.pricing import default_pricing_path

    lo, hi = (datetime.fromisoformat(x.replace("Z", "+00:00")) for x in window.split(","))
    month = lo.replace(day=1, hour=0)
    nxt = (month + timedelta(days=32)).replace(day=1)

    def ts(t: datetime) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    rows = []

    def line(t0: datetime, t1: datetime, cost: str, rid: str, service: str, usage: str,
             category: str = "Usage") -> None:
        rows.append({"BilledCost": cost, "BillingAccountId": "111122223333",
                     "BillingCurrency": "USD", "BillingPeriodEnd": ts(nxt),
                     "BillingPeriodStart": ts(month), "ChargeCategory": category,
                     "ChargePeriodEnd": ts(t1), "ChargePeriodStart": ts(t0), "EffectiveCost": cost,
                     "ProviderName": "AWS", "ResourceId": rid, "ServiceCategory": "Compute",
                     "ServiceName": service, "SkuId": "DEMO", "x_UsageType": usage})

    t = lo
    while t < hi:
        t1 = t + timedelta(hours=1)
        line(t, t1, "0.0289", DEMO_INSTANCE, "Amazon Elastic Compute Cloud",
             "EU-SpotUsage:m5.large")
        line(t, t1, "0.10", "arn:aws:eks:eu-west-1:111122223333:cluster/demo",
             "Amazon Elastic Kubernetes Service", "EU-AmazonEKS-Hours:perCluster")
        line(t, t1, "0.048", "arn:aws:ec2:eu-west-1:111122223333:natgateway/nat-0d3e0a11c0ffee",
             "Amazon Virtual Private Cloud", "EU-NatGateway-Hours")
        t = t1
    line(month, nxt, "0.75", "", "AWS Support (Business)", "Dollar")
    line(lo, lo + timedelta(hours=1), "0.0960", "i-0aaaaaaaaaaaaaaaa",
         "Amazon Elastic Compute Cloud", "EU-BoxUsage:m5.large")
    path = workdir / "focus-invoice.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=_FOCUS_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    _say()
    _say(f"The cloud invoice (FOCUS, as AWS exports it: {path.name}), imported with "
         "otel-agent cost import-invoice:")
    _say("  the node's instance ran on spot at 0.0289/h: that, not the list rates, is its cost "
         "now, split into CPU and memory in the ratio of the list rates.")
    rc = invoice_main("import-invoice", [str(path), "--ledger", ledger,
                                         "--pricing", default_pricing_path()])
    _say()
    _say("Reconciliation (otel-agent cost reconcile): every line of the invoice lands somewhere")
    rc = rc or invoice_main("reconcile", ["--ledger", ledger])
    return rc == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m demo",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--duration-seconds", type=float, default=45.0)
    ap.add_argument("--interval-ms", type=int, default=5000)
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--bpf-profile", default="standard",
                    choices=("off", "minimal", "standard", "comprehensive"))
    ap.add_argument("--no-rotel", action="store_true",
                    help="push straight to the cost processor, without the Collector hop")
    a = ap.parse_args(argv)
    try:
        return run(a.duration_seconds, a.interval_ms, a.jobs, a.bpf_profile, not a.no_rotel)
    except OtelAgentError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
