"""What the kernel and this process allow: capabilities, tracefs, headers, the v2 hierarchy.

Checked before BCC is even imported, so a node without BPF gets one clear sentence naming
what is missing (a capability, tracefs, headers) instead of a compiler or libbpf error. BCC
picks its tracefs directory when it is imported, so tracefs is mounted first.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import subprocess
from pathlib import Path

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39
CAP_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
             CAP_PERFMON: "CAP_PERFMON", CAP_BPF: "CAP_BPF"}


def effective_caps(status: Path = Path("/proc/self/status")) -> int:
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def has_cap(cap: int, caps: int | None = None) -> bool:
    return bool((effective_caps() if caps is None else caps) >> cap & 1)


def missing_tracing_caps(caps: int | None = None) -> list[str]:
    """Capabilities tracepoint programs need: CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN (pre-5.8)."""
    caps = effective_caps() if caps is None else caps
    if has_cap(CAP_SYS_ADMIN, caps):
        return []
    return [CAP_NAMES[c] for c in (CAP_BPF, CAP_PERFMON) if not has_cap(c, caps)]


def missing_network_caps(caps: int | None = None) -> list[str]:
    """cgroup_skb programs are network programs: loading and attaching needs CAP_NET_ADMIN."""
    caps = effective_caps() if caps is None else caps
    return [] if has_cap(CAP_NET_ADMIN, caps) else ["CAP_NET_ADMIN"]


def _is_mounted(path: Path, fstype: str, mounts: Path = Path("/proc/self/mounts")) -> bool:
    for line in mounts.read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[1] == str(path) and parts[2] == fstype:
            return True
    return False


def ensure_tracefs(tracefs: Path, debugfs: Path, *, mount: bool) -> str | None:
    """Make tracefs usable; None when it is, else why not (with the command to fix it)."""
    if (tracefs / "events").is_dir():
        return None
    if (debugfs / "tracing" / "events").is_dir():
        return None
    if not mount:
        return f"tracefs is not mounted: mount -t tracefs nodev {tracefs}"
    errors = []
    for fstype, where in (("debugfs", debugfs), ("tracefs", tracefs)):
        if _is_mounted(where, fstype):
            continue
        r = subprocess.run(["mount", "-t", fstype, "nodev", str(where)], capture_output=True, text=True)
        if r.returncode != 0:
            errors.append(f"mount -t {fstype} nodev {where}: {r.stderr.strip() or r.returncode}")
    if (tracefs / "events").is_dir():
        return None
    return ("tracefs is not mounted and mounting it failed (needs CAP_SYS_ADMIN, or mount it "
            f"on the host / as a hostPath): {'; '.join(errors) or 'no events directory'}")


def tracefs_dir(tracefs: Path, debugfs: Path) -> Path:
    return tracefs if (tracefs / "events").is_dir() else debugfs / "tracing"


def missing_tracepoints(tracefs: Path, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not (tracefs / "events" / n.replace(":", "/") / "format").is_file()]


def find_headers(release: str | None = None) -> str | None:
    """Where BCC will find kernel headers, or None. Our programs read no kernel structs, so any
    recent headers do (DESIGN rule 6); /sys/kernel/kheaders.tar.xz is BCC's own fallback."""
    release = release or platform.release()
    build = Path("/lib/modules") / release / "build"
    if (build / "include").is_dir():
        return str(build.resolve())
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return "/sys/kernel/kheaders.tar.xz"
    return None


def kernel_at_least(major: int, minor: int, release: str | None = None) -> bool:
    """Whether the running kernel is major.minor or later ("6.18.0-foo" -> (6, 18))."""
    m = re.match(r"(\d+)\.(\d+)", release or platform.release())
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (major, minor)


def v2_hierarchy_id(proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """The hierarchy id cgroup:* tracepoints give cgroup v2: the line with no controllers."""
    for line in proc_cgroup.read_text().splitlines():
        hid, controllers, _ = line.split(":", 2)
        if controllers == "":
            return int(hid)
    return 0


def cgroup_id(path: Path) -> int:
    """The cgroup id is the inode number of the v2 directory (DESIGN rule 1)."""
    return os.stat(path).st_ino


_LIBBPF = "libbpf.so.1"  # what libbcc_bpf itself links (Debian's libbpf1, a dependency of BCC)
_libbpf: ctypes.CDLL | None = None
_NO_CGROUP_LINKS = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, 524)  # 524: ENOTSUPP


def libbpf() -> ctypes.CDLL:
    """libbpf's bpf() wrappers: every call returns the result, or a negative errno."""
    global _libbpf
    if _libbpf is None:
        _libbpf = ctypes.CDLL(_LIBBPF, use_errno=True)
    return _libbpf


def attach_cgroup_prog(prog_fd: int, cgroup_fd: int, attach_type: int, flags: int) -> None:
    """BPF_PROG_ATTACH: the fallback where links are missing; it outlives the process, see
    link_cgroup_prog."""
    res = libbpf().bpf_prog_attach(prog_fd, cgroup_fd, attach_type, flags)
    if res < 0:
        raise OSError(-res, f"Failed to attach BPF function with attach_type {attach_type}: "
                      f"{os.strerror(-res)}")


def detach_cgroup_prog(prog_fd: int, cgroup_fd: int, attach_type: int) -> None:
    res = libbpf().bpf_prog_detach2(prog_fd, cgroup_fd, attach_type)
    if res < 0:
        raise OSError(-res, f"BPF_PROG_DETACH: {os.strerror(-res)}")


def link_cgroup_prog(prog_fd: int, cgroup_fd: int, attach_type: int) -> int | None:
    """Attach a cgroup program through a BPF link (5.7+) and return the link's fd.

    A link lives as long as its fd: when the agent dies, even by SIGKILL, the kernel detaches
    the program. BPF_PROG_ATTACH (what BCC's attach_func does) stays attached to the cgroup
    after the process is gone, so every crash or OOM kill would leave one more pair of
    cgroup_skb programs running on every packet of the node, and their maps pinned in kernel
    memory. Returns None where links are not supported (the caller falls back).
    """
    fd = libbpf().bpf_link_create(prog_fd, cgroup_fd, attach_type, None)
    if fd >= 0:
        return fd
    if -fd in _NO_CGROUP_LINKS:
        return None
    raise OSError(-fd, f"BPF_LINK_CREATE: {os.strerror(-fd)}")


def possible_cpus(path: Path = Path("/sys/devices/system/cpu/possible")) -> int:
    """Number of CPU ids the kernel may ever use ("0-3,8-11" -> 12): the size of per-CPU
    arrays indexed by bpf_get_smp_processor_id(), hot-plugged CPUs included."""
    top = 0
    for part in path.read_text().strip().split(","):
        top = max(top, int(part.split("-")[-1]))
    return top + 1
