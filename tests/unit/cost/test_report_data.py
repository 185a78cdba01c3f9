"""A hand-built allocation set shared by the report tests, with its expected figures computed
here from the raw table below (rates × quantities), never from `Allocation.total_cost`.

Three hourly steps on one 4-core / 16 GiB node; three tenants, overhead and idle. Per step the
node costs 4 cores × 0.04 + 16 GiB × 0.005 = 0.24 (network is billed on top, per GiB sent).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from otel_agent.cost.types import IDLE, OVERHEAD, Allocation, Window

CPU_RATE, RAM_RATE, NET_RATE = 0.04, 0.005, 0.12
GIB = 2**30
T0 = datetime(2026, 11, 24, 0, tzinfo=timezone.utc)
STEPS = [Window(T0 + timedelta(hours=i), T0 + timedelta(hours=i + 1)) for i in range(3)]
WINDOW = Window(STEPS[0].start, STEPS[-1].end)
NODE_COST_PER_STEP = 4 * CPU_RATE + 16 * RAM_RATE

# name -> per step: (core-hours, GiB-hours, network GiB)
RAW: dict[str, list[tuple[float, float, float]]] = {
    "shop":   [(1.5, 4.0, 2.0), (2.0, 4.0, 3.0), (1.0, 4.0, 1.0)],
    "search": [(1.0, 6.0, 0.0), (0.5, 6.0, 0.0), (1.0, 6.0, 0.5)],
    "batch":  [(0.0, 0.0, 0.0), (1.0, 2.0, 0.0), (0.25, 1.0, 0.0)],
    OVERHEAD: [(0.5, 2.0, 0.0), (0.5, 2.0, 0.0), (0.5, 2.0, 0.0)],
}


def _idle() -> list[tuple[float, float, float]]:
    out = []
    for i in range(3):
        cpu = 4 - sum(RAW[n][i][0] for n in RAW)
        ram = 16 - sum(RAW[n][i][1] for n in RAW)
        out.append((cpu, ram, 0.0))
    return out


RAW[IDLE] = _idle()


def expected_cost(name: str, step: int | None = None) -> float:
    rows = RAW[name] if step is None else [RAW[name][step]]
    return sum(c * CPU_RATE + r * RAM_RATE + n * NET_RATE for c, r, n in rows)


def node_total() -> float:
    """What the node cost, computed from capacity rather than from the parts."""
    net = sum(n for rows in RAW.values() for _, _, n in rows)
    return 3 * NODE_COST_PER_STEP + net * NET_RATE


def sets(currency: str = "USD") -> list[list[Allocation]]:
    out = []
    for i, w in enumerate(STEPS):
        s = []
        for name, rows in RAW.items():
            c, r, n = rows[i]
            if not (c or r or n):
                continue  # batch did not run in step 0: no allocation, as a ledger would return
            s.append(Allocation(
                name=name, window=w, currency=currency,
                properties={"cluster": "demo", **({"namespace": name} if not name.startswith("__") else {})},
                cpu_core_hours=c, cpu_cost=c * CPU_RATE,
                ram_byte_hours=r * GIB, ram_cost=r * RAM_RATE,
                network_bytes=n * GIB, network_cost=n * NET_RATE))
        out.append(s)
    return out


def test_fixture_is_consistent():
    # The fixture itself: every step's parts use exactly the node's capacity.
    for i in range(3):
        assert abs(sum(RAW[n][i][0] for n in RAW) - 4) < 1e-12
        assert abs(sum(RAW[n][i][1] for n in RAW) - 16) < 1e-12
    assert all(v >= 0 for rows in RAW.values() for row in rows for v in row)
