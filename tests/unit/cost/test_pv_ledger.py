"""Persistent volume claims in the ledger, to the micro-unit: each claim's GiB-hours at its
storage class's rate (`storage_classes:`, else `storage_gib_hour`), billed to its namespace
by the hour while it exists, under the workload `__unmounted__` for the hours no running pod
mounts it; outside the node's compute reconciliation (the disk is not the node's). Built
through the real ingest, store, ledger and allocation from OTLP as the cluster_objects agent
sends it (k8s/volumes.py, agent._claim_samples)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from otel_agent.cost.allocation import allocations, reconcile
from otel_agent.cost.ingest import decode
from otel_agent.cost.pricing import parse_pricing
from otel_agent.cost.store import Store
from otel_agent.cost.types import Model, Window
from tests.unit.cost.builders import H, S, T0, Res, node_attrs, request
from tests.unit.cost.ledger_helpers import PRICING_YAML

GIB = 2**30
GP3 = Decimal("0.000109589")
DEFAULT = Decimal("0.0000548")  # PRICING_YAML storage_gib_hour
PRICING = PRICING_YAML + "storage_classes:\n  gp3: 0.000109589\n"
METRIC = "otel_agent.cluster.persistentvolumeclaim.capacity"
WINDOW = Window(datetime.fromtimestamp(T0 / 1e9, timezone.utc),
                datetime.fromtimestamp(T0 / 1e9, timezone.utc) + timedelta(hours=1))

# (namespace, claim, uid, class, GiB, mounted in the first half hour, in the second)
CLAIMS = [
    ("db", "data-pg-0", "uid-a", "gp3", 100, True, True),
    ("db", "backup", "uid-b", "standard", 10, False, True),
    ("ml", "scratch", "uid-c", "gp3", 50, False, False),
]


def micros(gib_hours: float, rate: Decimal) -> int:
    return int((Decimal(repr(gib_hours)) * rate * 1_000_000).to_integral_value(ROUND_HALF_EVEN))


def _point(res: Res, t: int, ns, claim, uid, cls, size, mounted: bool):
    r = res.updown(METRIC, [(T0, t, size)], unit="By", dp_attrs={
        "k8s.namespace.name": ns, "k8s.persistentvolumeclaim.name": claim,
        "k8s.persistentvolumeclaim.uid": uid, "k8s.storageclass.name": cls,
        "k8s.persistentvolume.name": f"pvc-{uid}", "otel_agent.persistentvolume.access_mode": "RWO",
        "otel_agent.persistentvolumeclaim.mounted": "true" if mounted else "false"})
    return r


def _exports():
    out = []
    for k in range(61):  # every minute, the last at the hour's end: levels hold to it
        t = T0 + k * 60 * S - (1 if k == 60 else 0)
        res = Res(node_attrs("reporter"))
        for ns, claim, uid, cls, gib, first, second in CLAIMS:
            mounted = first if k < 30 else second
            _point(res, t, ns, claim, uid, cls, gib * GIB, mounted)  # the state it is in
            _point(res, t, ns, claim, uid, cls, 0, not mounted)  # and 0 for the other
        out.append(request(res))
    return out


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/l.db", pricing=parse_pricing(PRICING, "p.yaml"))
    for req in _exports():
        b = decode(req, now_ns=T0 + 2 * H)
        assert b.rejected == 0, b.errors
        s.write(b)
    s.refresh()
    yield s
    s.close()


def test_claims_billed_per_storage_class_to_their_namespace(store):
    gib_h: dict[str, float] = {}
    for ns, claim, uid, cls, gib, first, second in CLAIMS:
        for mounted in (first, second):
            wl = f"{ns}/{claim if mounted else '__unmounted__'}"
            gib_h[wl] = gib_h.get(wl, 0.0) + gib * 0.5
    # per workload, from the parameters: each half hour of each claim at its class's rate
    expected: dict[str, int] = {}
    for ns, claim, uid, cls, gib, first, second in CLAIMS:
        rate = GP3 if cls == "gp3" else DEFAULT
        for mounted in (first, second):
            wl = f"{ns}/{claim if mounted else '__unmounted__'}"
            expected.setdefault(wl, [])
            expected[wl].append(micros(gib * 0.5, rate))
    [got] = allocations(store, WINDOW, aggregate="workload", model=Model.CHARGEBACK)
    by = {a.name: a for a in got}
    for wl, parts in expected.items():
        # one ledger row per (claim, state, hour): its money is the half hours' sum, rounded once
        assert round(by[wl].pv_cost * 1e6) == pytest.approx(sum(parts), abs=len(parts))
        assert by[wl].pv_byte_hours / GIB == pytest.approx(gib_h[wl])
        assert by[wl].total_cost == pytest.approx(by[wl].pv_cost)
    assert by["db/data-pg-0"].pv_byte_hours / GIB == pytest.approx(100.0)
    assert round(by["db/data-pg-0"].pv_cost * 1e6) == micros(100.0, GP3)
    assert round(by["ml/__unmounted__"].pv_cost * 1e6) == micros(50.0, GP3)  # never mounted
    assert round(by["db/backup"].pv_cost * 1e6) == micros(5.0, DEFAULT)
    assert round(by["db/__unmounted__"].pv_cost * 1e6) == micros(5.0, DEFAULT)
    [ns] = allocations(store, WINDOW, aggregate="namespace", model=Model.CHARGEBACK)
    assert {a.name for a in ns} == {"db", "ml"}  # no idle or overhead: claims are no node
    # the reporter node's compute reconciliation is untouched by claims
    for r in reconcile(store, WINDOW):
        assert r.balanced and r.allocated_micros == 0


@pytest.mark.parametrize("attrs,reason", [
    ({"k8s.namespace.name": "db", "k8s.persistentvolumeclaim.name": "x"}, "needs"),
    ({"k8s.namespace.name": "Not_DNS", "k8s.persistentvolumeclaim.name": "x",
      "k8s.persistentvolumeclaim.uid": "u", "otel_agent.persistentvolumeclaim.mounted": "true"},
     "namespace"),
    ({"k8s.namespace.name": "db", "k8s.persistentvolumeclaim.name": "x",
      "k8s.persistentvolumeclaim.uid": "u", "otel_agent.persistentvolumeclaim.mounted": "maybe"},
     "must be true or false"),
])
def test_claim_points_validated(attrs, reason):
    r = Res(node_attrs("reporter")).updown(METRIC, [(T0, T0, GIB)], unit="By", dp_attrs=attrs)
    b = decode(request(r), now_ns=T0 + H)
    assert b.rejected == 1 and reason in b.error_message(), b.error_message()


def test_a_claim_bigger_than_any_volume_is_refused():
    r = Res(node_attrs("reporter"))
    _point(r, T0, "db", "x", "u", "gp3", 2.0**51, True)
    b = decode(request(r), now_ns=T0 + H)
    assert b.rejected == 1 and "more than any node has" in b.error_message()


def test_storage_classes_in_the_pricing_file():
    p = parse_pricing(PRICING, "p.yaml")
    assert p.storage_rate("gp3") == GP3 and p.storage_rate("other") == DEFAULT
    with pytest.raises(Exception, match=r"storage_classes.gp3: must be a number"):
        parse_pricing(PRICING_YAML + "storage_classes:\n  gp3: cheap\n", "p.yaml")
