"""Persistent volume claims as the cluster_objects agent reads them (otel_agent/k8s/volumes.py):
pure conversion from the API's JSON, and the real `kubernetes` client listing them from the
fake API server."""

from __future__ import annotations

import pytest

from otel_agent.k8s.volumes import ClusterObjects, claims
from tests.support.fake_apiserver import FakeApiServer, make_claim, make_pod

GIB = 2**30


def _mounting(pod_name: str, claim: str, namespace: str = "db", phase: str = "Running") -> dict:
    pod = make_pod(pod_name, namespace=namespace)
    pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}},
                              {"name": "cfg", "configMap": {"name": "x"}}]
    pod["status"]["phase"] = phase
    return pod


def test_claims_from_objects():
    a, pv_a = make_claim("data-pg-0", namespace="db", size="100Gi", storage_class="gp3", uid="ua")
    b, pv_b = make_claim("backup", namespace="db", size="10Gi", storage_class=None, uid="ub",
                         access_modes=("ReadWriteMany", "ReadOnlyMany"))
    pending = {"metadata": {"name": "p", "namespace": "db", "uid": "up"}, "spec": {},
               "status": {"phase": "Pending"}}
    broken = {"metadata": {"name": "b", "namespace": "db", "uid": "ux"},
              "spec": {"volumeName": 5}, "status": {"phase": "Bound"}}
    pv_b["spec"]["storageClassName"] = ""
    default_sc = {"metadata": {"name": "standard", "annotations": {
        "storageclass.kubernetes.io/is-default-class": "true"}}}
    got, bad = claims([a, b, pending, broken], [pv_a, pv_b], [default_sc],
                      [_mounting("pg-0", "data-pg-0"), _mounting("old", "backup", phase="Succeeded")])
    assert bad == 1  # the broken one; the others are still read
    assert [(c.namespace, c.name, c.capacity_bytes, c.storage_class, c.access_modes, c.mounted)
            for c in got] == [("db", "backup", 10 * GIB, "standard", "ROX+RWX", False),
                              ("db", "data-pg-0", 100 * GIB, "gp3", "RWO", True)]
    assert got[1].volume == "pvc-ua" and got[1].uid == "ua"


def test_cluster_objects_through_the_kubernetes_client():
    with FakeApiServer() as api:
        pvc, pv = make_claim("data", namespace="db", size="5Gi", storage_class="gp3")
        api.put_object("persistentvolumeclaims", pvc)
        api.put_object("persistentvolumes", pv)
        api.add_pod(_mounting("pg-0", "data"))
        co = ClusterObjects(api.api_client())
        co.refresh()
        [c] = co.claims()
        assert (c.name, c.capacity_bytes, c.storage_class, c.mounted) == ("data", 5 * GIB, "gp3", True)
        api.delete_pod("db", "pg-0")
        co.refresh()
        assert [c.mounted for c in co.claims()] == [False]
        assert {r.path for r in api.requests} >= {
            "/api/v1/persistentvolumeclaims", "/api/v1/persistentvolumes",
            "/apis/storage.k8s.io/v1/storageclasses", "/api/v1/pods"}


def test_a_failed_list_keeps_the_last_claims_then_none(monkeypatch):
    with FakeApiServer() as api:
        pvc, pv = make_claim("data", namespace="db")
        api.put_object("persistentvolumeclaims", pvc)
        api.put_object("persistentvolumes", pv)
        co = ClusterObjects(api.api_client(), period_seconds=0.01)
        co.refresh()
        assert len(co.claims()) == 1
        api.fail_requests(500, path_prefix="/api/v1/persistentvolumeclaims")
        with pytest.raises(Exception):
            co.refresh()
        assert len(co.claims()) == 1  # within 5 periods
        import time
        time.sleep(0.06)
        assert co.claims() == []  # stale capacity must not bill for ever


def _node(name: str, ready: bool) -> dict:
    from tests.support.fake_apiserver import make_node
    n = make_node(name)
    n["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    return n


def test_reporter_is_the_first_ready_node():
    from otel_agent.k8s.volumes import reporter
    assert reporter([_node("b", True), _node("a", False), _node("c", True)]) == "b"
    assert reporter([_node("a", False)]) is None
    assert reporter([]) is None


def test_auto_hands_over_and_ends_what_it_reported_with_zeros():
    with FakeApiServer() as api:
        pvc, pv = make_claim("data", namespace="db", size="5Gi")
        api.put_object("persistentvolumeclaims", pvc)
        api.put_object("persistentvolumes", pv)
        api.set_node(_node("node-b", True))
        b = ClusterObjects(api.api_client(), node_name="node-b", auto=True)
        c = ClusterObjects(api.api_client(), node_name="node-c", auto=True)
        b.refresh(), c.refresh()
        assert [x.capacity_bytes for x in b.claims()] == [5 * GIB] and c.claims() == []
        api.set_node(_node("node-a", True))  # a node first by name: its agent takes over
        b.refresh()
        assert [x.capacity_bytes for x in b.claims()] == [0]  # one export of zeros
        b.refresh()
        assert b.claims() == []
