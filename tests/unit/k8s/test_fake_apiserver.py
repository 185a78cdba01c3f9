"""The fake API server behaves like the real one where our client code depends on it.

Other tiers (e2e, fault tests) reuse it, so its own behaviour is pinned here, always through
the real `kubernetes` client.
"""

from __future__ import annotations

import threading
import time

import pytest
import urllib3.exceptions
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.support.fake_apiserver import FakeApiServer, make_node, make_pod


@pytest.fixture
def api():
    with FakeApiServer() as server:
        yield server


def test_list_honours_field_selector_and_namespace(api: FakeApiServer) -> None:
    api.add_pod(make_pod("a", namespace="x", node_name="n1"))
    api.add_pod(make_pod("b", namespace="y", node_name="n1"))
    api.add_pod(make_pod("c", namespace="x", node_name="n2"))
    v1 = client.CoreV1Api(api.api_client())
    names = lambda resp: sorted(p.metadata.name for p in resp.items)  # noqa: E731
    assert names(v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1")) == ["a", "b"]
    assert names(v1.list_namespaced_pod("x")) == ["a", "c"]
    assert names(v1.list_namespaced_pod("x", field_selector="spec.nodeName=n1")) == ["a"]
    assert names(v1.list_pod_for_all_namespaces(field_selector="spec.nodeName!=n1")) == ["c"]
    assert v1.read_namespaced_pod("b", "y").spec.node_name == "n1"
    listed = v1.list_pod_for_all_namespaces()
    assert int(listed.metadata.resource_version) == api.resource_version


def test_nodes_and_not_found(api: FakeApiServer) -> None:
    api.set_node(make_node("n1", capacity={"cpu": "8", "memory": "32Gi"}))
    v1 = client.CoreV1Api(api.api_client())
    assert v1.read_node("n1").status.capacity["cpu"] == "8"
    assert [n.metadata.name for n in v1.list_node().items] == ["n1"]
    with pytest.raises(ApiException) as err:
        v1.read_node("n2")
    assert err.value.status == 404


def test_watch_replays_from_resource_version_then_streams(api: FakeApiServer) -> None:
    v1 = client.CoreV1Api(api.api_client())
    start = str(api.resource_version)
    api.add_pod(make_pod("a"))
    api.modify_pod("default", "a", lambda p: p["metadata"]["labels"].update(v="2"))
    threading.Timer(0.2, lambda: api.delete_pod("default", "a")).start()
    seen = []
    for ev in watch.Watch().stream(v1.list_pod_for_all_namespaces, resource_version=start, timeout_seconds=1):
        seen.append((ev["type"], ev["object"].metadata.name))
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


def test_fail_requests_answers_status_then_recovers(api: FakeApiServer) -> None:
    v1 = client.CoreV1Api(api.api_client())
    api.fail_requests(503, path_prefix="/api/v1/pods", count=1)
    with pytest.raises(ApiException) as err:
        v1.list_pod_for_all_namespaces()
    assert err.value.status == 503
    assert v1.list_pod_for_all_namespaces().items == []


def test_stop_refuses_and_start_serves_on_the_same_port(api: FakeApiServer) -> None:
    api.add_pod(make_pod("a"))
    v1 = client.CoreV1Api(api.api_client(retries=False))
    port = api.port
    api.stop()
    api.stop()  # idempotent
    with pytest.raises(urllib3.exceptions.HTTPError):
        v1.list_pod_for_all_namespaces(_request_timeout=1)
    api.start()
    assert api.port == port
    assert [p.metadata.name for p in v1.list_pod_for_all_namespaces().items] == ["a"]


def test_drop_watches_cuts_the_stream(api: FakeApiServer) -> None:
    v1 = client.CoreV1Api(api.api_client())
    threading.Timer(0.2, api.drop_watches).start()
    t0 = time.monotonic()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for _ in watch.Watch().stream(v1.list_pod_for_all_namespaces, resource_version="1", timeout_seconds=30):
            pass
    assert time.monotonic() - t0 < 5
    assert api.open_watches() == 0
