"""Least privilege, measured: the agent under `capsh` with exactly the capabilities the
manifests grant, and with each one removed.

Root keeps its bounding set, so we drop from it everything but the set under test; the shell
capsh starts (and the agent it runs) then holds exactly that set. With the full set the agent's
eBPF metrics arrive; with one fewer, it says which capability is missing, in words, and keeps
running on what still works (cgroup files always, CPU programs without CAP_NET_ADMIN).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from otel_agent.cgroups.mount import find_cgroup2_mount
from otel_agent.k8s.static import write_static
from otel_agent.model import ContainerMeta, PodMeta
from demo.synthetic import SyntheticNode, unique_prefix

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = ("cap_bpf", "cap_perfmon", "cap_net_admin")
BURN = "import time\nend=time.monotonic()+6\nwhile time.monotonic()<end: pass\n"


def bounding_set() -> list[str]:
    out = subprocess.run(["capsh", "--print"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Bounding set ="):
            return [c for c in line.split("=", 1)[1].strip().split(",") if c]
    raise AssertionError("capsh --print has no bounding set")


def manifest_capabilities() -> set[str]:
    docs = yaml.safe_load_all((ROOT / "deploy" / "base" / "agent.yaml").read_text())
    for d in docs:
        if d and d.get("kind") == "DaemonSet":
            ctr = d["spec"]["template"]["spec"]["containers"][0]
            return {f"cap_{c.lower()}" for c in ctr["securityContext"]["capabilities"]["add"]}
    raise AssertionError("no DaemonSet in deploy/base/agent.yaml")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with SyntheticNode(find_cgroup2_mount(), unique_prefix("otel-agent-caps")) as synth:
        pod = synth.add_pod("shop", "web-1", containers=("web",))
        static = tmp_path_factory.mktemp("caps") / "pods.yaml"
        write_static(static, None, [PodMeta(pod.uid, pod.name, pod.namespace, containers=(
            ContainerMeta("web", pod.container("web").id),))])
        yield synth, pod, static


def run_agent_with(caps: tuple[str, ...], node) -> tuple[list[dict], str]:
    synth, pod, static = node
    burner = synth.spawn(pod.container("web"), [sys.executable, "-c", BURN])
    try:
        drop = ",".join(c for c in bounding_set() if c not in caps)
        agent = " ".join(shlex.quote(a) for a in [
            sys.executable, "-m", "otel_agent", "once", "--format", "json", "--metadata", "static",
            "--static-metadata", str(static), "--kubepods", synth.kubepods, "--bpf-profile",
            "standard", "--window-seconds", "2"])
        p = subprocess.run(["capsh", f"--drop={drop}", "--", "-c",
                            f"capsh --print | grep '^Current:'; exec {agent}"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    finally:
        burner.kill()
        burner.wait()
    assert p.returncode == 0, p.stderr
    current, _, body = p.stdout.partition("\n")
    held = set(current.split(":", 1)[1].split("=")[0].strip().split(",")) - {""}
    assert held == set(caps), f"the agent ran with {held}, not {set(caps)}"
    return json.loads(body), p.stderr


def names_for_pod(points, uid) -> set[str]:
    return {p["name"] for p in points if p["resource"].get("k8s.pod.uid") == uid}


def test_manifests_grant_exactly_the_measured_set():
    assert manifest_capabilities() == set(MINIMAL)


def test_minimal_set_runs_every_standard_program(node):
    points, err = run_agent_with(MINIMAL, node)
    pod = node[1]
    names = names_for_pod(points, pod.uid)
    assert "otel_agent.pod.cpu.on_cpu_time" in names  # cpu family attached
    assert "k8s.pod.cpu.time" in names  # cgroup files
    maps = {p["attributes"].get("otel_agent.bpf.map.name") for p in points if p["name"] == "otel_agent.bpf.map.capacity"}
    assert "net_traffic" in maps  # network family attached
    assert "not attached" not in err and "unavailable" not in err


@pytest.mark.parametrize("missing", MINIMAL)
def test_one_capability_fewer_is_named(missing, node):
    caps = tuple(c for c in MINIMAL if c != missing)
    points, err = run_agent_with(caps, node)
    assert missing.upper() in err, f"stderr does not name {missing.upper()}:\n{err}"
    assert "Traceback" not in err
    names = names_for_pod(points, node[1].uid)
    assert "k8s.pod.cpu.time" in names, "cgroup-file metrics must keep flowing"
    if missing == "cap_net_admin":
        assert "otel_agent.pod.cpu.on_cpu_time" in names  # only the network family is lost
    else:
        assert not any(n.startswith("otel_agent.bpf.") for n in
                       {p["name"] for p in points}), "no BPF without CAP_BPF/CAP_PERFMON"
