"""Shared by the fault suite: a synthetic node, the ledger path as processes, burners.

Every test here runs real processes (agent, rotel, cost processor) on loopback against real
kubelet-layout cgroups with real work in them, breaks one thing, and then compares the ledger
with the kernel's own cpu.stat. Helpers that are not fault-specific live in
tests/support/pipeline.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from otel_agent.cgroups.mount import find_cgroup2_mount
from demo.synthetic import SyntheticNode, unique_prefix
from tests.support.pipeline import CostProcessor, Rotel, rotel_binary

# Burns `s` seconds of CPU in slices of `slice_s`, sleeping `sleep_s` between slices, so a
# pod keeps working through a whole fault window at a small duty cycle.
DUTY_BURNER = """\
import time
total, slice_s, sleep_s = {s}, {slice_s}, {sleep_s}
while time.process_time() < total:
    end = min(total, time.process_time() + slice_s)
    while time.process_time() < end:
        pass
    time.sleep(sleep_s)
"""

# Python without site-packages: what a container's short-lived process costs is what it costs.
PY = [sys.executable, "-S", "-I", "-c"]


def duty_burner(total_seconds: float, *, slice_seconds: float = 0.05, sleep_seconds: float = 0.45) -> list[str]:
    return [*PY, DUTY_BURNER.format(s=total_seconds, slice_s=slice_seconds, sleep_s=sleep_seconds)]


def burner(total_seconds: float) -> list[str]:
    return [*PY, f"import time\nwhile time.process_time() < {total_seconds}: pass\n"]


@pytest.fixture
def synth():
    with SyntheticNode(find_cgroup2_mount(), unique_prefix("otel-agent-fault")) as node:
        yield node


@pytest.fixture
def ledger(tmp_path: Path):
    """The cost processor, then rotel in front of it: (rotel, cost). Both stopped at the end."""
    if rotel_binary() is None:
        pytest.skip("the rotel wheel (with its rotel-agent binary) is not installed")
    cost = CostProcessor(tmp_path).start()
    rotel = Rotel(tmp_path, exporter_port=cost.port).start()
    box = {"rotel": rotel, "cost": cost}
    try:
        yield box
    finally:
        box["rotel"].stop()
        cost.stop()


def static_meta(pods, node_name: str = "node-a"):
    """PodMeta for synthetic pods, container names and ids included (for the static source)."""
    from otel_agent.model import ContainerMeta, PodMeta

    return [PodMeta(p.uid, p.name, p.namespace, node_name=node_name, qos=p.qos,
                    containers=tuple(ContainerMeta(c.name, c.id, cpu_request_cores=0.1)
                                     for c in p.containers))
            for p in pods]
