"""The real agent process pushing real OTLP/gRPC to a real receiver, on real kubelet-layout
cgroups with real work in them (kernel + e2e tiers).

Asserted exactly: which resources arrive, their attributes, metric names, units, temporality
and start times. Asserted against the kernel: the exported pod CPU time is within 2% of the pod
cgroup's own cpu.stat and of the burner's rusage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from otel_agent.agent import boot_time_ns
from otel_agent.cgroups.mount import find_cgroup2_mount
from otel_agent.k8s.convert import workload_attributes
from otel_agent.k8s.static import write_static
from otel_agent.model import ContainerMeta, NodeMeta, PodMeta
from tests.support.sink import OtlpSink
from demo.synthetic import SyntheticNode, unique_prefix

pytestmark = [pytest.mark.kernel, pytest.mark.e2e]

BURN = "import time\nend=time.process_time()+{s}\nwhile time.process_time()<end: pass\n"


def _usage_seconds(path: Path) -> float:
    for line in (path / "cpu.stat").read_text().splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1]) / 1e6
    raise AssertionError("no usage_usec")


@pytest.fixture
def synth():
    with SyntheticNode(find_cgroup2_mount(), unique_prefix("otel-agent-test")) as node:
        yield node


def _start_agent(synth, static: Path, endpoint: str, interval_ms: int, *extra: str,
                 env_extra: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_INSECURE="true",
               OTEL_METRIC_EXPORT_INTERVAL=str(interval_ms),
               OTEL_RESOURCE_ATTRIBUTES="k8s.cluster.name=test-cluster", **(env_extra or {}))
    return subprocess.Popen(
        [sys.executable, "-m", "otel_agent", "run", "--metadata", "static", "--static-metadata",
         str(static), "--kubepods", synth.kubepods, "--health-listen", "off",
         "--node-name", "node-a", "--pod-labels", "team", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(agent: subprocess.Popen) -> str:
    agent.send_signal(signal.SIGTERM)
    out, _ = agent.communicate(timeout=30)
    return out


def test_pushes_exact_resources_and_pod_cpu_matches_the_kernel(synth, tmp_path):
    pod = synth.add_pod("shop", "web-7d9f8-abcde", containers=("web",))
    ctr = pod.container("web")
    labels = {"team": "payments", "pod-template-hash": "7d9f8"}
    meta = PodMeta(pod.uid, pod.name, pod.namespace, node_name="node-a", labels=labels,
                   workload=workload_attributes("ReplicaSet", "web-7d9f8", labels), qos=pod.qos,
                   containers=(ContainerMeta("web", ctr.id, cpu_request_cores=0.5,
                                             memory_request_bytes=256 << 20),))
    node = NodeMeta("node-a", uid="u-1", labels={"node.kubernetes.io/instance-type": "m5.large"},
                    cpu_capacity_cores=2.0, cpu_allocatable_cores=1.8)
    static = tmp_path / "pods.yaml"
    write_static(static, node, [meta])

    with OtlpSink() as sink:
        agent = _start_agent(synth, static, sink.endpoint, 1000, "--bpf-profile", "off")
        try:
            assert sink.wait_for(1, 60), "no export within 60 s"
            burner = synth.spawn(ctr, [sys.executable, "-c", BURN.format(s=1.0)])
            _, status, rusage = os.wait4(burner.pid, 0)
            burner.returncode = os.waitstatus_to_exitcode(status)
            burner_seconds = rusage.ru_utime + rusage.ru_stime
            kernel_seconds = _usage_seconds(pod.path)
            n = len(sink.requests)
            assert sink.wait_for(n + 2, 30)
        finally:
            log = _stop(agent)
        assert agent.returncode == 0, log

    points = sink.points()
    last = {}
    for p in points:
        key = (p.name, tuple(sorted(p.resource.items())), tuple(sorted(p.attributes.items())))
        if key not in last or p.time_unix_nano >= last[key].time_unix_nano:
            last[key] = p

    pod_cpu = [p for (name, _, _), p in last.items() if name == "k8s.pod.cpu.time"
               and p.resource.get("k8s.pod.uid") == pod.uid]
    assert len(pod_cpu) == 1
    p = pod_cpu[0]
    assert p.resource == {
        "k8s.cluster.name": "test-cluster", "k8s.namespace.name": "shop",
        "k8s.pod.name": "web-7d9f8-abcde", "k8s.pod.uid": pod.uid,
        "k8s.deployment.name": "web",  # the static file keeps the Deployment, not its ReplicaSet
        "k8s.pod.label.team": "payments", "k8s.node.name": "node-a",
        "otel_agent.pod.qos_class": "Burstable", "otel_agent.cgroup.id": str(pod.cgroup_id),
    }
    assert (p.unit, p.kind, p.temporality, p.monotonic) == ("s", "sum", "cumulative", True)
    assert p.start_time_unix_nano == boot_time_ns()
    assert p.value == pytest.approx(kernel_seconds, rel=0.02)
    assert p.value == pytest.approx(burner_seconds, rel=0.02)

    ctr_points = {name: q for (name, _, _), q in last.items()
                  if q.resource.get("container.id") == ctr.id}
    ctr_res = ctr_points["container.cpu.time"].resource
    assert ctr_res["k8s.container.name"] == "web"
    assert ctr_res["container.runtime.name"] == "containerd"
    assert ctr_res["otel_agent.cgroup.id"] == str(ctr.cgroup_id)
    assert ctr_points["container.cpu.time"].value == pytest.approx(burner_seconds, rel=0.02)
    req = ctr_points["k8s.container.cpu.request.desired"]
    # an UpDownCounter (semconv): a cumulative sum that is not monotonic
    assert (req.value, req.unit, req.kind, req.monotonic) == (0.5, "{cpu}", "sum", False)
    assert ctr_points["k8s.container.memory.request.desired"].value == 256 << 20
    modes = {q.attributes["cpu.mode"]: q.value for (name, _, _), q in last.items()
             if name == "otel_agent.container.cpu.mode_time" and q.resource.get("container.id") == ctr.id}
    assert set(modes) == {"user", "system"}
    assert sum(modes.values()) == pytest.approx(ctr_points["container.cpu.time"].value, abs=1e-3)

    node_points = {name: q for (name, _, _), q in last.items() if "k8s.pod.uid" not in q.resource}
    assert node_points["k8s.node.cpu.time"].resource["k8s.node.name"] == "node-a"
    assert node_points["k8s.node.cpu.allocatable"].value == 1.8
    assert node_points["otel_agent.node.cpu.capacity"].value == 2.0
    assert node_points["k8s.node.system_container.cpu.time"].value >= p.value
    assert node_points["otel_agent.cycle.duration"].unit == "s"
    assert node_points["otel_agent.series.exported"].value > 0
    # memory.* is bound to cgroup v1 on this machine: absent, never a zero that looks real.
    if not (pod.path / "memory.current").exists():
        assert not any(name.startswith("k8s.pod.memory") for (name, _, _) in last)


def test_collector_down_loses_nothing_and_sigterm_flushes_the_final_value(synth, tmp_path):
    pod = synth.add_pod("batch", "job-1", containers=("main",))
    static = tmp_path / "pods.yaml"
    write_static(static, None, [PodMeta(pod.uid, pod.name, pod.namespace)])
    with OtlpSink() as sink:
        agent = _start_agent(synth, static, sink.endpoint, 500, "--bpf-profile", "off",
                             env_extra={"OTEL_EXPORTER_OTLP_TIMEOUT": "1"})
        try:
            assert sink.wait_for(1, 60)
            sink.refuse = True  # the Collector is down while the pod works
            burner = synth.spawn(pod.container("main"), [sys.executable, "-c", BURN.format(s=0.5)])
            burner.wait(timeout=60)
            time.sleep(1.5)
            kernel_seconds = _usage_seconds(pod.path)
            n = len(sink.requests)
            sink.refuse = False
        finally:
            log = _stop(agent)  # SIGTERM: the last export carries the totals
        assert agent.returncode == 0, log
    assert len(sink.requests) > n, "no export after SIGTERM"
    final = [p for p in sink.points() if p.name == "k8s.pod.cpu.time"
             and p.resource.get("k8s.pod.uid") == pod.uid]
    assert max(final, key=lambda p: p.time_unix_nano).value == pytest.approx(kernel_seconds, rel=0.02)
    assert "OTLP export failed" in log
