"""`otel-agent doctor`: what this node offers the agent, and what to do about what is missing.

Each check prints OK, WARN (the agent runs, with less) or FAIL (the agent cannot do that part),
with the remedy. Exit code 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from otel_agent.config import AgentConfig


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK | WARN | FAIL
    detail: str


_WANTED_CONTROLLERS = {
    "cpu": "cpu.stat throttling (nr_throttled, throttled_usec)",
    "memory": "memory.* (usage, working set, rss, page cache, peak, OOM kills)",
    "io": "io.stat (disk bytes and operations)",
    "pids": "pids.current",
}


def checks(cfg: AgentConfig, *, mountinfo: Path = Path("/proc/self/mountinfo"),
           tracefs: Path = Path("/sys/kernel/tracing")) -> list[Check]:
    out: list[Check] = []
    rel = platform.release()
    major, minor = (int(x) for x in (rel.split(".")[:2]))
    out.append(Check("kernel", "OK" if (major, minor) >= (5, 8) else "WARN",
                     f"{rel}" + ("" if (major, minor) >= (5, 8) else
                                 ": eBPF programs need 5.8+; cgroup files still work")))

    from otel_agent.cgroups.mount import controllers, find_cgroup2_mount

    root: Path | None = cfg.cgroup_root
    try:
        root = root or find_cgroup2_mount(mountinfo)
        mode = "hybrid" if str(root).rstrip("/").endswith("unified") else "unified"
        out.append(Check("cgroup v2 mount", "OK", f"{root} ({mode})"))
    except Exception as e:
        out.append(Check("cgroup v2 mount", "FAIL",
                         f"{e}: mount cgroup2 or set OTEL_AGENT_CGROUP_ROOT"))
        root = None
    if root is not None:
        have = controllers(root)
        for ctrl, what in _WANTED_CONTROLLERS.items():
            if ctrl in have:
                out.append(Check(f"controller {ctrl}", "OK", "in cgroup v2"))
            else:
                out.append(Check(f"controller {ctrl}", "WARN",
                                 f"not in cgroup v2 (bound to v1?): {what} absent; "
                                 "boot with systemd.unified_cgroup_hierarchy=1 for them"))
        try:
            from otel_agent.cgroups.discovery import discover

            d = discover(root, kubepods=cfg.kubepods)
            pods = sum(1 for r in d.refs if r.scope.value == "pod")
            ctrs = sum(1 for r in d.refs if r.scope.value == "container")
            kp = any(r.scope.value == "kubepods" for r in d.refs)
            out.append(Check("kubelet cgroups", "OK" if kp else "WARN",
                             f"{pods} pods, {ctrs} containers" if kp else
                             "no kubepods.slice or kubepods under the cgroup root: set "
                             "OTEL_AGENT_KUBEPODS if kubelet runs with --cgroup-root"))
            other = {k: v for k, v in d.skipped.items() if k != "no_kubepods"}
            if other:
                out.append(Check("skipped cgroups", "WARN",
                                 ", ".join(f"{k}: {v}" for k, v in other.items())
                                 + " (unknown layouts are counted, never guessed)"))
        except Exception as e:
            out.append(Check("kubelet cgroups", "FAIL", str(e)))

    out.append(Check("tracefs", "OK" if (tracefs / "events").is_dir() else "WARN",
                     f"mounted at {tracefs}" if (tracefs / "events").is_dir() else
                     f"not mounted at {tracefs}: the agent mounts it when allowed "
                     "(CAP_SYS_ADMIN), or mount the host's /sys/kernel/tracing into the pod"))

    if cfg.bpf_profile == "off":
        out.append(Check("eBPF", "WARN", "off (OTEL_AGENT_BPF_PROFILE=off)"))
    else:
        out.extend(_bpf_checks(cfg, root))

    out.append(_metadata_check(cfg))
    out.append(_endpoint_check(cfg))
    return out


def _bpf_checks(cfg: AgentConfig, root: Path | None) -> list[Check]:
    try:
        from otel_agent.ebpf import BpfConfig, probe
    except ImportError as e:
        return [Check("eBPF", "FAIL", f"cannot load the eBPF layer: {e}; install python3-bpfcc")]
    try:
        results = probe(BpfConfig(profile=cfg.bpf_profile, cgroup_root=root or Path("/sys/fs/cgroup"),
                                  pod_cidrs=cfg.pod_cidrs, cluster_cidrs=cfg.cluster_cidrs,
                                  map_max_entries=cfg.bpf_map_entries,
                                  task_max_entries=cfg.bpf_task_entries))
    except Exception as e:
        return [Check("eBPF", "FAIL", str(e))]
    out = []
    for c in results:
        name = getattr(c, "name", "")
        for prefix in ("eBPF ", "bpf "):
            name = name.removeprefix(prefix)
        ok = getattr(c, "ok", False)
        status = getattr(c, "status", None) or ("OK" if ok else "FAIL")
        out.append(Check(f"eBPF {name}".strip(), status, getattr(c, "detail", "")))
    return out


def _metadata_check(cfg: AgentConfig) -> Check:
    try:
        from otel_agent.k8s.select import select_source

        src = select_source(kind=cfg.metadata, node_name=cfg.node_name,
                            static_path=cfg.static_metadata, pod_labels=cfg.pod_labels)
    except Exception as e:
        return Check("pod metadata", "FAIL", str(e))
    src.start()
    try:
        deadline = time.monotonic() + 3.0
        st = src.status()
        while not st.ok and time.monotonic() < deadline:
            time.sleep(0.2)
            st = src.status()
    finally:
        src.stop()
    status = "OK" if st.ok else ("WARN" if src.name == "cgroup" else "FAIL")
    return Check(f"pod metadata ({src.name})", status, st.detail)


def _endpoint_check(cfg: AgentConfig) -> Check:
    endpoint = cfg.endpoint or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or (
        "http://localhost:4318" if cfg.protocol == "http/protobuf" else "http://localhost:4317")
    u = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    host = u.hostname or "localhost"
    port = u.port or (4318 if cfg.protocol == "http/protobuf" else 4317)
    try:
        with socket.create_connection((host, port), timeout=2.0):
            pass
        return Check("OTLP endpoint", "OK", f"{endpoint} ({cfg.protocol}) accepts connections")
    except OSError as e:
        return Check("OTLP endpoint", "FAIL",
                     f"{endpoint} ({cfg.protocol}): {e.strerror or e}; set "
                     "OTEL_EXPORTER_OTLP_ENDPOINT to your Collector (e.g. http://otel-gateway:4317)")


def run_doctor(cfg: AgentConfig) -> int:
    results = checks(cfg)
    width = max(len(c.name) for c in results)
    for c in results:
        print(f"{c.status:<4}  {c.name.ljust(width)}  {c.detail}")
    return 1 if any(c.status == "FAIL" for c in results) else 0
