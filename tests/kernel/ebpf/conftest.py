"""Kernel-tier fixtures for the eBPF source: one collector per session, fresh cgroups per test."""

from __future__ import annotations

import pytest

from tests.kernel.ebpf.cgtools import V2_ROOT, Cgroups

POD_CIDRS = ("127.0.0.1/32",)
CLUSTER_CIDRS = ("127.0.0.2/32", "::1/128")  # 127.0.0.3 matches neither: internet


@pytest.fixture(scope="session")
def collector():
    """One comprehensive-profile collector for the session: one compile, all families."""
    from otel_agent.ebpf import BpfCollector, BpfConfig

    col = BpfCollector(BpfConfig(profile="comprehensive", cgroup_root=V2_ROOT,
                                 pod_cidrs=POD_CIDRS, cluster_cidrs=CLUSTER_CIDRS,
                                 # loopback stands in for all three classes here
                                 loopback_is_local=False))
    status = col.start()
    assert all(s.attached for s in status.values()), status
    try:
        yield col
    finally:
        col.stop()


@pytest.fixture
def cgroups():
    if not (V2_ROOT / "cgroup.procs").exists():
        pytest.skip(f"no cgroup v2 at {V2_ROOT}")
    c = Cgroups()
    try:
        yield c
    finally:
        c.cleanup()


