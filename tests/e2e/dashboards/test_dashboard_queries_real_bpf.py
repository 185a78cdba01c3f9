"""The eBPF panels on data from the kernel: the real agent process with real BPF programs.

test_dashboard_queries.py proves every query on a fixture tree with eBPF map values handed to
the decoder; this one takes the panels that live on eBPF (run-queue heatmap and percentiles,
network bytes and packets, BPF map health) and the CPU ones, and feeds them what the kernel
counted: `otel-agent run --bpf-profile standard` on real kubelet-layout cgroups (the demo's
synthetic node), two CPU burners sharing one CPU in shop/web (so tasks wait on the run queue)
and a TCP stream from media/uploader to media/ingest over loopback (priced as cluster-private,
as in the demo). Its OTLP goes through the same remote-write translation into a real
Prometheus. Memory panels are left out: this host binds memory to cgroup v1.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from otel_agent.cgroups.mount import find_cgroup2_mount
from demo.__main__ import RECV, SEND, _node_meta, _pod_meta
from demo.processes import agent_command, agent_env
from demo.synthetic import SyntheticNode, unique_prefix
from otel_agent.k8s.static import write_static
from scripts.dashboards import Target
from tests.e2e.dashboards.panels import check_target, targets
from tests.support import remote_write as rw
from tests.support.prometheus import Prometheus
from tests.support.sink import OtlpSink

pytestmark = [pytest.mark.kernel, pytest.mark.e2e]

RUN_SECONDS = 5.0
# Two of these on one CPU: each is runnable all the time, so each waits while the other runs.
PINNED_BURN = ("import os,time\nos.sched_setaffinity(0,{0})\nend=time.monotonic()+%s\n"
               "while time.monotonic()<end: pass\n" % RUN_SECONDS)
EBPF = ("run_queue", "network_io", "packet_count", "bpf_map", "cpu_time")
VARS = {"cluster": "kernel", "node": "demo-node", "namespace": "shop",
        "workload_kind": "k8s_deployment_name", "workload": "web", "datasource": "prometheus"}
MEDIA = {**VARS, "namespace": "media", "workload": "uploader"}
ALL = {**VARS, "cluster": ".*", "node": ".*", "namespace": ".*", "workload": ".*"}


def _on_ebpf(t: Target) -> bool:
    return any(k in t.expr for k in EBPF) and "memory" not in t.expr


@pytest.fixture(scope="module")
def kernel_loaded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboards-bpf")
    sink = OtlpSink()
    prom = Prometheus(tmp / "prometheus")
    agent = None
    try:
        with SyntheticNode(find_cgroup2_mount(), unique_prefix("otel-agent-dash")) as synth:
            node = _node_meta(with_memory=False)
            web = synth.add_pod("shop", "web-7d9f8-x2k4p", containers=("web",))
            ingest = synth.add_pod("media", "ingest-0", containers=("ingest",))
            upload = synth.add_pod("media", "uploader-5c6b7-q9wz1", containers=("uploader",))
            static = tmp / "pods.yaml"
            write_static(static, node, [
                _pod_meta(web, node.name, ("ReplicaSet", "web-7d9f8"),
                          {"pod-template-hash": "7d9f8"}, 0.5, 128 << 20),
                _pod_meta(ingest, node.name, ("StatefulSet", "ingest"), {}, 0.1, 64 << 20),
                _pod_meta(upload, node.name, ("ReplicaSet", "uploader-5c6b7"),
                          {"pod-template-hash": "5c6b7"}, 0.1, 64 << 20)])
            log = (tmp / "agent.log").open("wb")
            agent = subprocess.Popen(
                agent_command(static, synth.kubepods, node.name, "standard"),
                env=agent_env(f"http://127.0.0.1:{sink.port}", 1000, "kernel",
                              OTEL_AGENT_CLUSTER_CIDRS="127.0.0.0/8"),
                stdout=log, stderr=subprocess.STDOUT)
            log.close()
            assert sink.wait_for(1, 60), (tmp / "agent.log").read_text()[-3000:]
            work = [synth.spawn(web.container("web"), [sys.executable, "-c", PINNED_BURN])
                    for _ in range(2)]
            rx = synth.spawn(ingest.container("ingest"), [sys.executable, "-c", RECV],
                             stdout=subprocess.PIPE, text=True)
            port = int(rx.stdout.readline())
            tx = synth.spawn(upload.container("uploader"), [
                sys.executable, "-c", SEND.format(port=port, s=RUN_SECONDS - 1, rate=4 << 20)],
                stdout=subprocess.PIPE, text=True)
            for p in (*work, tx, rx):
                p.wait(RUN_SECONDS + 30)
            time.sleep(1.5)  # one more export after the work ended
            agent.send_signal(signal.SIGTERM)  # and one last one on the way out
            assert agent.wait(30) == 0, (tmp / "agent.log").read_text()[-3000:]
            agent = None
        settings = rw.gateway_settings()
        for req in sink.requests:
            prom.write(rw.write_request(rw.convert([req], settings).series), rw.HEADERS)
        times = [t for s in rw.convert(sink.requests, settings).series.values() for t, _ in s]
        yield prom, min(times) / 1000, max(times) / 1000 + 1
    finally:
        if agent is not None:
            agent.kill()
            agent.wait(10)
        sink.stop()
        prom.stop()


@pytest.mark.parametrize("values", [VARS, MEDIA, ALL], ids=["shop-web", "media-uploader", "all"])
@pytest.mark.parametrize("target", list(targets(_on_ebpf)))
def test_ebpf_panel_on_kernel_data(kernel_loaded, target: Target, values):
    prom, start, end = kernel_loaded
    if values is MEDIA and "run_queue" in target.expr:
        pytest.skip("the uploader mostly sleeps between sends: its run-queue waits are few")
    if values is VARS and ("network" in target.expr or "packet" in target.expr):
        pytest.skip("shop/web only burns CPU: it has no traffic")
    check_target(prom, target, values, start, end, chosen=values is not ALL)


def test_the_kernel_counted_what_the_panels_show(kernel_loaded):
    prom, start, end = kernel_loaded
    waits = prom.query('sum(otel_agent_container_cpu_run_queue_delay_seconds_count{k8s_deployment_name="web"})', end)
    assert waits and float(waits[0]["value"][1]) > 10, waits  # two burners on one CPU wait
    egress = prom.query('sum(k8s_pod_network_io_bytes_total{k8s_deployment_name="uploader", '
                        'network_io_direction="transmit", otel_agent_network_class="cluster-private"})', end)
    assert egress and float(egress[0]["value"][1]) > (RUN_SECONDS - 1) * (4 << 20) * 0.5, egress
