"""The usage table people read: per namespace, pod and container, from OTLP rows.

Pure: it takes flattened points (otlp/flatten.py) and returns text, so `once`, the demo and
tests render exactly what went over the wire.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from otel_agent.metrics import metric
from otel_agent.model import Scope
from otel_agent.otlp.flatten import Point


@dataclass
class Usage:
    namespace: str
    pod: str
    container: str  # "" for the pod's own cgroup (it includes dead containers)
    cpu_seconds: float = 0.0
    memory_bytes: float | None = None
    net_tx_bytes: float = 0.0
    net_rx_bytes: float = 0.0
    net_seen: bool = False
    run_queue_delay_seconds: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


def _pod_and_container(key: str) -> frozenset[str]:
    names = metric(key).names
    return frozenset(names[s] for s in (Scope.POD, Scope.CONTAINER))


_CPU = _pod_and_container("cpu.time")
_MEM = _pod_and_container("memory.working_set")
_NET = _pod_and_container("bpf.network.io")
_RQ = _pod_and_container("bpf.cpu.run_queue.delay")


def usage_rows(points: Iterable[Point]) -> list[Usage]:
    """Latest value per series; pods and containers only (node rows are not tenants)."""
    latest: dict[tuple, Point] = {}
    for p in points:
        if "k8s.pod.uid" not in p.resource:
            continue
        key = (tuple(sorted(p.resource.items())), p.name, tuple(sorted(p.attributes.items())))
        old = latest.get(key)
        if old is None or p.time_unix_nano >= old.time_unix_nano:
            latest[key] = p
    rows: dict[tuple[str, str, str], Usage] = {}
    for p in latest.values():
        r = p.resource
        ns = r.get("k8s.namespace.name", "?")
        pod = r.get("k8s.pod.name", r["k8s.pod.uid"][:13])
        ctr = ""
        if "container.id" in r:
            ctr = r.get("k8s.container.name", r["container.id"][:12])
        u = rows.setdefault((ns, pod, ctr), Usage(ns, pod, ctr))
        if p.name in _CPU:
            u.cpu_seconds += p.value
        elif p.name in _MEM:
            u.memory_bytes = (u.memory_bytes or 0.0) + p.value
        elif p.name in _NET:
            u.net_seen = True
            if p.attributes.get("network.io.direction") == "transmit":
                u.net_tx_bytes += p.value
            else:
                u.net_rx_bytes += p.value
        elif p.name in _RQ and p.count:
            u.run_queue_delay_seconds = p.value / p.count
    return sorted(rows.values(), key=lambda u: (u.namespace, u.pod, u.container))


def _bytes(v: float | None) -> str:
    if v is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} GiB"


def format_table(rows: list[Usage]) -> str:
    header = ("NAMESPACE", "POD", "CONTAINER", "CPU s", "MEM (wset)", "NET TX", "NET RX",
              "RUNQ avg")
    lines = [header]
    by_ns: dict[str, float] = defaultdict(float)
    for u in rows:
        if not u.container:
            by_ns[u.namespace] += u.cpu_seconds
        lines.append((
            u.namespace, u.pod, u.container or "(pod)", f"{u.cpu_seconds:.3f}",
            _bytes(u.memory_bytes),
            _bytes(u.net_tx_bytes) if u.net_seen else "-",
            _bytes(u.net_rx_bytes) if u.net_seen else "-",
            f"{u.run_queue_delay_seconds * 1e6:.0f} µs" if u.run_queue_delay_seconds is not None else "-",
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    if by_ns:
        out.append("")
        out.append("CPU seconds by namespace: " + ", ".join(
            f"{ns} {s:.3f}" for ns, s in sorted(by_ns.items())))
    return "\n".join(out)


def format_json(points: Iterable[Point]) -> str:
    return json.dumps([
        {"resource": dict(p.resource), "name": p.name, "unit": p.unit, "kind": p.kind,
         "attributes": dict(p.attributes), "value": p.value,
         **({"count": p.count, "bucket_counts": list(p.bucket_counts),
             "explicit_bounds": list(p.explicit_bounds)} if p.kind == "histogram" else {})}
        for p in points
    ], indent=1)
