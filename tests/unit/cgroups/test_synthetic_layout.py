"""The synthetic kubelet names what it makes exactly as discovery expects kubelet to.

Runs on a plain directory (no root needed): mkdir/rmdir behave the same there; the kernel
tier covers processes and real cgroup files.
"""

from __future__ import annotations

import os

import pytest

from otel_agent.cgroups.discovery import discover

from otel_agent.model import QosClass, Scope
from demo.synthetic import SyntheticError, SyntheticNode, sweep_stale, unique_prefix


@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_every_qos_and_runtime_is_discovered_as_made(tmp_path, driver):
    with SyntheticNode(tmp_path, "otel-agent-demo-x", driver=driver) as node:
        made = []
        for qos in QosClass:
            for runtime in ("containerd", "cri-o", "docker"):
                made.append(node.add_pod("ns", f"{qos.value}-{runtime}", qos=qos,
                                         runtime=runtime, containers=["app", "sidecar"]))
        d = discover(tmp_path, kubepods=node.kubepods)
        assert not d.skipped
        pods = {r.cgroup_id: r for r in d.refs if r.scope is Scope.POD}
        containers = {r.cgroup_id: r for r in d.refs if r.scope is Scope.CONTAINER}
        assert set(pods) == {p.cgroup_id for p in made}
        for p in made:
            assert (pods[p.cgroup_id].pod_uid, pods[p.cgroup_id].qos) == (p.uid, p.qos)
            for c in p.containers:
                ref = containers[c.cgroup_id]
                assert (ref.pod_uid, ref.container_id, ref.qos) == (p.uid, c.id, p.qos)
                assert c.cgroup_id == os.stat(c.path).st_ino and len(c.id) == 64
                # cgroupfs names only cri-o's containers by runtime
                expected = p.runtime if driver == "systemd" or p.runtime == "cri-o" else None
                assert ref.runtime == expected
        node.remove_pod(made[0])
        assert not made[0].path.exists() and made[0] not in node.pods
        node.remove_container(made[1].containers[0])
        assert [c.name for c in made[1].containers] == ["sidecar"]
    assert os.listdir(tmp_path) == []


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(SyntheticError, match="driver 'openrc'"):
        SyntheticNode(tmp_path, "p", driver="openrc")
    with pytest.raises(SyntheticError, match="prefix 'a/b': must be a single directory name"):
        SyntheticNode(tmp_path, "a/b")
    with SyntheticNode(tmp_path, "p") as node:
        with pytest.raises(SyntheticError, match="runtime 'rkt'"):
            node.add_pod("ns", "x", runtime="rkt")
        with pytest.raises(SyntheticError, match="cannot create the prefix cgroup"):
            SyntheticNode(tmp_path, "p").create()  # never adopts an existing tree
        assert node.path.exists()


def test_sweep_spares_trees_whose_creator_lives(tmp_path):
    mine = unique_prefix("otel-agent-demo")
    (tmp_path / mine / "kubepods").mkdir(parents=True)
    (tmp_path / "otel-agent-demo-999999999-dead00" / "kubepods" / "burstable").mkdir(parents=True)
    assert sweep_stale(tmp_path) == [tmp_path / "otel-agent-demo-999999999-dead00"]
    assert os.listdir(tmp_path) == [mine]
