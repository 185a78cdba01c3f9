"""Moving cost between tenants, against a real `otel-agent cost serve` over OTLP/gRPC on
loopback (issue 12, "any pod can move cost between tenants"): a pod uid relabelled into
another namespace, a forged 0 between two real points taken for a counter reset, a plausible
node point dated 13 days back moving the node's first-seen time, and a counter claiming 4,096
cores since 1970. Expected figures come from the scenario (cores × seconds)."""

from __future__ import annotations

import grpc
import pytest

from tests.support.cost_process import core_hours, node_export, now_hour_ns, query, serving
from tests.unit.cost.builders import S, Res, container_attrs, request

pytestmark = pytest.mark.e2e
MIN = 60 * S


def _run(cost, start: int, end: int, step: int, pods, boot: int, node: str = "n1") -> None:
    t = start
    while t <= end:
        resp = cost.export(node_export(t, node=node, boot=boot, pods=pods))
        assert not resp.HasField("partial_success"), resp.partial_success.error_message
        t += step


def test_a_pod_uid_relabelled_into_another_namespace_is_refused(tmp_path):
    h = now_hour_ns() - 3 * 3600 * S
    boot, first = h - 86400 * S, h + 5 * MIN
    alpha = ("pod-a1", "alpha", 1.5, first)  # 1.5 cores from the first export on
    with serving(tmp_path) as cost:
        _run(cost, first, first + 61 * MIN, 5 * MIN, [alpha], boot)
        cost.settle()
        before = core_hours(cost.ledger, namespace="alpha")
        assert before == pytest.approx(1.5 * 60 / 60)  # 1.5 core-h
        # five zero-valued points naming alpha's pod under namespace beta
        forged = Res(container_attrs("pod-a1", "app", node="n1", namespace="beta"))
        for m in ("container.memory.working_set", "container.memory.usage"):
            forged.gauge(m, [(first + 62 * MIN, 0.0)], unit="By")
        forged.sum("container.cpu.time", [(boot, first + 62 * MIN, 0.0)], unit="s")
        forged.gauge("k8s.container.cpu.request.desired", [(first + 62 * MIN, 0.0)])
        forged.gauge("k8s.container.memory.request.desired", [(first + 62 * MIN, 0.0)], unit="By")
        with pytest.raises(grpc.RpcError) as e:
            cost.export(request(forged))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "all 5 data points rejected" in e.value.details()
        assert "pod uid pod-a1 belongs to namespace alpha, not beta" in e.value.details()
        _run(cost, first + 65 * MIN, first + 65 * MIN, MIN, [alpha], boot)
        cost.settle()
        assert core_hours(cost.ledger, namespace="beta") == 0
        assert core_hours(cost.ledger, namespace="alpha") == pytest.approx(1.5 * 65 / 60)
        assert cost.alive()


def test_a_forged_zero_between_real_points_bills_nothing_extra(tmp_path):
    h = now_hour_ns() - 4 * 3600 * S
    boot, first = h - 86400 * S, h + 5 * MIN
    beta = ("pod-b1", "beta", 1.5, first)
    with serving(tmp_path) as cost:
        _run(cost, first, first + 181 * MIN, 10 * MIN, [beta], boot)
        cost.settle()
        honest = core_hours(cost.ledger, namespace="beta")
        assert honest == pytest.approx(1.5 * 180 / 60)  # 4.5 core-h
        # a 0 between two real points, same series and start time: it was taken for a reset
        # and the next real point billed the pod's whole counter again (4.5 → 54 core-h)
        zero = Res(container_attrs("pod-b1", "app", node="n1", namespace="beta")).sum(
            "container.cpu.time", [(boot, first + 95 * MIN, 0.0)], unit="s")
        assert not cost.export(request(zero)).HasField("partial_success")  # it is a point
        cost.settle()
        assert core_hours(cost.ledger, namespace="beta") == pytest.approx(honest)
        assert cost.alive()


def test_an_old_node_point_does_not_move_first_seen_nor_bill_history(tmp_path):
    h = now_hour_ns() - 3 * 3600 * S
    boot, first = h - 20 * 86400 * S, h + 5 * MIN
    old_pod = ("pod-old", "gamma", 2.0, boot + 3600 * S)  # running for 20 days at install
    with serving(tmp_path) as cost:
        _run(cost, first, first + 60 * MIN, 5 * MIN, [old_pod], boot)
        cost.settle()
        billed = core_hours(cost.ledger, namespace="gamma")
        assert billed == pytest.approx(2.0 * 60 / 60)  # from the first export on only
        node_first = query(cost.ledger, "SELECT first_ns FROM node_first")[0][0]
        # one plausible node point 13 days back (its counter since boot, as an agent sends)
        resp = None
        with pytest.raises(grpc.RpcError) as e:
            resp = cost.export(node_export(first - 13 * 86400 * S, boot=boot))
        assert resp is None and e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "before the first point the ledger received from node n1" in e.value.details()
        _run(cost, first + 65 * MIN, first + 65 * MIN, MIN, [old_pod], boot)
        cost.settle()
        assert query(cost.ledger, "SELECT first_ns FROM node_first")[0][0] == node_first
        # +72 core-h of history before the ledger existed is what the attack billed
        assert core_hours(cost.ledger, namespace="gamma") == pytest.approx(2.0 * 65 / 60)


def test_a_counter_claiming_4096_cores_since_1970_is_refused(tmp_path):
    h = now_hour_ns() - 2 * 3600 * S
    boot, first = h - 86400 * S, h + 5 * MIN
    with serving(tmp_path) as cost:
        _run(cost, first, first + 30 * MIN, 5 * MIN, [("pod-x", "delta", 1.0, first)], boot)
        t = first + 31 * MIN
        claim = Res(container_attrs("pod-1970", "app", node="n1", namespace="delta")).sum(
            "container.cpu.time", [(1, t, 4096.0 * (t - 1) / S)], unit="s")
        with pytest.raises(grpc.RpcError) as e:
            cost.export(request(claim))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "longer than any node stays up" in e.value.details()
        # the same claim from the node's boot instead: beyond the node's 4 cores
        claim = Res(container_attrs("pod-1970", "app", node="n1", namespace="delta")).sum(
            "container.cpu.time", [(boot, t, 4096.0 * (t - boot) / S)], unit="s")
        with pytest.raises(grpc.RpcError) as e:
            cost.export(request(claim))
        assert "more than node n1's 4 cores can do" in e.value.details()
        cost.settle()
        assert core_hours(cost.ledger, namespace="delta") == pytest.approx(1.0 * 30 / 60)
        assert query(cost.ledger, "SELECT count(*) FROM series WHERE pod_uid = 'pod-1970'")[0][0] == 0
