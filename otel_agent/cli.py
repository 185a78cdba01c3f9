"""`otel-agent`: run (the daemon), once (one cycle, printed), doctor, cost (the processor).

User errors (a bad setting, a missing file) print one line naming what was wrong and exit 2.
Tracebacks are for our bugs only.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from otel_agent import __version__
from otel_agent.config import BPF_PROFILES, METADATA_KINDS, PROTOCOLS, AgentConfig, load
from otel_agent.errors import ConfigError, OtelAgentError, SourceError

log = logging.getLogger("otel_agent")


def _add_agent_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML file of settings (OTEL_AGENT_CONFIG)")
    p.add_argument("--endpoint", help="OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT)")
    p.add_argument("--protocol", choices=PROTOCOLS, help="OTLP protocol (OTEL_EXPORTER_OTLP_PROTOCOL)")
    p.add_argument("--interval-seconds", dest="interval_seconds",
                   help="collection and export period (OTEL_METRIC_EXPORT_INTERVAL, in ms)")
    p.add_argument("--node-name", dest="node_name", help="this node's name (NODE_NAME)")
    p.add_argument("--metadata", choices=METADATA_KINDS, help="pod metadata source (OTEL_AGENT_METADATA)")
    p.add_argument("--static-metadata", dest="static_metadata", help="YAML file for --metadata static")
    p.add_argument("--pod-labels", dest="pod_labels", help="pod labels to export, comma separated")
    p.add_argument("--cgroup-root", dest="cgroup_root", help="cgroup v2 mount (default: from mountinfo)")
    p.add_argument("--kubepods", help="kubelet's pod cgroups, relative to the cgroup root")
    p.add_argument("--bpf-profile", dest="bpf_profile", choices=BPF_PROFILES,
                   help="eBPF programs to attach (OTEL_AGENT_BPF_PROFILE)")
    p.add_argument("--pod-cidrs", dest="pod_cidrs", help="pod network CIDRs, comma separated")
    p.add_argument("--health-listen", dest="health_listen", help="HOST:PORT of /healthz, or off")
    p.add_argument("--log-level", dest="log_level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.add_argument("--cluster-objects", dest="cluster_objects", choices=("off", "on", "auto"),
                   help="also report the cluster's persistent volume claims: on (run ONE such "
                        "agent) or auto (the agent on the first Ready node by name) "
                        "(OTEL_AGENT_CLUSTER_OBJECTS)")


_FLAG_KEYS = ("endpoint", "protocol", "interval_seconds", "node_name", "metadata", "static_metadata",
              "pod_labels", "cgroup_root", "kubepods", "bpf_profile", "pod_cidrs", "health_listen",
              "log_level", "cluster_objects")


def _config(args: argparse.Namespace) -> AgentConfig:
    return load(file=args.config, flags={k: getattr(args, k, None) for k in _FLAG_KEYS})


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"otel-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="collect and push OTLP every interval until SIGTERM")
    _add_agent_flags(run)
    once = sub.add_parser("once", help="one collection cycle, printed")
    _add_agent_flags(once)
    once.add_argument("--format", choices=("table", "json"), default="table")
    once.add_argument("--window-seconds", type=float, default=1.0,
                      help="with eBPF: how long to count before reading (default 1)")
    doctor = sub.add_parser("doctor", help="check what this node offers and what to fix")
    _add_agent_flags(doctor)
    sub.add_parser("cost", help="the cost processor: cost serve | cost report (see cost --help)",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "cost":
        return _cost(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = _config(args)
        _setup_logging(cfg.log_level)
        if args.command == "run":
            return cmd_run(cfg)
        if args.command == "once":
            return cmd_once(cfg, args.format, args.window_seconds)
        if args.command == "doctor":
            from otel_agent.doctor import run_doctor

            return run_doctor(cfg)
    except ConfigError as e:
        print(f"otel-agent: error: {e}", file=sys.stderr)
        return 2
    except OtelAgentError as e:
        print(f"otel-agent: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


def _cost(argv: list[str]) -> int:
    from otel_agent.cost.cli import main as cost_main

    return cost_main(argv)


# --- wiring -------------------------------------------------------------------------------
def _cgroup_root(cfg: AgentConfig) -> Path:
    from otel_agent.cgroups.mount import find_cgroup2_mount

    if cfg.cgroup_root is not None:
        if not (cfg.cgroup_root / "cgroup.controllers").exists():
            raise ConfigError(f"cgroup root {cfg.cgroup_root} is not a cgroup v2 mount "
                              "(no cgroup.controllers there)")
        return cfg.cgroup_root
    try:
        return find_cgroup2_mount()
    except OtelAgentError as e:
        raise ConfigError(f"{e}; set OTEL_AGENT_CGROUP_ROOT to the cgroup v2 mount") from e


def _metadata(cfg: AgentConfig):
    from otel_agent.k8s.select import select_source

    return select_source(kind=cfg.metadata, node_name=cfg.node_name,
                         static_path=cfg.static_metadata, pod_labels=cfg.pod_labels)


def _bpf(cfg: AgentConfig, cgroup_root: Path) -> Any | None:
    if cfg.bpf_profile == "off":
        log.info("eBPF off (OTEL_AGENT_BPF_PROFILE=off): cgroup files only")
        return None
    try:
        from otel_agent.ebpf import BpfCollector, BpfConfig

        col = BpfCollector(BpfConfig(profile=cfg.bpf_profile, cgroup_root=cgroup_root,
                                     pod_cidrs=cfg.pod_cidrs, cluster_cidrs=cfg.cluster_cidrs,
                                     map_max_entries=cfg.bpf_map_entries,
                                     task_max_entries=cfg.bpf_task_entries))
        status = col.start()
        attached = [f for f, st in status.items() if st.attached]
        for fam, st in status.items():
            if not st.attached:
                log.warning("eBPF %s not attached: %s", fam, st.detail)
        log.info("eBPF profile %s: attached %s", cfg.bpf_profile, ", ".join(attached) or "nothing")
        return col
    except SourceError as e:
        log.warning("eBPF unavailable, running on cgroup files alone: %s", e)
    except ImportError as e:
        log.warning("eBPF unavailable (%s), running on cgroup files alone", e)
    return None


def build_agent(cfg: AgentConfig, *, with_exporter: bool = True):
    from otel_agent.agent import Agent
    from otel_agent.otlp.exporter import make_exporter

    root = _cgroup_root(cfg)
    # Before anything is started: a bad OTEL_EXPORTER_OTLP_* value is a one-line error.
    exporter = make_exporter(cfg) if with_exporter else None
    metadata = _metadata(cfg)
    metadata.start()
    bpf = _bpf(cfg, root)
    cluster = None
    if cfg.cluster_objects != "off":
        from otel_agent.k8s.apiconfig import load_api_client
        from otel_agent.k8s.volumes import ClusterObjects

        if cfg.metadata == "static" and cfg.static_metadata is not None:
            from otel_agent.k8s.static import StaticClaims

            cluster = StaticClaims(cfg.static_metadata)  # the file's claims: (no API server)
        else:
            cluster = ClusterObjects(load_api_client(), node_name=cfg.node_name,
                                     auto=cfg.cluster_objects == "auto")
        cluster.start()
        log.info("persistent volume claims: cluster_objects %s", cfg.cluster_objects)
    return Agent(cfg, cgroup_root=root, metadata=metadata, exporter=exporter, bpf=bpf,
                 cluster=cluster)


def _shutdown(agent) -> None:
    agent.close()
    if agent.bpf is not None:
        agent.bpf.stop()
    agent.metadata.stop()


class _Loop:
    """What the health endpoint reads before the agent exists (it binds first, so a busy port
    fails in milliseconds, before eBPF is compiled)."""

    agent: Any = None

    def heartbeat(self) -> float:
        return self.agent.heartbeat if self.agent is not None else time.monotonic()

    def cycles(self) -> int:
        return self.agent.cycles if self.agent is not None else 0


def _health(cfg: AgentConfig, loop: _Loop):
    if not cfg.health_listen:
        return None
    from otel_agent.health import HealthServer

    try:
        return HealthServer(cfg.health_listen, heartbeat=loop.heartbeat, cycles=loop.cycles,
                            stale_after_seconds=3 * cfg.interval_seconds
                            + (cfg.export_timeout_seconds or 10.0))
    except (OSError, ValueError, OverflowError) as e:  # busy port, unknown host, bad address
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"health_listen {cfg.health_listen!r} (OTEL_AGENT_HEALTH_LISTEN, "
                          f"--health-listen): cannot listen there: {why}; choose a free "
                          "HOST:PORT, or off") from e


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_bytes: int = 8 << 20, trim_bytes: int = 32 << 20) -> bool:
    """Let glibc keep the memory of a cycle's large buffers for the next cycle.

    Each cycle allocates and frees the same few large blocks (the request's bytes, gRPC's
    copy of them: ~0.7 MB each at 100 pods, up to 3 MiB). glibc gives such memory back to the
    kernel (munmap, or a trim of the heap's top past 2x its threshold), and the next cycle
    takes it again page by page: ~900 minor faults a cycle were measured in-process. Blocks
    under `mmap_bytes` come from the heap, and its top is trimmed only past `trim_bytes`:
    memory already used stays the agent's for the next cycle. Not glibc (musl): no change."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_bytes) and mallopt(_M_TRIM_THRESHOLD, trim_bytes))


def cmd_run(cfg: AgentConfig) -> int:
    keep_freed_memory()
    loop = _Loop()
    health = _health(cfg, loop)
    try:
        agent = build_agent(cfg)
    except BaseException:
        if health is not None:
            health.stop()
        raise
    loop.agent = agent
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if health is not None:
        log.info("health endpoint on port %d: /healthz, /readyz", health.port)
    log.info("otel-agent %s: every %.3g s, cgroups under %s, metadata from %s, eBPF %s",
             __version__, cfg.interval_seconds, agent.cgroup_root, agent.metadata.name,
             cfg.bpf_profile if agent.bpf is not None else "off")
    try:
        agent.run(stop)
    finally:
        if health is not None:
            health.stop()
        _shutdown(agent)
    return 0


def cmd_once(cfg: AgentConfig, fmt: str, window_seconds: float) -> int:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    from otel_agent.otlp.flatten import flatten_pb
    from otel_agent.render import format_json, format_table, usage_rows

    agent = build_agent(cfg, with_exporter=False)
    try:
        if agent.bpf is not None:
            time.sleep(window_seconds)
        cycle = agent.collect()
    finally:
        _shutdown(agent)
    points = list(flatten_pb(ExportMetricsServiceRequest.FromString(cycle.data.request())))
    if fmt == "json":
        print(format_json(points))
    else:
        print(format_table(usage_rows(points)))
        print(f"\n{cycle.points} data points from {len(cycle.refs)} cgroups "
              f"in {cycle.duration_seconds * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
