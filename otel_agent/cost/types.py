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

from otel_agent.cost.components import COMPONENTS, total_of


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
    __overhead__ ...) over one window step. The cost and quantity fields are those of
    `components.COMPONENTS`; `properties`, `labels` and `annotations` are what every member of
    the aggregate agrees on (OpenCost's AllocationProperties after aggregation)."""

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
    network_bytes: float = 0.0
    network_cost: float = 0.0
    pv_byte_hours: float = 0.0
    pv_cost: float = 0.0
    shared_cost: float = 0.0  # idle/overhead shared onto this allocation by policy
    gpu_used_hours: float = 0.0  # GPU-hours the held GPUs were busy (DCGM), where it reports
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def total_cost(self) -> float:
        return total_of(self)

    def flat_properties(self) -> dict[str, str]:
        """Properties with each label as `label:<key>` (tags for flat formats: FOCUS, OTLP)."""
        out = dict(self.properties)
        out.update({f"label:{k}": v for k, v in self.labels.items()})
        return out

    def to_opencost_json(self) -> dict[str, Any]:
        """OpenCost's AllocationJSON fields that the ledger can fill. Averages are over the
        step: OpenCost's `minutes` is how long the allocation ran; ours is the step's length."""
        hours = (self.window.end - self.window.start).total_seconds() / 3600.0
        props: dict[str, Any] = dict(self.properties)
        if self.labels:
            props["labels"] = dict(self.labels)
        if self.annotations:
            props["annotations"] = dict(self.annotations)
        out: dict[str, Any] = {
            "name": self.name,
            "properties": props,
            "window": {"start": _rfc3339(self.window.start), "end": _rfc3339(self.window.end)},
            "start": _rfc3339(self.window.start),
            "end": _rfc3339(self.window.end),
            "minutes": hours * 60.0,
            "cpuCores": self.cpu_core_hours / hours if hours else 0.0,
            "ramBytes": self.ram_byte_hours / hours if hours else 0.0,
            "gpuCount": self.gpu_hours / hours if hours else 0.0,
            "pvBytes": self.pv_byte_hours / hours if hours else 0.0,
            "networkReceiveBytes": 0.0,
            # OpenCost's GPUAllocation: average GPUs held and busy (DCGM) over the step
            "gpuAllocation": {"gpuRequestAverage": self.gpu_hours / hours if hours else 0.0,
                              "gpuUsageAverage": self.gpu_used_hours / hours if hours else 0.0},
        }
        for c in COMPONENTS:
            if c.opencost_quantity:
                out[c.opencost_quantity] = getattr(self, c.quantity_field)
            out[c.opencost_cost] = getattr(self, c.cost_field)
        for adj in ("cpuCostAdjustment", "ramCostAdjustment", "gpuCostAdjustment",
                    "networkCostAdjustment", "pvCostAdjustment", "loadBalancerCost",
                    "loadBalancerCostAdjustment", "externalCost"):
            out[adj] = 0.0  # we price every part ourselves: nothing to adjust, no load balancers
        out["totalCost"] = self.total_cost
        out["currency"] = self.currency
        return out


IDLE = "__idle__"
OVERHEAD = "__overhead__"  # system + non-allocatable (capacity − allocatable)
UNALLOCATED = "__unallocated__"  # usage seen on the node with no pod attribution


def _rfc3339(t: datetime) -> str:
    from datetime import timezone

    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
