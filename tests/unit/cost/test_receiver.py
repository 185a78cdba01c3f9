"""The OTLP receiver over real gRPC (and HTTP) on loopback: statuses for bad input, partial
success, limits, auth, and a store that cannot write."""

from __future__ import annotations

import math
import urllib.error
import urllib.request

import grpc
import pytest
import sqlalchemy as sa
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from otel_agent.cost.receiver import SERVICE, Receiver
from otel_agent.cost.store import Store, points_t
from tests.unit.cost.builders import S, T0, Res, container_attrs, node_attrs, request
from tests.unit.cost.ledger_helpers import pricing
from tests.unit.cost.scenario import NOW_NS

METHOD = f"/{SERVICE}/Export"


def good(uid="u1", ns="team-a", v=10.0, t_s=60):
    return Res(container_attrs(uid, "app", namespace=ns)).sum(
        "container.cpu.time", [(T0, T0 + t_s * S, v)], unit="s")


@pytest.fixture
def served(tmp_path):
    made = []

    def make(**kw):
        store = Store(f"sqlite:///{tmp_path}/l{len(made)}.db", pricing=pricing())
        r = Receiver(store, listen="127.0.0.1:0", now_ns=lambda: NOW_NS, **kw).start()
        ch = grpc.insecure_channel(f"127.0.0.1:{r.port}")
        call = ch.unary_unary(METHOD, request_serializer=None,
                              response_deserializer=ExportMetricsServiceResponse.FromString)
        made.append((r, ch, store))
        return r, call, store

    yield make
    for r, ch, store in made:
        ch.close()
        r.stop(0)
        store.close()


def stored_points(store) -> int:
    with store.engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(points_t)).scalar_one()


def test_good_request_is_stored_before_the_answer(served):
    r, call, store = served()
    resp = call(request(good()).SerializeToString(), timeout=10)
    assert not resp.HasField("partial_success")
    assert stored_points(store) == 1


def test_malformed_protobuf_is_invalid_argument(served):
    r, call, store = served()
    with pytest.raises(grpc.RpcError) as e:
        call(b"\xff\xff\xff\xff garbage", timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportMetricsServiceRequest" in e.value.details()
    call(request(good()).SerializeToString(), timeout=10)  # the server goes on
    assert stored_points(store) == 1


@pytest.mark.parametrize("bad, reason", [
    (lambda: Res(container_attrs("b", "x")).sum("container.cpu.time", [(T0, T0 + 60 * S, math.nan)], unit="s"), "not a finite number"),
    (lambda: Res(container_attrs("b", "x")).sum("container.cpu.time", [(T0, T0 + 60 * S, math.inf)], unit="s"), "not a finite number"),
    (lambda: Res(container_attrs("b", "x")).sum("container.cpu.time", [(T0, T0 + 60 * S, -1.0)], unit="s"), "negative value"),
    (lambda: Res(container_attrs("b", "x")).sum("container.cpu.time", [(T0 + 90 * S, T0 + 60 * S, 1.0)], unit="s"), "start_time_unix_nano is after"),
    (lambda: Res(container_attrs("b", "x")).sum("container.cpu.time", [(0, T0 + 60 * S, 1.0)], unit="s"), "needs start_time"),
    (lambda: Res(container_attrs("b", "x")).gauge("container.cpu.time", [(T0 + 60 * S, 1.0)]), "expected a monotonic sum"),
    (lambda: Res(container_attrs("b", "x")).sum("container.memory.working_set", [(T0, T0 + 60 * S, 1.0)]), "expected a gauge"),
    (lambda: Res(container_attrs("b", "x")).sum("container.cpu.time", [(T0, T0 + 60 * S, 1.0)], unit="ms"), "unit 'ms'"),
    (lambda: Res(container_attrs("b", "x")).sum("container.cpu.time", [(T0, T0 + 60 * S, 1e9)], unit="s"), "more than 4096 cores"),
    (lambda: Res(container_attrs("b", "x")).sum("container.cpu.time", [(T0, NOW_NS + 3600 * S, 1.0)], unit="s"), "in the future"),
    (lambda: Res({"k8s.pod.uid": "b", "container.id": "c"}).sum("container.cpu.time", [(T0, T0 + 60 * S, 1.0)], unit="s"), "no k8s.node.name"),
])
def test_bad_points_are_rejected_and_good_ones_kept(served, bad, reason):
    r, call, store = served()
    resp = call(request(good(), bad()).SerializeToString(), timeout=10)
    assert resp.partial_success.rejected_data_points == 1
    assert reason in resp.partial_success.error_message
    assert stored_points(store) == 1
    # the same bad point alone: nothing acceptable, not retryable
    with pytest.raises(grpc.RpcError) as e:
        call(request(bad()).SerializeToString(), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in e.value.details()


def test_series_limit_per_namespace(served):
    r, call, store = served(max_series_per_namespace=2)
    req = request(good("u1"), good("u2"), good("u3"), good("o1", ns="other"))
    resp = call(req.SerializeToString(), timeout=10)
    assert resp.partial_success.rejected_data_points == 1
    assert "namespace team-a: over its limit of 2 live series" in resp.partial_success.error_message
    assert stored_points(store) == 3
    # known series keep flowing; a new one in the full namespace is refused
    resp = call(request(good("u1", v=20.0, t_s=120), good("u4")).SerializeToString(), timeout=10)
    assert resp.partial_success.rejected_data_points == 1
    assert stored_points(store) == 4


def test_message_size_is_bounded(served):
    r, call, store = served(max_message_bytes=4096)
    big = request(*[good(f"u{i}") for i in range(100)])
    assert big.ByteSize() > 4096
    with pytest.raises(grpc.RpcError) as e:
        call(big.SerializeToString(), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_bearer_token(served):
    r, call, store = served(auth_token="s3cret")
    body = request(good()).SerializeToString()
    with pytest.raises(grpc.RpcError) as e:
        call(body, timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
        call(body, timeout=10, metadata=(("authorization", "Bearer wrong"),))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stored_points(store) == 0
    call(body, timeout=10, metadata=(("authorization", "Bearer s3cret"),))
    assert stored_points(store) == 1


def test_store_that_cannot_write_gets_a_retryable_status_and_keeps_nothing(served):
    r, call, store = served()
    call(request(good("u0")).SerializeToString(), timeout=10)

    # A real SQLITE_FULL: cap the database at its current size, as a full disk would.
    @sa.event.listens_for(store.engine, "connect")
    def _cap(dbapi_conn, _rec):
        cur = dbapi_conn.cursor()
        n = cur.execute("PRAGMA page_count").fetchone()[0]
        cur.execute(f"PRAGMA max_page_count={n}")
        cur.close()

    store.engine.dispose()
    before = stored_points(store)
    many = request(*[good(f"n{i}") for i in range(300)])
    with pytest.raises(grpc.RpcError) as e:
        call(many.SerializeToString(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "full" in e.value.details()
    assert stored_points(store) == before  # nothing half-stored
    sa.event.remove(store.engine, "connect", _cap)
    store.engine.dispose()
    call(many.SerializeToString(), timeout=10)  # the client's retry succeeds
    assert stored_points(store) == before + 300


def test_otlp_http(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/h.db", pricing=pricing())
    r = Receiver(store, listen="127.0.0.1:0", http_listen="127.0.0.1:0", now_ns=lambda: NOW_NS).start()
    try:
        url = f"http://127.0.0.1:{r.http_port}/v1/metrics"
        req = urllib.request.Request(url, data=request(good()).SerializeToString(), method="POST",
                                     headers={"Content-Type": "application/x-protobuf"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
            ExportMetricsServiceResponse.FromString(resp.read())
        bad = urllib.request.Request(url, data=b"\xff\xff", method="POST",
                                     headers={"Content-Type": "application/x-protobuf"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=10)
        assert e.value.code == 400
        assert stored_points(store) == 1
    finally:
        r.stop(0)
        store.close()
