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


# --- utilisation beside allocation: DCGM exporter metrics through the same Collector --------

def _dcgm(name: str, t: int, value: float, *, pod: str | None, uuid: str, profile: str = "",
          old_labels: bool = False) -> Res:
    """A DCGM exporter series as the Collector's Prometheus receiver hands it on: a gauge
    named as in dcgm-exporter's counters CSV, the exporter's labels as point attributes, the
    node on the resource (k8sattributes / relabelling)."""
    labels: dict[str, object] = {"gpu": "0", "UUID": uuid, "modelName": "NVIDIA A100-SXM4-80GB",
                                 "Hostname": "dcgm-exporter-x2k4p"}
    if pod is not None:
        keys = ("pod_namespace", "pod_name", "container_name") if old_labels else \
            ("namespace", "pod", "container")
        labels.update(dict(zip(keys, ("train", pod, "main"))))
    if profile:
        labels["GPU_I_PROFILE"] = profile
    r = Res({"k8s.node.name": "gpu-node", "service.name": "dcgm-exporter"})
    metric = r.gauge(name, [(t, value)]).metrics[-1]
    from tests.unit.cost.builders import kv
    metric.gauge.data_points[0].attributes.extend(kv(labels))
    return r


def test_dcgm_utilisation_beside_allocation(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())
    reqs = _exports("nvidia.com/gpu", 4, 4, {"train": (2, 60)})
    for k, req in enumerate(reqs):
        t = T0 + k * STEP_S * S
        more = [
            _dcgm("DCGM_FI_DEV_GPU_UTIL", t, 50, pod="pod-uid-train", uuid="GPU-a"),
            _dcgm("DCGM_FI_DEV_GPU_UTIL", t, 25, pod="pod-uid-train", uuid="GPU-b", old_labels=True),
            _dcgm("DCGM_FI_DEV_GPU_UTIL", t, 90, pod=None, uuid="GPU-c"),  # no pod: ignored
        ]
        for r in more:
            req.resource_metrics.extend(request(r).resource_metrics)
        b = decode(req, now_ns=T0 + 2 * H)
        assert b.rejected == 0, b.errors
        assert b.ignored == 1
        store.write(b)
    store.refresh()
    [got] = allocations(store, WINDOW, aggregate="namespace", model=Model.CHARGEBACK)
    by = {a.name: a for a in got}
    assert by["train"].gpu_hours == pytest.approx(2.0)
    assert by["train"].gpu_used_hours == pytest.approx(0.75)  # 50% + 25% of two GPUs for 1 h
    assert by["train"].gpu_cost == pytest.approx(2 * 0.95)  # held, not busy, is what is billed
    j = by["train"].to_opencost_json()["gpuAllocation"]
    assert j == {"gpuRequestAverage": pytest.approx(2.0), "gpuUsageAverage": pytest.approx(0.75)}
    [rec] = reconcile(store, WINDOW)
    assert rec.balanced and rec.node_micros == micros(4.0)
    from otel_agent.cost.report import render_table
    table = render_table([got])
    assert "GPU busy" in table and "38%" in table  # 0.75 of 2 GPU-hours
    # engine activity, where it arrives too, is preferred; a MIG instance counts its share
    for k in range(60):
        t = T0 + k * STEP_S * S
        req = request(_dcgm("DCGM_FI_PROF_GR_ENGINE_ACTIVE", t, 0.4, pod="pod-uid-train", uuid="GPU-a"),
                      _dcgm("DCGM_FI_PROF_GR_ENGINE_ACTIVE", t, 0.7, pod="pod-uid-train", uuid="GPU-b",
                            profile="1g.10gb"))
        b = decode(req, now_ns=T0 + 2 * H)
        assert b.rejected == 0, b.errors
        store.write(b)
    store.refresh()
    [got] = allocations(store, WINDOW, aggregate="namespace", model=Model.CHARGEBACK)
    assert {a.name: a for a in got}["train"].gpu_used_hours == pytest.approx(0.4 + 0.7 / 7)
    store.close()


@pytest.mark.parametrize("value,labels,reason", [
    (150.0, {"namespace": "train", "pod": "p"}, "not between 0 and 100"),
    (-1.0, {"namespace": "train", "pod": "p"}, "not between 0 and 100"),
    (float("nan"), {"namespace": "train", "pod": "p"}, "not between 0 and 100"),
    (50.0, {"namespace": "Not_A_Label", "pod": "p"}, "namespace"),
    (50.0, {"namespace": "train", "pod": "p", "UUID": "x" * 65}, "UUID"),
])
def test_dcgm_points_validated(value, labels, reason):
    r = Res({"k8s.node.name": "gpu-node"})
    metric = r.gauge("DCGM_FI_DEV_GPU_UTIL", [(T0, value)]).metrics[-1]
    from tests.unit.cost.builders import kv
    metric.gauge.data_points[0].attributes.extend(kv(labels))
    b = decode(request(r), now_ns=T0 + H)
    assert b.rejected == 1 and reason in b.error_message(), b.error_message()


# --- the node-cost split the invoice import reuses (pricing.split_node_cost) -----------------

@pytest.mark.parametrize("total,lists,want", [
    # a GPU node: 8 cores, 64 GiB, 1 GPU at the test rates for an hour, invoiced 1.00:
    # 1e6 × w / Σw = 171559.29, 183960.45, 644480.26; the one micro-unit left goes to memory
    (1_000_000, {"cpu": 252888, "memory": 271168, "gpu": 950000},
     {"cpu": 171559, "memory": 183961, "gpu": 644480}),
    (10, {"cpu": 1, "memory": 1, "gpu": 1}, {"cpu": 4, "memory": 3, "gpu": 3}),
    (7, {"cpu": 0, "memory": 0, "gpu": 0}, {"cpu": 7, "memory": 0, "gpu": 0}),
])
def test_split_node_cost_in_the_ratio_of_list_rates(total, lists, want):
    from otel_agent.cost.pricing import split_node_cost
    got = split_node_cost(total, lists)
    assert got == want and sum(got.values()) == total


def test_node_list_micros():
    from otel_agent.cost.pricing import node_list_micros
    rates = pricing().rates
    assert node_list_micros(rates, cpu_core_hours=8, memory_gib_hours=64, gpu_hours=1) == \
        {"cpu": 252888, "memory": 271168, "gpu": 950000}
