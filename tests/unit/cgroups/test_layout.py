"""kubelet's cgroup names for both drivers and the common runtimes; everything else is None."""

from __future__ import annotations

import pytest

from otel_agent.cgroups.layout import ClassifiedPath, classify, qos_tier
from otel_agent.model import QosClass, Scope

UID = "0b6f3f1e-2222-4a5b-8c9d-000000000002"
U_ = UID.replace("-", "_")
STATIC = "6d1f0e6c2b3a49587766554433221100"
CID = "a" * 40 + "0123456789abcdef01234567"
assert len(CID) == 64

G, B, E = QosClass.GUARANTEED, QosClass.BURSTABLE, QosClass.BEST_EFFORT
POD, CONTAINER = Scope.POD, Scope.CONTAINER

GOOD = [
    # systemd driver
    ("kubepods.slice", None, ClassifiedPath(Scope.KUBEPODS)),
    (f"kubepods.slice/kubepods-pod{U_}.slice", None, ClassifiedPath(POD, UID, qos=G)),
    (f"kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{CID}.scope", None,
     ClassifiedPath(CONTAINER, UID, CID, "containerd", G)),
    (f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice", None,
     ClassifiedPath(POD, UID, qos=B)),
    (f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice/crio-{CID}.scope",
     None, ClassifiedPath(CONTAINER, UID, CID, "cri-o", B)),
    (f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice/"
     f"docker-{CID}.scope", None, ClassifiedPath(CONTAINER, UID, CID, "docker", E)),
    (f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC}.slice", None,
     ClassifiedPath(POD, STATIC, qos=B)),
    # cgroupfs driver
    ("kubepods", None, ClassifiedPath(Scope.KUBEPODS)),
    (f"kubepods/pod{UID}", None, ClassifiedPath(POD, UID, qos=G)),
    (f"kubepods/pod{UID}/{CID}", None, ClassifiedPath(CONTAINER, UID, CID, None, G)),
    (f"kubepods/burstable/pod{UID}/{CID}", None, ClassifiedPath(CONTAINER, UID, CID, None, B)),
    (f"kubepods/besteffort/pod{UID}/crio-{CID}", None,
     ClassifiedPath(CONTAINER, UID, CID, "cri-o", E)),
    # leading slash (BPF cgroup_mkdir paths), trailing slash
    (f"/kubepods/burstable/pod{UID}/", None, ClassifiedPath(POD, UID, qos=B)),
    # moved by --cgroup-root / a demo prefix
    ("otel-agent-demo-x/kubepods.slice", "otel-agent-demo-x/kubepods.slice",
     ClassifiedPath(Scope.KUBEPODS)),
    (f"/otel-agent-demo-x/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}"
     f".slice/docker-{CID}.scope", "/otel-agent-demo-x/kubepods.slice",
     ClassifiedPath(CONTAINER, UID, CID, "docker", E)),
    # systemd --cgroup-root=/custom.slice: kubelet names its children after the parent slice
    (f"custom.slice/custom-kubepods.slice/custom-kubepods-burstable.slice/"
     f"custom-kubepods-burstable-pod{U_}.slice", "custom.slice/custom-kubepods.slice",
     ClassifiedPath(POD, UID, qos=B)),
    (f"k/pod{UID}/{CID}", "k", ClassifiedPath(CONTAINER, UID, CID, None, G)),
]


@pytest.mark.parametrize("path, kubepods, expected", GOOD, ids=[g[0][-60:] for g in GOOD])
def test_kubelet_paths(path, kubepods, expected):
    assert classify(path, kubepods) == expected


BAD = [
    ("", None),  # the v2 root
    ("system.slice/kubelet.service", None),
    ("kubepods.slice/kubepods-burstable.slice", None),  # QoS tier: neither pod nor container
    ("kubepods/besteffort", None),
    (f"kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod{U_}.slice", None),
    (f"kubepods.slice/kubepods-pod{UID}.slice", None),  # '-' in a systemd uid: nested slices
    (f"kubepods/pod{U_}", None),  # '_' in a cgroupfs uid
    (f"kubepods.slice/kubepods-pod{U_}.slice/crio-conmon-{CID}.scope", None),
    (f"kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{CID[:12]}.scope", None),
    (f"kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{CID.upper()}.scope", None),
    (f"kubepods.slice/kubepods-pod{U_}.slice/podman-{CID}.scope", None),
    (f"kubepods/pod{UID}/{CID}/nested", None),
    (f"kubepods/pod{UID.upper()}", None),
    (f"kubepods/burstable/pod{UID}x", None),
    ("kubepods/something", None),
    (f"kubepods.slice/kubepods-pod{U_}.slice", "otel-agent-demo-x/kubepods.slice"),  # elsewhere
    (f"kubepods.slicex/kubepods-pod{U_}.slice", "kubepods.slice"),  # prefix, not a parent
    (f"other/kubepods/pod{UID}", None),  # default looks only at the top of the mount
]


@pytest.mark.parametrize("path, kubepods", BAD, ids=[b[0][-60:] or "root" for b in BAD])
def test_anything_else_is_not_guessed(path, kubepods):
    assert classify(path, kubepods) is None


def test_qos_tiers():
    assert qos_tier("kubepods.slice/kubepods-burstable.slice") is B
    assert qos_tier("/kubepods/besteffort") is E
    assert qos_tier("x/kubepods.slice/kubepods-besteffort.slice", "x/kubepods.slice") is E
    assert qos_tier(f"kubepods/pod{UID}") is None
    assert qos_tier("kubepods/burstable/x") is None
