"""Fuzz the OTLP receiver over real gRPC and OTLP/HTTP on loopback.

Acceptable outcomes only: INVALID_ARGUMENT with a message, or OK with partial_success counting
exactly the points the contract rejects and every accepted point in the store with the value
sent. Never INTERNAL, a dropped connection, a hang (every call has a timeout) or a wrong number.

`expected()` states the contract from the receiver's and ingest's docstrings, point by point,
without calling the code under test.
"""

from __future__ import annotations

import http.client
import math
import random
import re

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest, ExportMetricsServiceResponse)

from otel_agent.cost.ingest import QUANTITIES
from otel_agent.cost.receiver import SERVICE, Receiver
from otel_agent.cost.store import Store, points_t, series_t
from otel_agent.metrics import METRICS
from tests.unit.cost import scenario
from tests.unit.cost.builders import H, S, T0, kv
from tests.unit.cost.ledger_helpers import pricing

NOW = T0 + 10 * H
FUTURE = 15 * 60 * S
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz-receiver")
    store = Store(f"sqlite:///{d}/ledger.db", pricing=pricing())
    r = Receiver(store, listen="127.0.0.1:0", http_listen="127.0.0.1:0", now_ns=lambda: NOW).start()
    ch = grpc.insecure_channel(f"127.0.0.1:{r.port}")
    call = ch.unary_unary(f"/{SERVICE}/Export", request_serializer=None,
                          response_deserializer=ExportMetricsServiceResponse.FromString)
    yield r, call, store, Oracle()
    ch.close()
    r.stop(0)
    store.close()


def _str_attrs(kvs) -> dict[str, str]:
    out = {}
    for a in kvs:
        w = a.value.WhichOneof("value")
        if w == "string_value":
            out[a.key] = a.value.string_value
        elif w in ("int_value", "double_value", "bool_value"):
            out[a.key] = str(getattr(a.value, w))
    return out


# The contract's bounds, restated (README "The cost processor"; otel_agent/cost/validate.py).
CORES, MEMORY, NIC, GPUS = 4096, 2**46, 2**37, 1024
# GPU points name their device plugin's resource (otel_agent/gpu.py), kept as the series' class
_GPU_RESOURCE = re.compile(r"(nvidia\.com/gpu|amd\.com/gpu|gpu\.intel\.com/(i915|xe)"
                           r"|nvidia\.com/mig-[1-7]g\.[0-9]{1,4}gb(\+[a-z0-9.]{1,16})?)\Z")
UPTIME = 5 * 365 * 86400 * S
WINDOW = 3600 * S


# Kubernetes' own rules for the names the ledger keys on; the other strings printable, bounded.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")
_LIMITS = {"k8s.namespace.name": 63, "k8s.node.name": 253, "k8s.pod.uid": 64, "container.id": 255,
           "k8s.pod.name": 253, "k8s.container.name": 63, "k8s.cluster.name": 253,
           "cloud.availability_zone": 253, "k8s.deployment.name": 253, "k8s.statefulset.name": 253,
           "k8s.daemonset.name": 253, "k8s.cronjob.name": 253, "k8s.job.name": 253,
           "k8s.replicaset.name": 253}


def strings_ok(ra: dict[str, str]) -> bool:
    for k, v in ra.items():
        if k.startswith(("k8s.pod.label.", "k8s.node.label.")):
            key = k.split(".label.", 1)[1]
            if len(key) > 317 or len(v) > 63 or _CONTROL.search(key) or _CONTROL.search(v):
                return False
        elif k in _LIMITS and v and (len(v) > _LIMITS[k] or _CONTROL.search(v)):
            return False
    ns, node = ra.get("k8s.namespace.name"), ra.get("k8s.node.name")
    uid, cid = ra.get("k8s.pod.uid"), ra.get("container.id")
    return ((not ns or bool(_DNS_LABEL.match(ns))) and (not node or bool(_DNS_SUBDOMAIN.match(node)))
            and (not uid or bool(re.match(r"[A-Za-z0-9][A-Za-z0-9._:-]*$", uid)))
            and (not cid or bool(re.match(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*$", cid))))


def allowance(rate: float, elapsed_ns: int) -> float:
    return rate * (max(0, elapsed_ns) / S * 1.01 + 1.0)


# A metric's points are stored under its current name, whichever name (otel_agent.metrics
# formerly) they arrived with.
SERIES_NAME = {name: m.names[s] for m in METRICS.values() for s in m.formerly
               for name in (*m.formerly[s], m.names[s])}


class Oracle:
    """What the server must remember between requests: the points accepted so far, and per
    node its first arrival, boot (earliest start of its node-wide counters) and capacities."""

    def __init__(self):
        self.sent: dict[tuple, float] = {}  # point key → the first value accepted for it
        self.nodes: dict[str, dict] = {}


def expected(req: ExportMetricsServiceRequest, oracle: Oracle) -> tuple[int, list[tuple]]:
    """(rejected count, accepted points as (series key, start, time, value)) by the contract;
    updates the oracle's node facts as the server must."""
    rejected, cands = 0, []
    for rm in req.resource_metrics:
        ra = _str_attrs(rm.resource.attributes)
        node, uid = ra.get("k8s.node.name", ""), ra.get("k8s.pod.uid", "")
        ckey = ra.get("container.id") or ra.get("k8s.container.name", "")
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                q = QUANTITIES.get(m.name)
                kind = m.WhichOneof("data")
                if q is None:
                    continue  # not billed: ignored, not rejected
                pts = list(getattr(m, kind).data_points) if kind else []
                if kind is None:
                    rejected += 1
                    continue
                if q.counter:
                    ok = kind == "sum" and m.sum.is_monotonic and m.sum.aggregation_temporality in (1, 2)
                    temporality = {1: "delta", 2: "cumulative"}.get(m.sum.aggregation_temporality)
                else:  # a level: a gauge, or a cumulative UpDownCounter (non-monotonic sum)
                    ok = kind == "gauge" or (kind == "sum" and not m.sum.is_monotonic
                                             and m.sum.aggregation_temporality == 2)
                    temporality = "gauge"
                ok = ok and (not m.unit or m.unit == q.unit) and bool(node)
                ok = ok and (q.scope not in ("container", "pod") or bool(uid))
                ok = ok and (q.scope != "container" or bool(ckey)) and strings_ok(ra)
                if not ok:
                    rejected += len(pts)
                    continue
                for dp in pts:
                    if dp.flags & 1:
                        continue
                    v = {"as_double": dp.as_double, "as_int": float(dp.as_int)}.get(dp.WhichOneof("value"))
                    t, start = dp.time_unix_nano, dp.start_time_unix_nano
                    good = (v is not None and math.isfinite(v) and v >= 0 and 0 < t <= NOW + FUTURE
                            and t >= NOW - 14 * 24 * H)
                    if good and q.counter:
                        good = 0 < start <= t and t - start <= UPTIME
                        rate = {"cpu": CORES, "network": NIC}.get(q.quantity)
                        good = good and (rate is None or v <= allowance(rate, t - start))
                    elif good:
                        bound = (CORES if q.quantity.startswith("cpu.") else
                                 GPUS if q.quantity.startswith("gpu.") else MEMORY)
                        good = v <= bound
                    da = _str_attrs(dp.attributes) if q.quantity == "network" else {}
                    direction = da.get("network.io.direction", "")
                    net_class = da.get("otel_agent.network.class", "")
                    if q.quantity.startswith("gpu."):
                        net_class = _str_attrs(dp.attributes).get("otel_agent.gpu.resource", "")
                        good = good and bool(_GPU_RESOURCE.match(net_class))
                    good = good and direction in ("", "transmit", "receive") and len(net_class) <= 64 \
                        and not _CONTROL.search(net_class)
                    if not good:
                        rejected += 1
                        continue
                    key = (SERIES_NAME.get(m.name, m.name), temporality, ra.get("k8s.cluster.name", ""), node, uid, ckey,
                           direction, net_class)
                    cands.append((key, start if q.counter else 0, t, v, q))
    # Per node (the server keeps these facts in its ledger): the first-seen window, then what
    # the surviving points say about the node, then each point against it.
    if not cands:
        return rejected, []
    by_node: dict[str, int] = {}
    for key, _start, t, _v, _q in cands:
        nk = f"{key[2]}/{key[3]}"
        by_node[nk] = min(t, by_node.get(nk, t))
    for nk, t in by_node.items():
        oracle.nodes.setdefault(nk, {"anchor": t, "boot": None, "cores": None, "mem": None})
    keep = []
    for c in cands:
        f = oracle.nodes[f"{c[0][2]}/{c[0][3]}"]
        if c[2] < f["anchor"] - WINDOW:
            rejected += 1
        else:
            keep.append(c)
    for key, start, _t, v, q in keep:
        f = oracle.nodes[f"{key[2]}/{key[3]}"]
        if key[1] == "cumulative" and q.scope in ("node", "kubepods"):
            f["boot"] = start if f["boot"] is None else min(f["boot"], start)
        elif q.scope == "node" and q.quantity == "cpu.capacity":
            f["cores"] = v if f["cores"] is None else max(f["cores"], v)
        elif q.scope == "node" and q.quantity == "memory.capacity":
            f["mem"] = v if f["mem"] is None else max(f["mem"], v)
    accepted = []
    for key, start, t, v, q in keep:
        f = oracle.nodes[f"{key[2]}/{key[3]}"]
        good = True
        if q.counter:
            if f["boot"] is not None and q.scope in ("container", "pod") and start < f["boot"]:
                good = False
            elif q.quantity == "cpu" and f["cores"] is not None:
                good = v <= allowance(f["cores"], t - max(start, f["boot"] or start))
        elif q.quantity.startswith("memory.") and q.quantity != "memory.capacity" and f["mem"] is not None:
            good = v <= f["mem"] * 1.01
        elif q.quantity in ("cpu.request", "cpu.allocatable") and f["cores"] is not None:
            good = v <= f["cores"] * 1.01
        if good:
            accepted.append((key, start, t, v))
        else:
            rejected += 1
    return rejected, accepted


def stored(store: Store) -> dict[tuple, float]:
    s, p = series_t, points_t
    q = sa.select(s.c.metric, s.c.temporality, s.c.cluster, s.c.node, s.c.pod_uid, s.c.container_key,
                  s.c.direction, s.c.net_class, p.c.start_ns, p.c.time_ns, p.c.value).join(
        p, p.c.series_id == s.c.series_id)
    with store.engine.connect() as c:
        return {(tuple(r[:8]), r[8], r[9]): r[10] for r in c.execute(q)}


def send_http(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", "/v1/metrics", body=body, headers={"Content-Type": "application/x-protobuf"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def check(server, body: bytes, via: str) -> None:
    r, call, store, oracle = server
    sent = oracle.sent
    try:
        req = ExportMetricsServiceRequest.FromString(body)
    except Exception:  # noqa: BLE001 - not a valid message: the receiver must say so
        req = None
    if via == "grpc":
        try:
            resp = call(body, timeout=20)
            code, message = grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            code, message = e.code(), e.details() or ""
    else:
        status, payload = send_http(r.http_port, body)
        code = {200: grpc.StatusCode.OK, 400: grpc.StatusCode.INVALID_ARGUMENT}.get(status, status)
        if status == 200:
            resp = ExportMetricsServiceResponse.FromString(payload)
        else:
            message = status_pb2.Status.FromString(payload).message if status == 400 else ""
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, message)
    if req is None:
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "ExportMetricsServiceRequest" in message
        return
    rejected, accepted = expected(req, oracle)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert rejected > 0 and not accepted and f"all {rejected} data points rejected" in message, message
        return
    assert resp.partial_success.rejected_data_points == rejected, resp.partial_success.error_message
    assert bool(resp.partial_success.error_message) == bool(rejected)
    for key, start, t, v in accepted:
        sent.setdefault((key, start, t), v)  # a duplicate changes nothing: the first value stays
    got = stored(store)
    for key, start, t, _v in accepted:
        assert got.get((key, start, t)) == sent[(key, start, t)], (key, start, t)


# --- hypothesis-generated requests -------------------------------------------------------
# What agents send; the DCGM exporter's points (scope "gpu") have their own contract, tested
# from a table in tests/unit/cost/test_gpu_ledger.py.
BILLED = sorted(n for n, q in QUANTITIES.items() if q.scope != "gpu")
names = st.one_of(st.sampled_from(BILLED), st.sampled_from(BILLED), st.sampled_from(["", "x", "k8s.pod.cpu.time ", "other.metric"]))
times = st.one_of(st.sampled_from([0, T0, T0 + 60 * S, T0 + 3600 * S, NOW, NOW + FUTURE, NOW + FUTURE + 1,
                                   NOW - 15 * 24 * H, 2**64 - 1, 2**63]),
                  st.integers(T0, NOW).map(lambda t: t - t % S))
values = st.one_of(st.floats(0, 1000), st.floats(0, 1000), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, -0.0, -1.0, 1e300, 2.0**60, 2.0**60 + 2**9, 4096 * 3600.0]))
ints = st.integers(-(2**63), 2**63 - 1)


@st.composite
def requests(draw) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        rm = req.resource_metrics.add()
        attrs = {}
        if draw(st.booleans()):  # a complete container resource: most of its points are good
            attrs = {"k8s.node.name": "n1", "k8s.pod.uid": draw(st.sampled_from(["u1", "u2"])),
                     "k8s.namespace.name": "team-a", "container.id": "c1"}
        for k, choices in (("k8s.node.name", ["", "n1", "n2"]), ("k8s.pod.uid", ["", "u1", "u2"]),
                           ("k8s.namespace.name", ["", "team-a"]), ("container.id", ["", "c1"]),
                           ("k8s.container.name", ["", "app"]), ("k8s.cluster.name", ["", "c"])):
            v = draw(st.sampled_from([None] * 4 + choices))
            if v is not None:
                attrs[k] = v
        rm.resource.attributes.extend(kv(attrs))
        sm = rm.scope_metrics.add()
        for _ in range(draw(st.integers(0, 3))):
            name = draw(names)
            right = QUANTITIES[name].unit if name in QUANTITIES else ""
            m = sm.metrics.add(name=name, unit=draw(st.sampled_from(["", right, right, "s", "By", "ms"])))
            natural = "sum" if QUANTITIES.get(name, QUANTITIES[BILLED[0]]).counter else "gauge"
            kind = draw(st.sampled_from([natural] * 4 + ["sum", "gauge", "histogram", None]))
            if kind is None:
                continue
            data = getattr(m, kind)
            data.SetInParent()
            if kind == "sum":
                data.is_monotonic = QUANTITIES.get(m.name, QUANTITIES[BILLED[0]]).counter or draw(st.booleans())
                data.aggregation_temporality = draw(st.sampled_from([0, 1, 2, 2, 2]))
            if kind == "histogram":
                data.data_points.add(time_unix_nano=NOW)
                continue
            for _ in range(draw(st.integers(0, 4))):
                t = draw(st.one_of(st.integers(T0 + S, NOW).map(lambda t: t - t % S), times))
                start = draw(st.sampled_from([T0, T0, t - S, t, t + 1, 0])) if draw(st.booleans()) else draw(times)
                dp = data.data_points.add(start_time_unix_nano=min(max(start, 0), 2**64 - 1), time_unix_nano=t,
                                          flags=draw(st.sampled_from([0, 0, 1])))
                which = draw(st.sampled_from(["d", "d", "i", None]))
                if which == "d":
                    dp.as_double = draw(values)
                elif which == "i":
                    dp.as_int = draw(st.one_of(ints, st.integers(0, 10**6)))
                if draw(st.booleans()):
                    dp.attributes.extend(kv({"network.io.direction": draw(st.sampled_from(["transmit", "receive"])),
                                             "otel_agent.network.class": "internet"}))
    return req


@FUZZ
@given(req=requests(), via=st.sampled_from(["grpc", "http"]))
def test_generated_requests(server, req, via):
    check(server, req.SerializeToString(), via)


def test_byte_mutated_requests(server):
    rng = random.Random(4317)
    t0 = NOW - 5 * H
    seeds = [scenario.pack(b).SerializeToString()
             for b in scenario.per_export(scenario.items(t0=t0 - t0 % H, duration_s=600, step_s=60))]
    for i in range(400):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data) + 1)
            op = rng.randrange(4)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                del data[pos:pos + rng.randint(1, 16)]
            elif op == 2:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            else:
                data = data[:pos]
        check(server, bytes(data), "grpc" if i % 2 else "http")
    check(server, seeds[0], "grpc")  # and the server still answers good requests


@pytest.mark.parametrize("headers, body, status", [
    ({"Content-Encoding": "gzip"}, b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xffgarbage", 400),  # corrupt
    ({"Content-Encoding": "gzip"}, "truncated", 400),
    ({"Content-Encoding": "gzip"}, "bomb", 400),  # unzips past max_message_bytes
    # an invalid length is bad framing (RFC 9112 6.3): 400 from the HTTP parser; the old
    # stdlib server answered 411, after its read(-1) had waited for the client to close
    ({"Content-Length": "-1"}, b"", 400),
    ({"Transfer-Encoding": "chunked", "Content-Length": None}, b"0\r\n\r\n", 411),
])
def test_http_bad_framing_is_a_clear_error(server, headers, body, status):
    import gzip

    r = server[0]
    if body == "truncated":
        body = gzip.compress(b"\x0a\x00" * 100)[:-8]
    elif body == "bomb":
        body = gzip.compress(b"\x00" * (r.max_message_bytes + 1))
    conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=10)
    try:
        conn.putrequest("POST", "/v1/metrics")
        conn.putheader("Content-Type", "application/x-protobuf")
        if "Content-Length" not in headers:
            conn.putheader("Content-Length", str(len(body)))
        for k, v in headers.items():
            if v is not None:
                conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()  # before the fix: a dropped connection, or a timeout
        assert resp.status == status
    finally:
        conn.close()
