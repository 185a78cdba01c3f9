"""Validation by meaning: each quantity bounded by what a node can hold, strings by what
Kubernetes allows, and the per-node and per-pod facts a point cannot contradict. Table-driven
on the real decode (pure) and on a real ledger (the per-node rules live in the write)."""

from __future__ import annotations

import sqlalchemy as sa
import pytest

from otel_agent.cost import validate as V
from otel_agent.cost.ingest import decode
from otel_agent.cost.store import Store, hourly_t, node_first_t, pod_ns_t, series_t
from tests.unit.cost.builders import H, S, T0, Res, container_attrs, node_attrs, pod_attrs, request
from tests.unit.cost.ledger_helpers import pricing

NOW = T0 + 10 * H
T = T0 + 2 * H  # a time inside the ledger's window


def cpu(attrs, start, t, v, name="container.cpu.time"):
    return Res(attrs).sum(name, [(start, t, v)], unit="s")


def gauge(attrs, name, v, t=T, unit=""):
    return Res(attrs).gauge(name, [(t, v)], unit=unit)


NODE = node_attrs("n1")
POD = container_attrs("u1", "app", node="n1")


@pytest.mark.parametrize("res, code, words", [
    # per unit: the 2^60 that used to pass as "a plausible number of bytes"
    (gauge(NODE, "otel_agent.node.cpu.capacity", 2.0**60), V.R_RANGE, "more than any node has"),
    (gauge(NODE, "otel_agent.node.cpu.capacity", 2.0**47), V.R_RANGE, "cores"),
    (gauge(NODE, "otel_agent.node.memory.capacity", 2.0**47, unit="By"), V.R_RANGE, "bytes"),
    (gauge(POD, "container.memory.working_set", 2.0**50, unit="By"), V.R_RANGE, "bytes"),
    (gauge(POD, "k8s.container.cpu.request.desired", 5000.0), V.R_RANGE, "cores"),
    (cpu(POD, T - 60 * S, T, 60 * 4096 * 1.2), V.R_RANGE, "4096 cores"),
    (Res(POD).sum("container.network.io", [(T - S, T, 2.0**40)], unit="By",
                  dp_attrs={"network.io.direction": "transmit"}), V.R_RANGE, "network"),
    # a counter "since 1970" whatever its value
    (cpu(POD, 1, T, 1.0), V.R_UPTIME, "longer than any node stays up"),
    (cpu(POD, T - 6 * 365 * 86400 * S, T, 1.0), V.R_UPTIME, "days before"),
    # strings by what Kubernetes allows
    (cpu(container_attrs("u1", "app", namespace="n" * 64), T0, T, 1.0), V.R_ATTRIBUTE, "64 characters"),
    (cpu(container_attrs("u1", "app", namespace="x" * 300), T0, T, 1.0), V.R_ATTRIBUTE, "at most 63"),
    (cpu(container_attrs("u1", "app", namespace="Team-A"), T0, T, 1.0), V.R_ATTRIBUTE, "namespace name"),
    (cpu(container_attrs("u1", "app", namespace="__idle__"), T0, T, 1.0), V.R_ATTRIBUTE, "namespace name"),
    (cpu(container_attrs("u1", "app", pod="web\x00evil"), T0, T, 1.0), V.R_ATTRIBUTE, "U+0000"),
    (cpu({**POD, "k8s.container.name": "a\nb"}, T0, T, 1.0), V.R_ATTRIBUTE, "U+000A"),
    (cpu({**POD, "k8s.node.name": "n" * 254}, T0, T, 1.0), V.R_ATTRIBUTE, "at most 253"),
    (cpu({**POD, "k8s.node.name": "a/b"}, T0, T, 1.0), V.R_ATTRIBUTE, "node name"),
    (cpu({**POD, "k8s.pod.uid": "u 1"}, T0, T, 1.0), V.R_ATTRIBUTE, "pod uid"),
    (cpu({**POD, "k8s.pod.uid": "u" * 65}, T0, T, 1.0), V.R_ATTRIBUTE, "at most 64"),
    (cpu({**POD, "k8s.deployment.name": "d" * 300}, T0, T, 1.0), V.R_ATTRIBUTE, "at most 253"),
    (cpu({**POD, "k8s.pod.label.team": "v" * 64}, T0, T, 1.0), V.R_ATTRIBUTE, "at most 63"),
    (Res(POD).sum("container.network.io", [(T0, T, 1.0)], unit="By",
                  dp_attrs={"network.io.direction": "sideways"}), V.R_ATTRIBUTE, "transmit"),
])
def test_a_point_beyond_what_it_can_mean_is_rejected_with_its_reason(res, code, words):
    b = decode(request(res), now_ns=NOW)
    assert (b.rejected, b.points) == (1, [])
    assert b.codes == {code: 1}
    assert words in b.error_message(), b.error_message()


@pytest.mark.parametrize("res", [
    gauge(NODE, "otel_agent.node.cpu.capacity", 4096.0),
    gauge(NODE, "otel_agent.node.memory.capacity", 2.0**45, unit="By"),
    cpu(POD, T - 60 * S, T, 60 * 4096.0),
    cpu(POD, T - 4 * 365 * 86400 * S, T, 1.0),
    cpu(container_attrs("u1", "app", namespace="n" * 63, pod="p" * 253), T0, T, 1.0),
    cpu({**POD, "container.id": "containerd://" + "a" * 64}, T0, T, 1.0),
])
def test_the_largest_real_values_and_names_pass(res):
    b = decode(request(res), now_ns=NOW)
    assert b.rejected == 0 and len(b.points) == 1, b.errors


def test_labels_beyond_the_bound_are_dropped_and_counted_not_the_point():
    labels = {f"k{i:03d}": "v" for i in range(V.MAX_LABELS + 6)}
    b = decode(request(cpu(container_attrs("u1", "app", labels=labels), T0, T, 1.0)), now_ns=NOW)
    assert b.rejected == 0 and len(b.points) == 1
    assert b.labels_dropped == 6
    import json
    kept = json.loads(next(iter(b.series.values())).meta)["labels"]
    assert sorted(kept) == sorted(labels)[:V.MAX_LABELS]


# --- per node and per pod: the facts live in the ledger ----------------------------------------

@pytest.fixture
def store(ledger_url):
    s = Store(ledger_url, pricing=pricing())
    yield s
    s.close()


def write(store, *res, now=NOW):
    b = decode(request(*res), now_ns=now)
    assert b.rejected == 0, b.errors
    store.write(b, now_ns=now)
    return b


def node_export(t, *, boot=T0 - 86400 * S, cores=4.0, mem=None, node="n1"):
    r = Res(node_attrs(node)).sum("k8s.node.cpu.time", [(boot, t, 1.0 * (t - boot) / S)], unit="s")
    r.gauge("otel_agent.node.cpu.capacity", [(t, cores)])
    if mem:
        r.gauge("otel_agent.node.memory.capacity", [(t, mem)], unit="By")
    return r


def test_a_counter_cannot_start_before_its_node_booted(store):
    boot = T0 - 86400 * S
    b = write(store, node_export(T, boot=boot), cpu(POD, boot - 3600 * S, T, 1.0),
              cpu(container_attrs("u2", "app", node="n1"), boot, T, 1.0))
    assert b.codes == {V.R_BOOT: 1} and len(b.points) == 3
    assert "before node n1 booted" in b.error_message()


def test_what_a_point_claims_cannot_exceed_its_node(store):
    write(store, node_export(T, cores=4.0, mem=2.0**34))
    t = T + 60 * S
    b = write(store, cpu(POD, t - 60 * S, t, 4.0 * 60 + 30),  # 4.5 cores on a 4-core node
              gauge(container_attrs("u2", "app", node="n1"), "container.memory.working_set",
                    2.0**35, t=t, unit="By"),
              cpu(container_attrs("u3", "app", node="n1"), t - 60 * S, t, 3.9 * 60))
    assert b.codes == {V.R_CAPACITY: 2} and len(b.points) == 1
    assert "node n1's 4 cores" in b.error_message()


def test_a_point_far_before_the_nodes_first_arrival_is_history_not_billed(store):
    write(store, node_export(T))
    with store.engine.connect() as c:
        first = c.execute(sa.select(node_first_t.c.first_ns)).scalar_one()
    old = T - 13 * 86400 * S
    b = write(store, node_export(old, boot=T0 - 20 * 86400 * S))
    assert b.codes == {V.R_FIRST_SEEN: 2} and b.points == []
    assert "before the first point the ledger received from node n1" in b.error_message()
    # within the window: a reordered delivery, accepted, and it is the node's first point now
    write(store, node_export(T - 30 * 60 * S))
    with store.engine.connect() as c:
        assert c.execute(sa.select(node_first_t.c.first_ns)).scalar_one() == T - 30 * 60 * S < first


def _ns_of(store, uid):
    with store.engine.connect() as c:
        return c.execute(sa.select(pod_ns_t.c.namespace).where(pod_ns_t.c.pod_uid == uid)).scalar_one()


def test_a_pod_uid_never_changes_namespace(store):
    alpha = container_attrs("u1", "app", node="n1", namespace="alpha")
    beta = container_attrs("u1", "app", node="n1", namespace="beta")
    write(store, node_export(T), cpu(alpha, T0, T, 100.0))
    b = write(store, cpu(beta, T0, T + 60 * S, 100.0),
              gauge(beta, "container.memory.working_set", 0.0, t=T + 60 * S, unit="By"),
              cpu(pod_attrs("u1", node="n1", namespace="beta"), T0, T + 60 * S, 0.0, "k8s.pod.cpu.time"))
    assert b.codes == {V.R_NAMESPACE: 3} and b.points == []
    assert "belongs to namespace alpha, not beta" in b.error_message()
    assert _ns_of(store, "u1") == "alpha"
    # the agent without the API server's names: accepted, still alpha's
    nameless = container_attrs("u1", "app", node="n1", namespace=None)
    write(store, cpu(nameless, T0, T + 120 * S, 160.0))
    store.refresh()
    with store.engine.connect() as c:
        assert {ns for (ns,) in c.execute(sa.select(hourly_t.c.namespace).where(
            hourly_t.c.pod_uid == "u1"))} == {"alpha"}


def test_unknown_then_known_reattributes_the_past(store):
    # seen first while the API server was down (uid only), then with its namespace: every past
    # hour moves to the namespace, nothing stays under __unknown__
    nameless = container_attrs("u9", "app", node="n1", namespace=None)
    write(store, node_export(T - 2 * H))  # the node's first export: u9 came after it
    write(store, node_export(T - H), cpu(nameless, T0, T - H, 10.0))
    write(store, node_export(T), cpu(nameless, T0, T, 20.0))
    store.refresh()
    assert _ns_of(store, "u9") == "__unknown__"
    write(store, node_export(T + H), cpu(container_attrs("u9", "app", node="n1", namespace="gamma"),
                                         T0, T + H, 30.0))
    assert _ns_of(store, "u9") == "gamma"
    store.refresh()
    with store.engine.connect() as c:
        rows = c.execute(sa.select(hourly_t.c.period_start, hourly_t.c.namespace).where(
            hourly_t.c.pod_uid == "u9")).all()
        assert {ns for _h, ns in rows} == {"gamma"} and len({h for h, _ns in rows}) == 3
        assert {ns for (ns,) in c.execute(sa.select(series_t.c.namespace).where(
            series_t.c.pod_uid == "u9"))} == {"gamma"}
