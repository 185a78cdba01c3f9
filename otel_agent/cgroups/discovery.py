"""Find the pod and container cgroups on disk, each with its cgroup id.

A walk covers only the three levels kubelet uses below kubepods, with os.scandir, and takes
each cgroup id from the directory entry's d_ino: on cgroupfs (kernfs) that is the inode number,
the same id BPF helpers return (DESIGN rule 1), and it costs no stat() per directory.
Directories that do not fit kubelet's layout are counted by reason, never guessed at (DESIGN
rule 5).

`Discoverer` walks only when something may have changed. kubepods' own `cgroup.stat` counts its
live descendants (`nr_descendants`, at every level), one read of a kept descriptor: while that
count is what it was at the last walk and the reader saw no cgroup go, no cgroup was created or
removed, and the last walk stands (a directory listing of every pod, ~2,200 entries at 100
pods, is most of what a walk costs; its mtime does not change on cgroupfs, so it cannot tell).
One created and one removed in the same interval keep the count equal: the reader's ENODEV for
the removed one tells, and the agent walks again in the same cycle (`discover(force=True)`)
and reads what the walk found in addition, so the new one is read in the same cycle, as a walk
every cycle would. A full walk at least every `max_age_seconds` bounds any other surprise. Why not cgroup_mkdir/rmdir from BPF: it works only
with eBPF on and its path map is bounded (LRU); this works everywhere, at the cost of a pread.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from pathlib import Path

from otel_agent.cgroups.layout import DEFAULT_KUBEPODS, Layout, layout_for
from otel_agent.model import CgroupId, CgroupRef, QosClass, Scope

# Reasons counted in Discovery.skipped.
UNKNOWN_LAYOUT = "unknown_layout"  # a directory under kubepods kubelet would not have made
VANISHED = "vanished"  # removed while we were listing it
NO_KUBEPODS = "no_kubepods"  # kubelet's pod root does not exist (yet)


@dataclass(slots=True)
class Discovery:
    refs: list[CgroupRef]  # NODE (the v2 root), KUBEPODS, then every pod and its containers
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    kubepods: str | None = None  # the pod root used, relative to the v2 root


def find_kubepods(root: Path) -> str | None:
    """kubelet's pod root at the top of the v2 mount for the default --cgroup-root, if any."""
    for name in DEFAULT_KUBEPODS:
        if os.path.isdir(os.path.join(root, name)):
            return name
    return None


def _subdirs(path: str, skipped: collections.Counter[str]) -> list[os.DirEntry[str]] | None:
    try:
        with os.scandir(path) as it:
            # cgroup directories hold only files and child cgroups; d_type needs no stat()
            return [e for e in it if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        skipped[VANISHED] += 1
        return None


def discover(root: Path, *, kubepods: str | None = None) -> Discovery:
    """Every cgroup the agent accounts for under the v2 mount `root`.

    `kubepods` is kubelet's pod root relative to `root` (see layout.classify); None looks for
    kubepods.slice or kubepods at the top. A missing pod root gives just the NODE ref and
    counts `no_kubepods`.
    """
    root_s = os.fspath(root)
    refs = [CgroupRef(CgroupId(os.stat(root_s).st_ino), Scope.NODE, root_s)]
    skipped: collections.Counter[str] = collections.Counter()
    kp = kubepods.strip("/") if kubepods is not None else find_kubepods(root)
    out = Discovery(refs, skipped, kp)
    if kp is None:
        skipped[NO_KUBEPODS] += 1
        return out
    kp_path = os.path.join(root_s, kp)
    try:
        kp_id = os.stat(kp_path).st_ino
    except FileNotFoundError:
        skipped[NO_KUBEPODS] += 1
        return out
    refs.append(CgroupRef(CgroupId(kp_id), Scope.KUBEPODS, kp_path))
    layout = layout_for(kp)
    top = _subdirs(kp_path, skipped)
    for entry in top or ():
        tier = layout.tier(entry.name)
        if tier is None:
            _pod(layout, entry, None, refs, skipped)
            continue
        for pod_entry in _subdirs(entry.path, skipped) or ():
            _pod(layout, pod_entry, tier, refs, skipped)
    return out


def _pod(
    layout: Layout,
    entry: os.DirEntry[str],
    tier: QosClass | None,
    refs: list[CgroupRef],
    skipped: collections.Counter[str],
) -> None:
    uid = layout.pod(entry.name, tier)
    if uid is None:
        skipped[UNKNOWN_LAYOUT] += 1
        return
    qos = tier or QosClass.GUARANTEED
    refs.append(CgroupRef(CgroupId(entry.inode()), Scope.POD, entry.path, uid, None, None, qos))
    for c in _subdirs(entry.path, skipped) or ():
        found = layout.container(c.name)
        if found is None:
            skipped[UNKNOWN_LAYOUT] += 1
            continue
        runtime, cid = found
        refs.append(CgroupRef(CgroupId(c.inode()), Scope.CONTAINER, c.path, uid, cid, runtime, qos))


class Discoverer:
    """discover() with a cheap test for "nothing changed" (see the module docstring)."""

    def __init__(self, root: Path, *, kubepods: str | None = None,
                 max_age_seconds: float = 60.0) -> None:
        self.root = root
        self.kubepods = kubepods
        self.max_age_seconds = max_age_seconds
        self.walks = 0  # for tests and the profile
        self.walked = False
        self._last: Discovery | None = None
        self._count_at_walk: int | None = None
        self._walked_at = 0.0
        self._stale = True
        self._stat_fd: int | None = None

    def invalidate(self) -> None:
        """A cgroup went (the reader saw ENODEV): walk again next time."""
        self._stale = True

    def discover(self, now: float, *, force: bool = False) -> Discovery:
        """`now` is monotonic seconds; `force` walks whatever the count says. `walked` tells
        whether this call walked."""
        count = self._descendants()
        last = self._last
        self.walked = False
        if (not force and last is not None and not self._stale and count is not None
                and count == self._count_at_walk and now - self._walked_at < self.max_age_seconds):
            return Discovery(last.refs, collections.Counter(last.skipped), last.kubepods)
        self._stale = False
        self._count_at_walk = count  # read before the walk: a change during it shows next time
        self._walked_at = now
        self.walks += 1
        self.walked = True
        self._last = discover(self.root, kubepods=self.kubepods)
        if self.kubepods is None:
            self.kubepods = self._last.kubepods
        return self._last

    def _descendants(self) -> int | None:
        kp = self.kubepods if self.kubepods is not None else (self._last.kubepods if self._last else None)
        if kp is None:
            return None
        try:
            if self._stat_fd is None:
                self._stat_fd = os.open(os.path.join(self.root, kp.strip("/"), "cgroup.stat"),
                                        os.O_RDONLY | os.O_CLOEXEC)
            data = os.pread(self._stat_fd, 4096, 0)
        except OSError:
            self.close()
            return None
        for line in data.split(b"\n"):
            if line.startswith(b"nr_descendants "):
                return int(line[15:])
        return None

    def close(self) -> None:
        if self._stat_fd is not None:
            try:
                os.close(self._stat_fd)
            finally:
                self._stat_fd = None
