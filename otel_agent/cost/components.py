"""The cost components, declared once: every report face derives its columns from this table.

An `Allocation` carries one money field per component and, for the metered ones, a quantity
field; its total is their sum. The OpenCost JSON names, the CSV and table columns, the HTML
table, the FOCUS rows (one per component) and the OTLP cost metrics are all read from here, so
a new component (GPU and persistent volumes are priced by other streams) is one row below plus
the ledger code that fills its fields: no face lists the components itself.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = float(2**30)


@dataclass(frozen=True, slots=True)
class Component:
    """One priced part of an allocation."""

    key: str  # our name for it: FOCUS x_CostComponent
    cost_field: str  # Allocation attribute with the money
    quantity_field: str | None  # Allocation attribute with the quantity; None: a share of a pool
    divisor: float  # quantity field -> `unit` (bytes -> GiB)
    unit: str  # FOCUS PricingUnit = ConsumedUnit
    what: str  # words for descriptions (FOCUS ChargeDescription)
    label: str  # column heading (HTML)
    short: str  # column heading in the terminal table
    opencost_cost: str  # OpenCost's allocation JSON field for the money
    opencost_quantity: str | None  # ... and for the quantity, in the quantity field's unit
    otlp_suffix: str  # the OTLP cost metric is otel_agent.cost.<suffix>
    csv_quantity: str | None  # CSV column with the quantity in `unit`
    always_shown: bool  # the terminal table shows it even when every row is zero


COMPONENTS: tuple[Component, ...] = (
    Component("cpu", "cpu_cost", "cpu_core_hours", 1.0, "Core-Hours", "CPU", "CPU", "CPU",
              "cpuCost", "cpuCoreHours", "cpu", "cpu_core_hours", True),
    Component("ram", "ram_cost", "ram_byte_hours", GIB, "GiB-Hours", "memory", "RAM", "RAM",
              "ramCost", "ramByteHours", "memory", "ram_gib_hours", True),
    Component("gpu", "gpu_cost", "gpu_hours", 1.0, "GPU-Hours", "GPU", "GPU", "GPU",
              "gpuCost", "gpuHours", "gpu", "gpu_hours", False),
    Component("network", "network_cost", "network_bytes", GIB, "GiB", "network egress", "Network",
              "NET", "networkCost", "networkTransferBytes", "network", "network_gib", True),
    Component("pv", "pv_cost", "pv_byte_hours", GIB, "GiB-Hours", "persistent volume storage",
              "PV", "PV", "pvCost", "pvByteHours", "storage", "pv_gib_hours", False),
    Component("shared", "shared_cost", None, 1.0, "Shares", "idle and overhead capacity shared",
              "Shared", "SHARED", "sharedCost", None, "shared", None, True),
)

COST_FIELDS: tuple[str, ...] = tuple(c.cost_field for c in COMPONENTS)
QUANTITY_FIELDS: tuple[str, ...] = tuple(c.quantity_field for c in COMPONENTS if c.quantity_field)
# Quantities shown beside a component and never priced: GPU-hours the held GPUs were busy
# (DCGM; the GPU component bills the GPU-hours held).
SIDE_QUANTITY_FIELDS: tuple[str, ...] = ("gpu_used_hours",)
# every additive field of an Allocation, in declaration order (quantity then cost, per component)
ADDITIVE_FIELDS: tuple[str, ...] = tuple(
    f for c in COMPONENTS for f in (c.quantity_field, c.cost_field) if f) + SIDE_QUANTITY_FIELDS


def total_of(obj: object) -> float:
    """The total cost of anything with the components' cost fields (Allocation, Totals)."""
    return sum(getattr(obj, f) for f in COST_FIELDS)


__all__ = ["Component", "COMPONENTS", "COST_FIELDS", "QUANTITY_FIELDS", "ADDITIVE_FIELDS",
           "SIDE_QUANTITY_FIELDS",
           "total_of", "GIB"]
