"""Allocation queries on the scenario: models, sharing, aggregates, filters."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from otel_agent.cost.allocation import allocations, reconcile
from otel_agent.cost.errors import QueryError
from otel_agent.cost.store import Store
from otel_agent.cost.types import IDLE, OVERHEAD, UNALLOCATED, Model, SharePolicy, Window
from tests.unit.cost import scenario
from tests.unit.cost.ledger_helpers import ingest, pricing
from tests.unit.cost.scenario import EXPECTED_CORE_HOURS as EXP

CPU_RATE = 0.031611
T0 = datetime.fromtimestamp(scenario.T0 / 1e9, timezone.utc)
W = Window(T0, T0 + timedelta(hours=4))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("alloc")
    s = Store(f"sqlite:///{d}/l.db", pricing=pricing())
    ingest(s, scenario.per_export(scenario.items()))
    yield s
    s.close()


def by_name(allocs):
    return {a.name: a for a in allocs}


def test_chargeback_by_namespace(store):
    [res] = allocations(store, W, aggregate="namespace", model=Model.CHARGEBACK)
    a = by_name(res)
    team = EXP["app"] + EXP["p1-pod-level"]
    assert a["team-a"].cpu_core_hours == pytest.approx(team)
    assert a["team-a"].cpu_cost == pytest.approx(team * CPU_RATE, abs=1e-5)
    assert a["__unknown__"].cpu_core_hours == pytest.approx(EXP["p2"])  # pod without metadata
    assert a["batch"].cpu_core_hours == pytest.approx(EXP["job"])
    assert a[UNALLOCATED].cpu_core_hours == pytest.approx(EXP["unallocated"])
    assert {IDLE, OVERHEAD} <= set(a)
    assert a["team-a"].network_cost == pytest.approx(3 * 0.12, abs=1e-5)  # 1 GiB/h to internet


def test_usage_model_has_quantities_and_no_money(store):
    [res] = allocations(store, W, aggregate="namespace", model=Model.USAGE)
    assert all(a.total_cost == 0 for a in res)
    assert by_name(res)["team-a"].ram_byte_hours > 0


def test_showback_ratio_sums_to_one(store):
    [res] = allocations(store, W, aggregate="namespace", model=Model.SHOWBACK_RATIO,
                        share_idle=SharePolicy.PROPORTIONAL)
    assert sum(a.total_cost for a in res) == pytest.approx(1.0)
    assert {a.currency for a in res} == {"ratio"}


@pytest.mark.parametrize("policy", [SharePolicy.PROPORTIONAL, SharePolicy.EVEN])
@pytest.mark.parametrize("by_node", [False, True])
def test_sharing_moves_idle_and_overhead_onto_tenants_and_conserves_money(store, policy, by_node):
    [none] = allocations(store, W, aggregate="namespace", share_idle=SharePolicy.NONE)
    [shared] = allocations(store, W, aggregate="namespace", share_idle=policy, idle_by_node=by_node)
    assert sum(a.total_cost for a in shared) == pytest.approx(sum(a.total_cost for a in none), abs=1e-6)
    names = {a.name for a in shared}
    assert not any(n.endswith(IDLE) and by_name(shared)[n].total_cost for n in names)
    pool = sum(a.total_cost for a in none if a.name in (IDLE, OVERHEAD))
    assert sum(a.shared_cost for a in shared) == pytest.approx(pool, abs=1e-6)
    if policy == SharePolicy.EVEN:
        tenants = [a for a in shared if a.name in ("team-a", "batch", "__unknown__")]
        assert len(tenants) == 3
        assert max(a.shared_cost for a in tenants) - min(a.shared_cost for a in tenants) < 1e-5


def test_request_or_usage_takes_the_larger(store):
    [ror] = allocations(store, W, aggregate="namespace,pod,container",
                        model=Model.REQUEST_OR_USAGE)
    app = by_name(ror)["team-a/pod-p1/app"]
    # max() is per container-hour. Hours 0-2: usage 1.0 core > request 0.25. Hour 3 holds only
    # the export at exactly 3 h: 60 core-seconds of usage vs the request gauge held for the
    # 300 s gap allowance, 0.25 × 300 = 75 core-seconds: the request wins that hour.
    assert app.cpu_core_hours == pytest.approx(EXP["app"] - 60 / 3600 + 0.25 * 300 / 3600)
    [use] = allocations(store, W, aggregate="namespace,pod,container", model=Model.CHARGEBACK)
    assert by_name(use)["team-a/pod-p1/app"].cpu_core_hours == pytest.approx(EXP["app"])


def test_steps_labels_and_filters(store):
    steps = allocations(store, W, aggregate="label:team", step=timedelta(hours=1))
    assert len(steps) == 4
    assert sum(by_name(s).get("alpha").cpu_core_hours for s in steps if "alpha" in by_name(s)) == \
        pytest.approx(EXP["app"] + EXP["p1-pod-level"])
    [only] = allocations(store, W, aggregate="namespace", filter='namespace:"batch"')
    assert [a.name for a in only] == ["batch"]
    with pytest.raises(QueryError, match="aggregate key 'colour'"):
        allocations(store, W, aggregate="colour")
    with pytest.raises(QueryError, match="unknown field 'colour'"):
        allocations(store, W, filter='colour:"red"')


def test_reconciliation_per_node(store):
    [r] = reconcile(store, W)
    assert r.balanced and r.node_micros > 0 and r.idle_micros > 0 and r.overhead_micros > 0


def test_opencost_multi_key_names_properties_and_labels(store):
    # the query a third-party OpenCost client (unalloc) sends
    [res] = allocations(store, W, aggregate="namespace,controller,label:team")
    a = by_name(res)
    web = a["team-a/deployment:web/alpha"]
    assert web.cpu_core_hours == pytest.approx(EXP["app"] + EXP["p1-pod-level"])
    # the container row and the pod-level row agree on everything but the container
    assert dict(web.properties) == {"cluster": "__unknown__", "node": "n1", "namespace": "team-a",
                                    "pod": "pod-p1", "controllerKind": "deployment",
                                    "controller": "web"}
    assert dict(web.labels) == {"team": "alpha"}
    j = web.to_opencost_json()
    assert j["properties"]["labels"] == {"team": "alpha"} and "container" not in j["properties"]
    assert j["cpuCoreHours"] == web.cpu_core_hours and j["totalCost"] == web.total_cost
    # a bare pod has no controller and no team label: OpenCost's __unallocated__ parts
    assert a["batch/__unallocated__/__unallocated__"].cpu_core_hours == pytest.approx(EXP["job"])
    [res] = allocations(store, W, aggregate="cluster,node,namespace,pod,container")
    names = set(by_name(res))
    assert {"__unknown__/n1/team-a/pod-p1/app", "__unknown__/n1/team-a/pod-p1/__unallocated__",
            "__unknown__/n1/batch/pod-p3/job"} <= names


def test_filter_applies_after_idle_is_shared(store):
    """OpenCost's order: a tenant's share of idle is its share of the whole cluster, whatever
    the filter keeps; rows the filter refuses (idle too) are left out."""
    [every] = allocations(store, W, aggregate="namespace", share_idle=SharePolicy.PROPORTIONAL)
    [only] = allocations(store, W, aggregate="namespace", share_idle=SharePolicy.PROPORTIONAL,
                         filter='namespace:"team-a"')
    assert [a.name for a in only] == ["team-a"]
    assert only[0].shared_cost == pytest.approx(by_name(every)["team-a"].shared_cost)
    [some] = allocations(store, W, aggregate="namespace", filter='namespace!:"team-a"+node:"n1"')
    assert "team-a" not in by_name(some) and {"batch", IDLE, OVERHEAD} <= set(by_name(some))
    [lab] = allocations(store, W, aggregate="pod", filter='label[team]:"__unallocated__"')
    assert "pod-p1" not in by_name(lab) and "pod-p3" in by_name(lab)


def test_annotations_aggregate_and_filter(tmp_path):
    """Pod annotations (semconv k8s.pod.annotation.<key>) reach annotation:<key>; one too long
    to report on is dropped, never a reason to refuse the pod's usage."""
    from otel_agent.cost.ingest import decode
    from tests.unit.cost.builders import H as BH, S as BS, T0 as BT0, Res, container_attrs, node_attrs, request
    from tests.unit.cost.scenario import NOW_NS

    s = Store(f"sqlite:///{tmp_path}/a.db", pricing=pricing())
    try:
        for i in range(13):
            t = BT0 + i * 300 * BS
            res = [Res(node_attrs("n1")).sum("k8s.node.cpu.time", [(BT0 - BH, t, 2.0 * (t - BT0 + BH) / BS)])
                   .gauge("otel_agent.node.cpu.capacity", [(t, 4.0)])]
            for uid, owner in (("a1", "ops"), ("b1", None)):
                attrs = container_attrs(uid, "app", node="n1", namespace="shop")
                if owner:
                    attrs["k8s.pod.annotation.owner"] = owner
                    attrs["k8s.pod.annotation.kubectl.kubernetes.io/last-applied-configuration"] = "{" + "x" * 4000 + "}"
                res.append(Res(attrs).sum("container.cpu.time", [(BT0, t, 0.5 * (t - BT0) / BS)]))
            s.write(decode(request(*res), now_ns=NOW_NS))
        w = Window(datetime.fromtimestamp(BT0 / BS, timezone.utc),
                   datetime.fromtimestamp((BT0 + BH) / BS, timezone.utc))
        [res] = allocations(s, w, aggregate="annotation:owner")
        a = by_name(res)
        # the first export is the baseline of pods already running (README), so 55 of 60 minutes
        assert a["ops"].cpu_core_hours == pytest.approx(0.5 * 55 / 60)
        assert a["ops"].annotations == {"owner": "ops"}
        assert a["__unallocated__"].cpu_core_hours >= 0.5 * 55 / 60  # b1, with the no-pod row
        assert a["ops"].to_opencost_json()["properties"]["annotations"] == {"owner": "ops"}
        [res] = allocations(s, w, aggregate="pod", filter='annotation[owner]:"ops"')
        assert [x.name for x in res] == ["pod-a1"]
    finally:
        s.close()
