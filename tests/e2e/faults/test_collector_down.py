"""Fault: the Collector (rotel) is SIGKILLed for 60 s while pods burn CPU, then restarted on
the same port. Every export in the window fails; the agent keeps cumulative totals, so the
first export after the Collector is back carries everything. The ledger must match each pod
cgroup's own cpu.stat within 1%, and must show the hole in its points (the fault was real)."""

from __future__ import annotations

import sqlite3
import time

import pytest

from otel_agent.k8s.static import write_static
from tests.e2e.faults.conftest import duty_burner, static_meta
from tests.support.pipeline import Rotel, agent_process, cpu_usage_seconds, ledger_cpu

pytestmark = [pytest.mark.kernel, pytest.mark.e2e, pytest.mark.timeout(240)]

OUTAGE_SECONDS = 60
# The SDK's exporter retries a failed export with backoff until its timeout (10 s by default):
# an export collected up to that long before the Collector came back may still be delivered,
# stamped with its collection time. Points stamped earlier than that cannot arrive.
EXPORT_RETRY_SECONDS = 10


def test_collector_down_60s_ledger_matches_cpu_stat(synth, ledger, tmp_path):
    rotel, cost = ledger["rotel"], ledger["cost"]
    pods = [synth.add_pod(ns, name, containers=("main",))
            for ns, name in (("team-a", "api-1"), ("team-a", "worker-1"), ("team-b", "batch-1"))]
    static = tmp_path / "pods.yaml"
    write_static(static, None, static_meta(pods))
    agent = agent_process(tmp_path, kubepods=synth.kubepods, endpoint=rotel.endpoint, interval_ms=1000,
                          metadata=("--metadata", "static", "--static-metadata", str(static))).start()
    try:
        deadline = time.monotonic() + 60
        while cost.points() == 0:
            assert time.monotonic() < deadline, f"nothing reached the ledger: {agent.log()}"
            assert agent.alive(), agent.log()
            time.sleep(0.5)
        # ~10% of a core per pod for ~75 s: before, throughout and after the outage.
        burners = [synth.spawn(p.container("main"), duty_burner(7.0)) for p in pods]
        time.sleep(5)
        rotel.kill()
        down_at = time.time_ns()
        time.sleep(OUTAGE_SECONDS)
        up_at = time.time_ns()
        ledger["rotel"] = rotel = Rotel(tmp_path, exporter_port=cost.port, port=rotel.port).start()
        for b in burners:
            b.wait(timeout=120)
        time.sleep(2.5)  # two more cycles read the final values
        truth = {p.uid: cpu_usage_seconds(p.path) for p in pods}
    finally:
        code = agent.stop()
    assert code == 0, agent.log()
    assert "OTLP export failed" in agent.log(20000)
    cost.wait_quiet()
    assert cost.stop() == 0, cost.log()

    bills, _ = ledger_cpu(cost.db)
    for p in pods:
        assert p.uid in bills, f"{p.name} not in the ledger"
        assert bills[p.uid].namespace == p.namespace
        assert bills[p.uid].cpu_seconds == pytest.approx(truth[p.uid], rel=0.01), p.name
        assert truth[p.uid] >= 6.9  # the burners did their work
    # The fault was real: no point of these pods is stamped inside the outage window (less
    # the exporter's retry time at its end).
    with sqlite3.connect(f"file:{cost.db}?mode=ro", uri=True) as c:
        inside = c.execute("SELECT count(*) FROM points p JOIN series s ON p.series_id = s.series_id "
                           "WHERE s.pod_uid = ? AND p.time_ns > ? AND p.time_ns < ?",
                           (pods[0].uid, down_at + 3_000_000_000,
                            up_at - (EXPORT_RETRY_SECONDS + 1) * 1_000_000_000)).fetchone()[0]
    assert inside == 0
