"""The types the cost processor's halves agree on: the ledger answers queries with
`Allocation`s, and every report format (table, CSV, JSON, FOCUS, HTTP, HTML, OTLP) renders them.

Field names mirror OpenCost's allocation API so tools written for OpenCost read ours
(`to_opencost_json`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping


class Model(str, enum.Enum):
    USAGE = "usage"  # what was consumed
    REQUEST_OR_USAGE = "request-or-usage"  # max(request, usage), comparable to OpenCost
    SHOWBACK_RATIO = "showback-ratio"  # a share of the cluster
    CHARGEBACK = "chargeback"  # money at the configured rates


class SharePolicy(str, enum.Enum):
    NONE = "none"
    PROPORTIONAL = "proportional"
    EVEN = "even"


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time range [start, end), both timezone-aware UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"window end {self.end.isoformat()} is not after its start")


@dataclass(slots=True)
class Allocation:
    """Cost and usage of one aggregate (a namespace, a workload, a label value, __idle__,
    __overhead__ ...) over one window step."""

    name: str
    window: Window
    currency: str
    properties: Mapping[str, str] = field(default_factory=dict)
    cpu_core_hours: float = 0.0
    cpu_cost: float = 0.0
    ram_byte_hours: float = 0.0
    ram_cost: float = 0.0
    gpu_hours: float = 0.0
    gpu_cost: float = 0.0
    gpu_used_hours: float = 0.0  # GPU-hours the held GPUs were busy (DCGM), where it reports
    network_bytes: float = 0.0
    network_cost: float = 0.0
    pv_byte_hours: float = 0.0
    pv_cost: float = 0.0
    shared_cost: float = 0.0  # idle/overhead shared onto this allocation by policy

    @property
    def total_cost(self) -> float:
        return (self.cpu_cost + self.ram_cost + self.gpu_cost + self.network_cost
                + self.pv_cost + self.shared_cost)

    def to_opencost_json(self) -> dict[str, Any]:
        hours = (self.window.end - self.window.start).total_seconds() / 3600
        return {
            "name": self.name,
            "properties": dict(self.properties),
            "window": {"start": _rfc3339(self.window.start), "end": _rfc3339(self.window.end)},
            "start": _rfc3339(self.window.start),
            "end": _rfc3339(self.window.end),
            "cpuCoreHours": self.cpu_core_hours,
            "cpuCost": self.cpu_cost,
            "ramByteHours": self.ram_byte_hours,
            "ramCost": self.ram_cost,
            "gpuHours": self.gpu_hours,
            "gpuCost": self.gpu_cost,
            # OpenCost's GPUAllocation: average GPUs held and busy over the window
            "gpuAllocation": {"gpuRequestAverage": self.gpu_hours / hours if hours else 0.0,
                              "gpuUsageAverage": self.gpu_used_hours / hours if hours else 0.0},
            "networkCost": self.network_cost,
            "networkTransferBytes": self.network_bytes,
            "pvByteHours": self.pv_byte_hours,
            "pvCost": self.pv_cost,
            "sharedCost": self.shared_cost,
            "totalCost": self.total_cost,
            "currency": self.currency,
        }


IDLE = "__idle__"
OVERHEAD = "__overhead__"  # system + non-allocatable (capacity − allocatable)
UNALLOCATED = "__unallocated__"  # usage seen on the node with no pod attribution


def _rfc3339(t: datetime) -> str:
    from datetime import timezone

    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
