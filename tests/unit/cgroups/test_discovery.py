"""Discovery on fixture trees: every layout found with its inode, everything else counted."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from otel_agent.cgroups.discovery import NO_KUBEPODS, UNKNOWN_LAYOUT, discover
from otel_agent.model import QosClass, Scope

TREES = Path(__file__).parents[2] / "fixtures" / "cgroups" / "trees"
UID_G = "0b6f3f1e-1111-4a5b-8c9d-000000000001"
UID_B = "0b6f3f1e-2222-4a5b-8c9d-000000000002"
UID_E = "0b6f3f1e-3333-4a5b-8c9d-000000000003"
UID_STATIC = "6d1f0e6c2b3a49587766554433221100"


def cid(name: str) -> str:  # how make_fixtures.py names containers
    return hashlib.sha256(name.encode()).hexdigest()


def by_scope(d, scope):
    return [r for r in d.refs if r.scope is scope]


def assert_ids_are_inodes(d):
    for ref in d.refs:
        assert ref.cgroup_id == os.stat(ref.path).st_ino, ref.path
    assert len({r.cgroup_id for r in d.refs}) == len(d.refs)


@pytest.mark.parametrize("tree", ["systemd", "pure-v2"])
def test_systemd_tree(tree):
    root = TREES / tree
    d = discover(root)
    assert d.kubepods == "kubepods.slice"
    assert_ids_are_inodes(d)
    (node,) = by_scope(d, Scope.NODE)
    assert node.path == str(root)
    (kp,) = by_scope(d, Scope.KUBEPODS)
    assert kp.path == str(root / "kubepods.slice")
    pods = {r.pod_uid: r.qos for r in by_scope(d, Scope.POD)}
    assert pods == {UID_G: QosClass.GUARANTEED, UID_B: QosClass.BURSTABLE,
                    UID_E: QosClass.BEST_EFFORT, UID_STATIC: QosClass.BURSTABLE}
    containers = {(r.pod_uid, r.container_id, r.runtime, r.qos)
                  for r in by_scope(d, Scope.CONTAINER)}
    assert containers == {
        (UID_G, cid("g-app"), "containerd", QosClass.GUARANTEED),
        (UID_B, cid("b-app"), "cri-o", QosClass.BURSTABLE),
        (UID_B, cid("b-sidecar"), "cri-o", QosClass.BURSTABLE),
        (UID_E, cid("e-app"), "docker", QosClass.BEST_EFFORT),
    }
    # crio-conmon, a besteffort pod under the burstable tier, a 12-hex docker id,
    # something-else.slice, a systemd pod slice with dashes in its uid
    assert d.skipped == {UNKNOWN_LAYOUT: 5}
    # system.slice is outside kubepods: neither found nor counted
    assert not [r for r in d.refs if "system.slice" in r.path]


def test_every_container_sits_under_its_pod():
    d = discover(TREES / "systemd")
    pod_paths = {r.pod_uid: r.path for r in by_scope(d, Scope.POD)}
    for c in by_scope(d, Scope.CONTAINER):
        assert os.path.dirname(c.path) == pod_paths[c.pod_uid]


def test_cgroupfs_tree():
    d = discover(TREES / "cgroupfs")
    assert d.kubepods == "kubepods"
    assert_ids_are_inodes(d)
    assert {(r.pod_uid, r.qos) for r in by_scope(d, Scope.POD)} == {
        (UID_G, QosClass.GUARANTEED), (UID_B, QosClass.BURSTABLE), (UID_E, QosClass.BEST_EFFORT)}
    assert {(r.container_id, r.runtime) for r in by_scope(d, Scope.CONTAINER)} == {
        (cid("g-app"), None), (cid("b-app"), "cri-o"), (cid("e-app"), None)}
    # crio-conmon-…, pod-not-a-uid, not-a-container; 'nested' below a container is not walked
    assert d.skipped == {UNKNOWN_LAYOUT: 3}


def test_kubepods_under_a_prefix_needs_the_parameter():
    root = TREES / "prefixed"
    assert discover(root).skipped == {NO_KUBEPODS: 1}
    d = discover(root, kubepods="/otel-agent-demo-x/kubepods.slice")
    assert d.kubepods == "otel-agent-demo-x/kubepods.slice"
    assert len(by_scope(d, Scope.POD)) == 4 and len(by_scope(d, Scope.CONTAINER)) == 4
    assert_ids_are_inodes(d)


def test_no_kubepods_gives_the_node_alone():
    d = discover(TREES / "no-kubepods")
    assert [r.scope for r in d.refs] == [Scope.NODE] and d.skipped == {NO_KUBEPODS: 1}
    d = discover(TREES / "systemd", kubepods="not/there.slice")
    assert [r.scope for r in d.refs] == [Scope.NODE] and d.skipped == {NO_KUBEPODS: 1}


def test_pods_come_and_go_between_calls(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(TREES / "cgroupfs", root)
    before = {r.pod_uid for r in by_scope(discover(root), Scope.POD)}
    shutil.rmtree(root / "kubepods" / "burstable" / f"pod{UID_B}")
    new_uid = "0b6f3f1e-4444-4a5b-8c9d-000000000004"
    (root / "kubepods" / "besteffort" / f"pod{new_uid}" / cid("new")).mkdir(parents=True)
    d = discover(root)
    assert {r.pod_uid for r in by_scope(d, Scope.POD)} == before - {UID_B} | {new_uid}
    assert_ids_are_inodes(d)


def test_discoverer_walks_only_when_kubepods_descendants_change_or_a_cgroup_went(tmp_path):
    from otel_agent.cgroups.discovery import Discoverer

    root = tmp_path / "cg"
    shutil.copytree(TREES / "pure-v2", root)
    stat = root / "kubepods.slice" / "cgroup.stat"
    stat.write_text("nr_descendants 7\nnr_dying_descendants 0\n")
    d = Discoverer(root, kubepods="kubepods.slice", max_age_seconds=60)
    first = d.discover(now=0.0)
    assert d.walks == 1
    again = d.discover(now=1.0)
    assert d.walks == 1 and again.refs == first.refs and again.skipped == first.skipped
    stat.write_text("nr_descendants 8\nnr_dying_descendants 0\n")  # a cgroup was created
    d.discover(now=2.0)
    assert d.walks == 2
    d.discover(now=3.0)
    assert d.walks == 2
    d.invalidate()  # the reader saw one go (and one may have come with the count unchanged)
    d.discover(now=4.0)
    assert d.walks == 3
    d.discover(now=70.0)  # older than max_age_seconds: a full walk all the same
    assert d.walks == 4
    d.close()
    stat.unlink()  # no cgroup.stat to go by: walk every time, as discover() alone
    d = Discoverer(root, kubepods="kubepods.slice")
    d.discover(now=71.0)
    d.discover(now=72.0)
    assert d.walks == 2
    d.close()
