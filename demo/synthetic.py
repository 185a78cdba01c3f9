"""A synthetic kubelet: real cgroup v2 directories in kubelet's layout, with real work in them.

The demo, the kernel tests and the benchmark need pods without Kubernetes. Faking the files
would test nothing the kernel does (ids, removal, ENODEV, what a hybrid node leaves out), so
this makes real cgroups, named exactly as kubelet and the runtimes name them, under a prefix
directory of the v2 mount that nothing else uses, e.g.

    <mount>/otel-agent-demo-<pid>-<rand>/kubepods.slice/kubepods-burstable.slice/
        kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<64 hex>.scope

Work is started *inside* a container cgroup (the child joins it before exec), so all of its
CPU time is charged there, as a container runtime does. Everything is removed on exit, even
after a failure; `sweep_stale` removes what a crashed run left behind (the prefix carries the
creator's pid so a live run is never swept).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from otel_agent.errors import OtelAgentError
from otel_agent.model import CgroupId, ContainerId, PodUid, QosClass

DRIVERS = ("systemd", "cgroupfs")
RUNTIMES = ("containerd", "cri-o", "docker")

_TIER_NAME = {QosClass.BURSTABLE: "burstable", QosClass.BEST_EFFORT: "besteffort"}
_SYSTEMD_SCOPE_PREFIX = {"containerd": "cri-containerd-", "cri-o": "crio-", "docker": "docker-"}
_PREFIX_OWNER = re.compile(r"-(\d+)-[0-9a-f]+$")
_KILL_TIMEOUT_SECONDS = 10.0


class SyntheticError(OtelAgentError):
    """The synthetic kubelet could not create, fill or remove its cgroup directories."""


def unique_prefix(base: str = "otel-agent-demo") -> str:
    """`<base>-<pid>-<rand>`: unique, and tells sweep_stale whether its creator is alive."""
    return f"{base}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class SynthContainer:
    name: str
    id: ContainerId  # 64 hex, without a runtime:// prefix
    runtime: str
    path: Path  # absolute cgroup directory
    cgroup_id: CgroupId
    procs: list[subprocess.Popen] = field(default_factory=list, repr=False)


@dataclass(slots=True)
class SynthPod:
    namespace: str
    name: str
    uid: PodUid
    qos: QosClass
    runtime: str
    path: Path
    cgroup_id: CgroupId
    containers: list[SynthContainer] = field(default_factory=list)

    def container(self, name: str) -> SynthContainer:
        for c in self.containers:
            if c.name == name:
                return c
        raise KeyError(f"pod {self.namespace}/{self.name} has no container {name!r}")


class SyntheticNode:
    """Creates kubelet-shaped cgroups under `<root>/<prefix>`; use as a context manager.

    `root` is the cgroup v2 mount; `prefix` a new directory name (see unique_prefix);
    `driver` is kubelet's cgroup driver, which decides the naming (systemd or cgroupfs).
    """

    def __init__(self, root: Path, prefix: str, *, driver: str = "systemd") -> None:
        if driver not in DRIVERS:
            raise SyntheticError(f"driver {driver!r}: must be one of {', '.join(DRIVERS)}")
        if not prefix or "/" in prefix or prefix in (".", ".."):
            raise SyntheticError(f"prefix {prefix!r}: must be a single directory name")
        self.root = Path(root)
        self.prefix = prefix
        self.driver = driver
        self.path = self.root / prefix
        kp_name = "kubepods.slice" if driver == "systemd" else "kubepods"
        self.kubepods = f"{prefix}/{kp_name}"  # pass as discover(kubepods=...), classify(...)
        self.kubepods_path = self.root / self.kubepods
        self.pods: list[SynthPod] = []
        self._created = False

    # --- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> SyntheticNode:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> None:
        try:
            os.mkdir(self.path)  # must be new: never adopt (and later delete) someone's tree
        except OSError as e:
            raise SyntheticError(f"{self.path}: cannot create the prefix cgroup: {e}") from e
        self._created = True
        try:
            os.mkdir(self.kubepods_path)
            for tier in _TIER_NAME.values():
                os.mkdir(self._tier_path(tier))
        except OSError as e:
            self.close()
            raise SyntheticError(f"{self.path}: cannot create kubepods: {e}") from e

    def close(self) -> None:
        """Kill everything, remove every directory; raise if anything is left behind."""
        if not self._created:
            return
        for pod in list(self.pods):
            try:
                self.remove_pod(pod)
            except SyntheticError:
                pass  # _remove_tree below retries the whole prefix
        self.pods.clear()
        left = _remove_tree(self.path)
        self._created = False
        if left:
            raise SyntheticError(f"{self.path}: could not remove {', '.join(left)}")

    # --- pods and containers ---------------------------------------------------------------

    def _tier_path(self, tier: str) -> Path:
        if self.driver == "systemd":
            return self.kubepods_path / f"kubepods-{tier}.slice"
        return self.kubepods_path / tier

    def add_pod(
        self,
        namespace: str,
        name: str,
        *,
        qos: QosClass = QosClass.BURSTABLE,
        containers: Sequence[str] = ("app",),
        uid: str | None = None,
        runtime: str = "containerd",
    ) -> SynthPod:
        if runtime not in RUNTIMES:
            raise SyntheticError(f"runtime {runtime!r}: must be one of {', '.join(RUNTIMES)}")
        uid = PodUid(uid or str(uuid.uuid4()))
        tier = _TIER_NAME.get(qos)
        if self.driver == "systemd":
            parent = self.kubepods_path if tier is None else self._tier_path(tier)
            slice_tier = "" if tier is None else f"-{tier}"
            path = parent / f"kubepods{slice_tier}-pod{uid.replace('-', '_')}.slice"
        else:
            parent = self.kubepods_path if tier is None else self._tier_path(tier)
            path = parent / f"pod{uid}"
        pod = SynthPod(namespace, name, uid, qos, runtime, path, _mkdir(path))
        self.pods.append(pod)
        for cname in containers:
            self.add_container(pod, cname)
        return pod

    def add_container(self, pod: SynthPod, name: str) -> SynthContainer:
        cid = ContainerId(secrets.token_hex(32))
        if self.driver == "systemd":
            dirname = f"{_SYSTEMD_SCOPE_PREFIX[pod.runtime]}{cid}.scope"
        else:
            dirname = f"crio-{cid}" if pod.runtime == "cri-o" else cid
        path = pod.path / dirname
        container = SynthContainer(name, cid, pod.runtime, path, _mkdir(path))
        pod.containers.append(container)
        return container

    def spawn(
        self, container: SynthContainer, argv: Sequence[str], **popen_kwargs: Any
    ) -> subprocess.Popen:
        """Start `argv` inside the container's cgroup: the child joins it before exec."""
        procs_file = os.fspath(container.path / "cgroup.procs")
        user_preexec: Callable[[], None] | None = popen_kwargs.pop("preexec_fn", None)

        def join_cgroup() -> None:
            fd = os.open(procs_file, os.O_WRONLY)
            try:
                os.write(fd, b"0")  # "0" moves the writing process itself
            finally:
                os.close(fd)
            if user_preexec is not None:
                user_preexec()

        proc = subprocess.Popen(argv, preexec_fn=join_cgroup, **popen_kwargs)
        container.procs.append(proc)
        return proc

    def remove_container(self, container: SynthContainer, pod: SynthPod | None = None) -> None:
        """Kill the container's processes and remove its cgroup (the pod keeps its usage)."""
        _kill_and_reap(container.path, container.procs)
        left = _remove_tree(container.path)
        if left:
            raise SyntheticError(f"{container.path}: could not remove {', '.join(left)}")
        for p in [pod] if pod else self.pods:
            if container in p.containers:
                p.containers.remove(container)

    def remove_pod(self, pod: SynthPod) -> None:
        """Kill the pod's processes, then remove its containers' cgroups and its own."""
        _kill_and_reap(pod.path, [p for c in pod.containers for p in c.procs])
        left = _remove_tree(pod.path)
        if left:
            raise SyntheticError(f"{pod.path}: could not remove {', '.join(left)}")
        if pod in self.pods:
            self.pods.remove(pod)


# --- helpers that work on any cgroup subtree ---------------------------------------------


def _mkdir(path: Path) -> CgroupId:
    try:
        os.mkdir(path)
        return CgroupId(os.stat(path).st_ino)
    except OSError as e:
        raise SyntheticError(f"{path}: cannot create cgroup: {e}") from e


def _populated(path: Path) -> bool:
    try:
        text = (path / "cgroup.events").read_text()
    except FileNotFoundError:
        return False
    return "populated 1" in text


def _kill_and_reap(path: Path, procs: Iterable[subprocess.Popen]) -> None:
    """SIGKILL every task in the subtree, reap our own children, wait until it is empty."""
    deadline = time.monotonic() + _KILL_TIMEOUT_SECONDS
    kill_file = path / "cgroup.kill"  # 5.14+: kills the whole subtree, forks included
    while _populated(path):
        if kill_file.exists():
            try:
                kill_file.write_text("1")
            except FileNotFoundError:
                break
        else:
            for procs_file in path.rglob("cgroup.procs"):
                for pid in procs_file.read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for p in procs:
            if p.poll() is None:
                try:
                    p.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    pass
        if time.monotonic() > deadline:
            raise SyntheticError(f"{path}: tasks still running {_KILL_TIMEOUT_SECONDS:.0f} s "
                                 "after SIGKILL")
        if _populated(path):
            time.sleep(0.01)
    for p in procs:
        if p.returncode is None:
            p.wait()


def _remove_tree(path: Path) -> list[str]:
    """Kill and rmdir a cgroup subtree bottom-up; returns the directories that remain."""
    if not path.exists():
        return []
    try:
        _kill_and_reap(path, ())
    except SyntheticError:
        pass  # rmdir below reports what could not go
    left: list[str] = []
    for dirpath, _, _ in os.walk(path, topdown=False):
        for attempt in range(50):
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                # EBUSY: a task is still exiting, or a child is not gone yet
                if e.errno != errno.EBUSY or attempt == 49:
                    left.append(dirpath)
                    break
                time.sleep(0.01)
    return left


def sweep_stale(root: Path, prefix_glob: str = "otel-agent-demo-*") -> list[Path]:
    """Remove synthetic trees under `root` left by crashed runs; returns what was removed.

    A prefix made by unique_prefix names its creator's pid; trees whose creator is still
    alive are left alone, so concurrent runs never sweep each other. Raises SyntheticError
    if a stale tree could not be removed.
    """
    removed: list[Path] = []
    for path in sorted(Path(root).glob(prefix_glob)):
        if not path.is_dir():
            continue
        m = _PREFIX_OWNER.search(path.name)
        if m and _alive(int(m.group(1))):
            continue
        left = _remove_tree(path)
        if left:
            raise SyntheticError(f"{path}: stale cgroups not removable: {', '.join(left)}")
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
