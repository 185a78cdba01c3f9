"""What a cgroup path means in kubelet's layout: the kubepods root, a pod, or a container.

Kubelet names cgroups differently for its two cgroup drivers, and the container runtime names
the container cgroup below the pod's:

    systemd   kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, _ for ->.slice/
                  cri-containerd-<id>.scope | crio-<id>.scope | docker-<id>.scope
              kubepods.slice/kubepods-pod<uid>.slice/...            (Guaranteed: no QoS slice)
    cgroupfs  kubepods/burstable/pod<uid>/<id>  (cri-o: crio-<id>)
              kubepods/pod<uid>/<id>                                 (Guaranteed)

A name that fits none of these is *not* guessed at (a wrong pod uid would bill the wrong
tenant): `classify` returns None and the caller counts it as skipped. The kubepods location is
a parameter because kubelet's --cgroup-root moves it (and the demo puts it under a prefix).
With the systemd driver, slice names spell their ancestry (`foo-kubepods.slice` under
`foo.slice` has children `foo-kubepods-burstable.slice`), so child names are derived from the
kubepods directory's own name rather than hard-coded.

Pure: no I/O, so it runs on paths from disk and on paths learnt from BPF `cgroup_mkdir` events
(relative to the v2 root, with a leading '/') alike.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from otel_agent.model import ContainerId, PodUid, QosClass, Scope

DEFAULT_KUBEPODS = ("kubepods.slice", "kubepods")
"""Where kubelet puts pods with the default --cgroup-root, for the systemd and cgroupfs drivers."""

_TIERS = {"burstable": QosClass.BURSTABLE, "besteffort": QosClass.BEST_EFFORT}

_HEX64 = "[0-9a-f]{64}"
# Kubernetes pod uids are lowercase UUIDs; static pods (kube-apiserver, etcd) get a 32-hex hash.
_UID_SYSTEMD = "[0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12}|[0-9a-f]{32}"
_UID_CGROUPFS = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}"

_SYSTEMD_CONTAINER = re.compile(rf"(cri-containerd|crio|docker)-({_HEX64})\.scope")
_CGROUPFS_CONTAINER = re.compile(rf"(crio-)?({_HEX64})")
_SYSTEMD_RUNTIMES = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}


@dataclass(frozen=True, slots=True)
class ClassifiedPath:
    """What kubelet meant by one cgroup directory."""

    scope: Scope  # KUBEPODS, POD or CONTAINER
    pod_uid: PodUid | None = None  # with dashes, as the Kubernetes API spells it
    container_id: ContainerId | None = None  # without the runtime prefix
    runtime: str | None = None  # containerd | cri-o | docker | None (cgroupfs: not in the name)
    qos: QosClass | None = None


class Layout:
    """Name matchers for one kubepods directory; `layout_for` caches one per location."""

    __slots__ = ("kubepods", "systemd", "_tiers", "_pod", "_container")

    def __init__(self, kubepods: str) -> None:
        self.kubepods = kubepods.strip("/")
        base = self.kubepods.rsplit("/", 1)[-1]
        self.systemd = base.endswith(".slice")
        if self.systemd:
            stem = base[: -len(".slice")]
            self._tiers = {f"{stem}-{t}.slice": q for t, q in _TIERS.items()}
            # group 1: QoS tier name or None (Guaranteed); group 2: uid
            self._pod = re.compile(
                rf"{re.escape(stem)}(?:-(burstable|besteffort))?-pod({_UID_SYSTEMD})\.slice"
            )
            self._container = _SYSTEMD_CONTAINER
        else:
            self._tiers = dict(_TIERS)
            self._pod = re.compile(rf"()pod({_UID_CGROUPFS})")
            self._container = _CGROUPFS_CONTAINER

    def tier(self, name: str) -> QosClass | None:
        """The QoS class of a QoS-tier directory directly under kubepods, else None."""
        return self._tiers.get(name)

    def pod(self, name: str, tier: QosClass | None) -> PodUid | None:
        """The uid of a pod directory found under `tier` (None: directly under kubepods)."""
        m = self._pod.fullmatch(name)
        if m is None:
            return None
        if self.systemd and (_TIERS[m.group(1)] if m.group(1) else None) is not tier:
            return None  # kubepods-besteffort-pod… under the burstable slice: not kubelet's
        return PodUid(m.group(2).replace("_", "-"))

    def container(self, name: str) -> tuple[str | None, ContainerId] | None:
        """(runtime, container id) of a container directory under a pod, else None."""
        m = self._container.fullmatch(name)
        if m is None:
            return None
        if self.systemd:
            return _SYSTEMD_RUNTIMES[m.group(1)], ContainerId(m.group(2))
        return ("cri-o" if m.group(1) else None), ContainerId(m.group(2))


@functools.lru_cache(maxsize=64)
def layout_for(kubepods: str) -> Layout:
    return Layout(kubepods)


def _split(rel_path: str, kubepods: str | None) -> tuple[Layout, list[str]] | None:
    path = rel_path.strip("/")
    if kubepods is None:
        first = path.split("/", 1)[0]
        if first not in DEFAULT_KUBEPODS:
            return None
        kubepods = first
    kp = kubepods.strip("/")
    if path == kp:
        return layout_for(kp), []
    if not path.startswith(kp + "/"):
        return None
    return layout_for(kp), path[len(kp) + 1 :].split("/")


def qos_tier(rel_path: str, kubepods: str | None = None) -> QosClass | None:
    """The QoS class if `rel_path` is a QoS-tier directory (kubepods-burstable.slice, ...)."""
    split = _split(rel_path, kubepods)
    if split is None or len(split[1]) != 1:
        return None
    return split[0].tier(split[1][0])


def classify(rel_path: str, kubepods: str | None = None) -> ClassifiedPath | None:
    """Classify a cgroup path relative to the v2 root ('/a/b' and 'a/b' alike).

    `kubepods` is kubelet's pod root relative to the v2 root (e.g. 'kubepods.slice' or
    'otel-agent-demo-x/kubepods.slice'); None finds 'kubepods.slice' or 'kubepods' at the top.
    Returns None for QoS-tier directories, for anything outside kubepods and for any name
    kubelet would not have made.
    """
    split = _split(rel_path, kubepods)
    if split is None:
        return None
    layout, parts = split
    if not parts:
        return ClassifiedPath(Scope.KUBEPODS)
    tier = layout.tier(parts[0])
    if tier is not None:
        parts = parts[1:]
        if not parts:
            return None  # a QoS tier is neither pod nor container
    qos = tier or QosClass.GUARANTEED
    if len(parts) > 2:
        return None
    uid = layout.pod(parts[0], tier)
    if uid is None:
        return None
    if len(parts) == 1:
        return ClassifiedPath(Scope.POD, pod_uid=uid, qos=qos)
    container = layout.container(parts[1])
    if container is None:
        return None
    runtime, cid = container
    return ClassifiedPath(Scope.CONTAINER, uid, cid, runtime, qos)
