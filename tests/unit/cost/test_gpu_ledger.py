"""GPUs in the ledger, to the micro-unit: a GPU node's cost is its GPUs × gpu_hour on top of
CPU and memory; GPU-hours go whole to the containers that held them; the GPUs no pod held are
__idle__, the ones the node does not offer (capacity − allocatable) __overhead__; and
allocated + overhead + idle = the node's GPU cost, exactly. Built through the real ingest,
store, ledger and allocation code from OTLP shaped as the agent sends it.

Every expected figure is derived here from the scenario's parameters and the rate, rounded
half-even to micro-units, __idle__ taking the remainder (as the ledger does)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from otel_agent.cost.allocation import allocations, reconcile
from otel_agent.cost.ingest import decode
from otel_agent.cost.store import Store
from otel_agent.cost.types import IDLE, OVERHEAD, Model, Window
from otel_agent.gpu import gpu_equivalents, is_gpu_resource
from tests.unit.cost.builders import H, S, T0, Res, container_attrs, node_attrs, request
from tests.unit.cost.ledger_helpers import pricing

GPU_HOUR = Decimal("0.95")  # ledger_helpers.PRICING_YAML
ATTR = "otel_agent.gpu.resource"
STEP_S = 60
WINDOW = Window(datetime.fromtimestamp(T0 / 1e9, timezone.utc),
                datetime.fromtimestamp(T0 / 1e9, timezone.utc) + timedelta(hours=1))
HOLD_S = 300  # a level holds until its next point, at most this long (ledger.MAX_GAP_S)


def micros(gpu_hours: float) -> int:
    return int((Decimal(repr(gpu_hours)) * GPU_HOUR * 1_000_000).to_integral_value(ROUND_HALF_EVEN))


# (name, resource, capacity, allocatable, {namespace: (devices held, minutes exported from T0)})
SCENARIOS = [
    ("whole GPUs, one idle hour and a half", "nvidia.com/gpu", 4, 4,
     {"train": (1, 60), "infer": (2, 25)}),  # infer: last point at 24 min, held 5 more
    ("MIG slices of one A100", "nvidia.com/mig-1g.10gb", 7, 7, {"notebook": (3, 60)}),
    ("an unhealthy GPU is overhead", "amd.com/gpu", 8, 7, {"sim": (4, 60)}),
]


def held_hours(minutes: int) -> float:
    """How long the ledger holds a request exported every minute for `minutes` from T0: its
    last point is at minute `minutes` − 1 and holds HOLD_S past it."""
    if minutes >= 60:
        return 1.0
    return ((minutes - 1) * 60 + HOLD_S) / 3600


def _exports(resource, capacity, allocatable, pods):
    na = node_attrs("gpu-node")
    out = []
    for k in range(60):
        t = T0 + k * STEP_S * S
        res = [Res(na).updown("otel_agent.node.gpu.capacity", [(T0, t, capacity)], unit="{device}",
                              dp_attrs={ATTR: resource})
                      .updown("otel_agent.node.gpu.allocatable", [(T0, t, allocatable)],
                              unit="{device}", dp_attrs={ATTR: resource})]
        for ns, (n, minutes) in pods.items():
            if k * STEP_S < minutes * 60:
                res.append(Res(container_attrs(f"uid-{ns}", "main", node="gpu-node", namespace=ns))
                           .updown("otel_agent.container.gpu.request", [(T0, t, n)],
                                   unit="{device}", dp_attrs={ATTR: resource}))
        out.append(request(*res))
    return out


@pytest.mark.parametrize("name,resource,capacity,allocatable,pods", SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_gpu_node_hour(tmp_path, name, resource, capacity, allocatable, pods):
    store = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())
    for req in _exports(resource, capacity, allocatable, pods):
        b = decode(req, now_ns=T0 + 2 * H)
        assert b.rejected == 0, b.errors
        store.write(b)
    store.refresh()
    w = gpu_equivalents(resource)
    tenants = {ns: n * w * held_hours(minutes) for ns, (n, minutes) in pods.items()}
    overhead = (capacity - allocatable) * w
    idle = capacity * w - overhead - sum(tenants.values())
    node_micros = micros(capacity * w)
    want = {ns: micros(h) for ns, h in tenants.items()}
    if overhead:
        want[OVERHEAD] = micros(overhead)
    want[IDLE] = node_micros - sum(want.values())

    [got] = allocations(store, WINDOW, aggregate="namespace", model=Model.CHARGEBACK)
    by = {a.name: a for a in got}
    assert {n: round(a.gpu_cost * 1e6) for n, a in by.items()} == want
    assert {n: round(a.total_cost * 1e6) for n, a in by.items()} == want  # GPUs only here
    for ns, h in tenants.items():
        assert by[ns].gpu_hours == pytest.approx(h)
    assert by[IDLE].gpu_hours == pytest.approx(idle)
    [rec] = reconcile(store, WINDOW)
    assert rec.balanced and rec.node_micros == node_micros
    assert rec.allocated_micros + rec.overhead_micros + rec.idle_micros == node_micros
    # request-or-usage bills a GPU the same: a GPU is allocated whole, usage = request
    [ror] = allocations(store, WINDOW, aggregate="namespace", model=Model.REQUEST_OR_USAGE)
    assert {a.name: round(a.gpu_cost * 1e6) for a in ror} == want
    [usage] = allocations(store, WINDOW, aggregate="namespace", model=Model.USAGE)
    assert sum(a.gpu_hours for a in usage) == pytest.approx(capacity * w)
    store.close()


def test_gpu_points_must_name_a_gpu_resource():
    na = node_attrs("gpu-node")
    bad = [("gpu.intel.com/millicores", 1000), ("example.com/foo", 1), ("", 1)]
    for resource, v in bad:
        attrs = {ATTR: resource} if resource else {}
        b = decode(request(Res(na).updown("otel_agent.node.gpu.capacity", [(T0, T0, v)],
                                          unit="{device}", dp_attrs=attrs)), now_ns=T0 + H)
        assert b.rejected == 1 and "not a GPU resource" in b.error_message(), resource
    b = decode(request(Res(na).updown("otel_agent.node.gpu.capacity", [(T0, T0, 5000)],
                                      unit="{device}", dp_attrs={ATTR: "nvidia.com/gpu"})),
               now_ns=T0 + H)
    assert b.rejected == 1 and "GPU devices is more than any node has" in b.error_message()


@pytest.mark.parametrize("resource,gpus", [
    ("nvidia.com/gpu", 1.0), ("amd.com/gpu", 1.0), ("gpu.intel.com/i915", 1.0),
    ("gpu.intel.com/xe", 1.0), ("nvidia.com/mig-1g.10gb", 1 / 7), ("nvidia.com/mig-3g.40gb", 3 / 7),
    ("nvidia.com/mig-7g.80gb", 1.0), ("nvidia.com/mig-1g.10gb+me", 1 / 7),
])
def test_gpu_equivalents(resource, gpus):
    assert is_gpu_resource(resource)
    assert gpu_equivalents(resource) == pytest.approx(gpus)


@pytest.mark.parametrize("resource", ["gpu.intel.com/millicores", "gpu.intel.com/memory.max",
                                      "gpu.intel.com/tiles", "nvidia.com/mig-8g.80gb", "cpu",
                                      "nvidia.com/gpu.shared", "amd.com/gpu2"])
def test_not_gpus(resource):
    assert not is_gpu_resource(resource)
    with pytest.raises(ValueError):
        gpu_equivalents(resource)
