"""What the eBPF source loads: a profile of program families, map sizes, peer CIDRs.

Profiles follow kpod-metrics: each adds families (and series per pod) to the one before, so
a node pays only for what it asks for. The cgroup lifecycle family is in every profile: it is
what lets short-lived containers be billed at all.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from otel_agent.errors import ConfigError

PROFILES: dict[str, tuple[str, ...]] = {
    "minimal": ("lifecycle", "cpu"),
    "standard": ("lifecycle", "cpu", "network", "faults"),
    "comprehensive": ("lifecycle", "cpu", "network", "faults", "syscalls"),
}

# Where the BPF C sources are: OTEL_AGENT_BPF_SOURCE_DIR, else the repository's bpf/ (a
# checkout or an editable install), else where the image puts them (Dockerfile).
IMAGE_SOURCE_DIR = Path("/usr/share/otel-agent/bpf")


def _default_source_dir() -> Path:
    env = os.environ.get("OTEL_AGENT_BPF_SOURCE_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2] / "bpf"
    return repo if (repo / "common.h").exists() else IMAGE_SOURCE_DIR


DEFAULT_SOURCE_DIR = _default_source_dir()


@dataclass(frozen=True, kw_only=True)
class BpfConfig:
    profile: str = "standard"
    cgroup_root: Path = Path("/sys/fs/cgroup/unified")
    pod_cidrs: tuple[str, ...] = ()
    cluster_cidrs: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    loopback_is_local: bool = True  # 127.0.0.0/8 and ::1 are pod-network unless listed
    map_max_entries: int = 10240  # every per-cgroup map (and the path / removal maps)
    task_max_entries: int = 65536  # per-task state (cpu's table of tasks, syscall entry times)
    cidr_max_entries: int = 1024
    capacity_warning_ratio: float = 0.9
    source_dir: Path = DEFAULT_SOURCE_DIR
    tracefs: Path = Path("/sys/kernel/tracing")
    debugfs: Path = Path("/sys/kernel/debug")
    mount_tracefs: bool = True  # mount tracefs/debugfs when missing and permitted
    loader_timeout_seconds: float = 120.0  # the child that compiles with BCC (loader.py)
    families: tuple[str, ...] = field(default=())  # override the profile (tests, benchmarks)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(f"bpf profile {self.profile!r}: expected one of {', '.join(PROFILES)}")
        if not self.loader_timeout_seconds > 0:
            raise ConfigError(f"loader_timeout_seconds must be positive, got {self.loader_timeout_seconds}")
        for n in ("map_max_entries", "task_max_entries", "cidr_max_entries"):
            if getattr(self, n) < 1:
                raise ConfigError(f"{n} must be a positive integer, got {getattr(self, n)}")
        unknown = set(self.families) - set(PROFILES["comprehensive"])
        if unknown:
            raise ConfigError(f"unknown bpf families {sorted(unknown)}")
        for c in (*self.pod_cidrs, *self.cluster_cidrs):
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError as e:
                raise ConfigError(f"{c!r} is not a CIDR such as 10.244.0.0/16") from e

    @staticmethod
    def setting_for(map_name: str) -> str:
        """The setting that sizes a map, for messages that say what to raise."""
        if map_name in ("tasks", "sys_threads"):
            return "bpf_task_entries (OTEL_AGENT_BPF_TASK_ENTRIES)"
        if map_name == "peer_classes":
            return "the CIDR lists"
        return "bpf_map_entries (OTEL_AGENT_BPF_MAP_ENTRIES)"

    def enabled_families(self) -> tuple[str, ...]:
        if self.families:
            return tuple(f for f in PROFILES["comprehensive"] if f in self.families or f == "lifecycle")
        return PROFILES[self.profile]
