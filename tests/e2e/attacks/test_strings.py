"""Strings no Kubernetes object can hold, against a real `otel-agent cost serve` on a real
PostgreSQL 15 (tests/support/postgres.py) and on SQLite (issue 12: on PostgreSQL a namespace
over 255 characters got the whole batch a retryable UNAVAILABLE forever, good points included,
and a NUL byte in a pod name stopped that node's rebuilds for good). Each is a rejected point
with its reason; the good points of the same batch are stored and billed; nothing is
quarantined; the processor stays up."""

from __future__ import annotations

import pytest

from tests.support import postgres
from tests.support.cost_process import core_hours, node_export, now_hour_ns, query, serving
from tests.unit.cost.builders import S, Res, container_attrs, request

pytestmark = pytest.mark.e2e
MIN = 60 * S


@pytest.fixture(scope="module")
def pg_url():
    reason = postgres.available()
    if reason:
        pytest.skip(reason)
    with postgres.postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    url = request.getfixturevalue("pg_url")
    postgres.reset_database(url)
    return url


BAD = {
    "namespace of 300 characters": dict(namespace="n" * 300),
    "namespace of 256 characters": dict(namespace="n" * 256),
    "NUL in a pod name": dict(namespace="shop", pod="web\x00evil"),
    "newline in a pod name": dict(namespace="shop", pod="web\nevil"),
}


def test_oversized_strings_and_nul_bytes_are_rejected_points_not_store_errors(tmp_path, ledger):
    h = now_hour_ns() - 2 * 3600 * S
    boot, first = h - 86400 * S, h + 5 * MIN
    good = ("pod-good", "shop", 1.0, first)
    with serving(tmp_path, ledger=ledger) as cost:
        cost.export(node_export(first, boot=boot, pods=[good]))
        t = first + 10 * MIN
        req = node_export(t, boot=boot, pods=[good])
        for i, kw in enumerate(BAD.values()):
            req.resource_metrics.extend(request(Res(container_attrs(f"bad-{i}", "app", node="n1", **kw))
                                                .sum("container.cpu.time", [(boot, t, 5.0)], unit="s")
                                                ).resource_metrics)
        resp = cost.export(req)  # OK with partial success: never UNAVAILABLE, never INTERNAL
        assert resp.partial_success.rejected_data_points == len(BAD)
        msg = resp.partial_success.error_message
        assert "k8s.namespace.name is 300 characters long (at most 63)" in msg
        assert "k8s.namespace.name is 256 characters long (at most 63)" in msg
        assert "holds the control character U+0000" in msg
        assert "holds the control character U+000A" in msg
        cost.export(node_export(t + 10 * MIN, boot=boot, pods=[good]))
        cost.settle()
        assert cost.alive()
        assert query(ledger, "SELECT count(*) FROM quarantine")[0][0] == 0
        assert core_hours(ledger, namespace="shop") == pytest.approx(1.0 * 20 / 60)
        assert query(ledger, "SELECT count(*) FROM series WHERE pod_uid LIKE 'bad-%'")[0][0] == 0
