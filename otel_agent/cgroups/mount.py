"""Where the cgroup v2 hierarchy is mounted, and which controllers it offers.

Every cgroup id the agent joins on is an inode of *this* hierarchy (DESIGN rule 1), so the
agent must read cgroup files from the v2 mount and nowhere else. A pure-v2 node mounts it at
/sys/fs/cgroup; a hybrid node (systemd's legacy layout, like this machine) puts the v1
controllers there and v2 at /sys/fs/cgroup/unified. Guessing the path would silently read the
wrong tree, so the answer comes from /proc/self/mountinfo.

Controllers matter because a controller bound to v1 (memory and io on this machine) leaves its
files out of every v2 directory: the reader reports those metrics as absent, never as zero.
"""

from __future__ import annotations

import re
from pathlib import Path

from otel_agent.errors import CgroupMountError, ParseError

# Where systemd mounts v2 in its unified and hybrid modes, best first.
_PREFERRED = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def cgroup2_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Path]:
    """Every mount point of filesystem type cgroup2, in mountinfo order."""
    try:
        text = mountinfo.read_text()
    except OSError as e:
        raise CgroupMountError(f"{mountinfo}: cannot read mount table: {e}") from e
    found: list[Path] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        # id parent maj:min root mountpoint options [optional fields...] - fstype source superopts
        fields = line.split()
        try:
            sep = fields.index("-", 6)
        except ValueError as e:
            raise ParseError(
                f"{mountinfo}:{lineno}: no ' - ' separator after the optional fields: {line!r}"
            ) from e
        if len(fields) < sep + 2:
            raise ParseError(f"{mountinfo}:{lineno}: no filesystem type after ' - ': {line!r}")
        if fields[sep + 1] == "cgroup2":
            found.append(Path(_unescape(fields[4])))
    return found


def find_cgroup2_mount(mountinfo: Path = Path("/proc/self/mountinfo")) -> Path:
    """The cgroup v2 mount: /sys/fs/cgroup (pure v2) or /sys/fs/cgroup/unified (hybrid).

    A cgroup2 mount elsewhere is accepted only when it is the sole one.
    Raises CgroupMountError naming the mountinfo file when there is none.
    """
    mounts = cgroup2_mounts(mountinfo)
    for preferred in _PREFERRED:
        if Path(preferred) in mounts:
            return Path(preferred)
    if len(mounts) == 1:
        return mounts[0]
    if not mounts:
        raise CgroupMountError(
            f"{mountinfo}: no cgroup2 filesystem is mounted (cgroup v1 only?); the agent needs "
            "cgroup v2 at /sys/fs/cgroup or /sys/fs/cgroup/unified"
        )
    raise CgroupMountError(
        f"{mountinfo}: several cgroup2 mounts and none at {' or '.join(_PREFERRED)}: "
        f"{', '.join(map(str, mounts))}; pass the cgroup root explicitly"
    )


def controllers(root: Path) -> set[str]:
    """The controllers available in the v2 hierarchy at `root` (its cgroup.controllers)."""
    path = root / "cgroup.controllers"
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise CgroupMountError(f"{path}: missing: {root} is not a cgroup v2 directory") from e
    except OSError as e:
        raise CgroupMountError(f"{path}: cannot read: {e}") from e
    return set(text.split())
