"""A real, independent collector in the path: the real agent process on real kubelet-layout
cgroups → rotel (a Rust OpenTelemetry collector from PyPI) over OTLP/gRPC → the real cost
processor process with a SQLite ledger, read back through the report CLI's JSON.

Why this test exists: every piece has its own tests, but billing is only right if what the
kernel counted survives a third party's OTLP handling, hour bucketing and the ledger's splits.
So every expectation comes from the kernel: each pod's cpu.stat (read before its cgroup is
removed), the short-lived jobs' rusage, the sender socket's tcp_info. Mid-stream rotel is
SIGKILLed and started again on the same port a few export intervals later while the burner
keeps burning: with cumulative counters nothing is lost, so the ledger still equals the truth.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from otel_agent.cgroups.mount import find_cgroup2_mount
from otel_agent.cost.allocation import reconcile
from otel_agent.cost.pricing import default_pricing
from otel_agent.cost.report_cli import main as report_main
from otel_agent.cost.store import Store
from otel_agent.cost.window import parse_window
from demo.__main__ import BURN, DUTY, MAX_HEADER_BYTES, RECV, SEND, hour_window
from demo.processes import (agent_command, agent_env, free_port, rotel_binary, start_cost_processor,
                            start_rotel, stop_process, wait_for_ledger)
from otel_agent.k8s.static import write_static
from otel_agent.model import ContainerMeta, NodeMeta, PodMeta
from demo.synthetic import SyntheticNode, unique_prefix

pytestmark = [pytest.mark.kernel, pytest.mark.e2e]

INTERVAL_MS = 1000
OUTAGE_INTERVALS = 4


def _usage_seconds(path: Path) -> float:
    for line in (path / "cpu.stat").read_text().splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1]) / 1e6
    raise AssertionError(f"{path}: no usage_usec")


def _meta(pod, node: str, cpu_request: float = 0.1) -> PodMeta:
    return PodMeta(pod.uid, pod.name, pod.namespace, node_name=node, qos=pod.qos,
                   containers=tuple(ContainerMeta(c.name, c.id, cpu_request_cores=cpu_request)
                                    for c in pod.containers))


def _run_and_rusage(proc: subprocess.Popen) -> float:
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime


def test_agent_through_rotel_to_the_ledger_matches_the_kernel(tmp_path):
    rotel = rotel_binary()
    if rotel is None:
        pytest.skip("the rotel wheel (with its rotel-agent binary) is not installed")
    node = NodeMeta("node-p", uid="node-p-uid", cpu_capacity_cores=float(os.cpu_count() or 1),
                    cpu_allocatable_cores=(os.cpu_count() or 1) * 0.9)
    static = tmp_path / "pods.yaml"
    truth: dict[str, float] = {}  # namespace/pod -> CPU seconds of the pod cgroup (cpu.stat)
    rusage: dict[str, float] = {}
    procs: list[subprocess.Popen] = []
    started = datetime.now(timezone.utc)
    with SyntheticNode(find_cgroup2_mount(), unique_prefix("otel-agent-test")) as synth:
        burner_pod = synth.add_pod("shop", "burner-0", containers=("burn",))
        rx_pod = synth.add_pod("media", "ingest-0", containers=("ingest",))
        tx_pod = synth.add_pod("media", "uploader-0", containers=("uploader",))
        metas = [_meta(p, node.name) for p in (burner_pod, rx_pod, tx_pod)]
        write_static(static, node, metas)
        try:
            cost, cost_port, ledger = start_cost_processor(tmp_path)
            procs.append(cost)
            rotel_port = free_port()
            rotel_proc = start_rotel(rotel, rotel_port, cost_port, tmp_path / "rotel.log")
            procs.append(rotel_proc)
            agent = subprocess.Popen(
                agent_command(static, synth.kubepods, node.name, "standard"),
                env=agent_env(f"http://127.0.0.1:{rotel_port}", INTERVAL_MS, "pipeline",
                              OTEL_EXPORTER_OTLP_TIMEOUT="2"),
                stdout=open(tmp_path / "agent.log", "wb"), stderr=subprocess.STDOUT)
            procs.append(agent)
            assert wait_for_ledger(ledger, 0, 60), (tmp_path / "agent.log").read_text()[-3000:]

            burn_s = 14.0
            burner = synth.spawn(burner_pod.container("burn"),
                                 [sys.executable, "-c", DUTY.format(s=burn_s, share=0.4)])
            rx = synth.spawn(rx_pod.container("ingest"), [sys.executable, "-c", RECV],
                             stdout=subprocess.PIPE, text=True)
            tx = synth.spawn(tx_pod.container("uploader"), [
                sys.executable, "-c", SEND.format(port=int(rx.stdout.readline()), s=3, rate=4 << 20)],
                stdout=subprocess.PIPE, text=True)

            # Two short-lived pods, each created, run and removed within about one interval.
            for i in range(2):
                job = synth.add_pod("batch", f"job-{i}", containers=("main",))
                metas.append(_meta(job, node.name))
                write_static(static, node, metas)
                p = synth.spawn(job.container("main"), [sys.executable, "-c", BURN.format(s=0.3)])
                rusage[f"batch/{job.name}"] = _run_and_rusage(p)
                truth[f"batch/{job.name}"] = _usage_seconds(job.path)
                synth.remove_pod(job)
                time.sleep(0.3)

            net = json.loads(tx.communicate(timeout=60)[0].strip().splitlines()[-1])
            rx.wait(timeout=30)

            # The Collector dies mid-stream while the burner keeps burning, and comes back on
            # the same port a few export intervals later.
            rotel_proc.send_signal(signal.SIGKILL)
            rotel_proc.wait(timeout=10)
            time.sleep(OUTAGE_INTERVALS * INTERVAL_MS / 1000)
            outage_end_ns = time.time_ns()
            rotel_proc = start_rotel(rotel, rotel_port, cost_port, tmp_path / "rotel.log")
            procs.append(rotel_proc)

            burner.wait(timeout=burn_s + 60)
            for p in (burner_pod, rx_pod, tx_pod):
                truth[f"{p.namespace}/{p.name}"] = _usage_seconds(p.path)
            t_stop_ns = time.time_ns()
            assert stop_process(agent) == 0
            assert wait_for_ledger(ledger, t_stop_ns, 30), "the final export never reached the ledger"
            assert wait_for_ledger(ledger, outage_end_ns, 1)
        finally:
            for p in reversed(procs):
                stop_process(p)
    agent_log = (tmp_path / "agent.log").read_text(errors="replace")
    assert "OTLP export failed" in agent_log, "rotel's outage was never seen: the test proved nothing"

    window = hour_window(started, datetime.now(timezone.utc))
    out = io.StringIO()
    assert report_main(["--ledger", ledger, "--window", window, "--by", "namespace,pod", "--model",
                        "chargeback", "--share-idle", "none", "--format", "json"], stdout=out) == 0
    billed = json.loads(out.getvalue())["data"][0]

    for name, kernel in truth.items():
        assert name in billed, f"{name} missing from the ledger; billed: {sorted(billed)}"
        got = billed[name]["cpuCoreHours"] * 3600
        # the burner ran through the outage: the issue asks for 1% there, 2% elsewhere
        tol = 0.01 if name == "shop/burner-0" else 0.02
        assert got == pytest.approx(kernel, rel=tol), (name, got, kernel)
    for name, ru in rusage.items():
        assert billed[name]["cpuCoreHours"] * 3600 == pytest.approx(ru, rel=0.05), name

    store = Store(ledger, pricing=default_pricing())
    try:
        per_node = reconcile(store, parse_window(window, datetime.now(timezone.utc)), refresh=False)
    finally:
        store.close()
    assert per_node and all(r.balanced for r in per_node), per_node

    m = re.search(r"eBPF profile \S+: attached (.*)", agent_log)
    if m is None or "network" not in m.group(1):
        pytest.skip("cgroup_skb did not attach (see the agent log): egress cannot be checked; "
                    "CPU, short-lived pods and the restart were")
    egress = billed["media/uploader-0"]["networkTransferBytes"]
    lo, hi = net["bytes_sent"], net["bytes_sent"] + MAX_HEADER_BYTES * net["segs_out"]
    assert net["bytes_sent"] >= net["sent"] > 0
    assert lo <= egress <= hi, (egress, net)

