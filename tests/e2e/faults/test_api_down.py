"""Fault: the Kubernetes API is down for 60 s, and a pod is created, works and is deleted
entirely inside the outage (agent with the `kubernetes` metadata source against the fake API
server, → rotel → cost processor).

While the API is down the agent reads the pod's cgroups like any other, but cannot name it:
it exports it under its pod uid (from the cgroup path) and keeps the dead pod's final values
(accounting.UNRESOLVED_GRACE_SECONDS) until metadata arrives. When the API is back the informer
resumes its watch from the last resourceVersion, the server replays the pod's ADDED and
DELETED, and the ledger (latest metadata per series wins) bills the pod's CPU to its real
namespace: late rather than never.

If the API server's history no longer reaches back (etcd compacted: 410 Gone, so the informer
relists) no list shows a pod that is already gone and no source can name it; then its usage
is still billed, exactly, to its pod uid under the namespace __unknown__ (second test).
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.e2e.faults.conftest import duty_burner
from tests.support.fake_apiserver import FakeApiServer, make_node, make_pod
from tests.support.pipeline import agent_process, cpu_usage_seconds, ledger_cpu, write_kubeconfig

pytestmark = [pytest.mark.kernel, pytest.mark.e2e]

UNKNOWN = "__unknown__"  # otel_agent.cost.ingest.UNKNOWN


def _pod_json(synth_pod) -> dict:
    pod = make_pod(synth_pod.name, namespace=synth_pod.namespace, uid=synth_pod.uid,
                   containers=tuple((c.name, {"cpu": "100m"}, {}) for c in synth_pod.containers))
    for status, c in zip(pod["status"]["containerStatuses"], synth_pod.containers):
        status["containerID"] = f"containerd://{c.id}"
    return pod


def _ledger_namespace(db, uid: str) -> str | None:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as c:
            row = c.execute("SELECT namespace FROM ledger_hourly WHERE pod_uid = ? AND resource = 'cpu' "
                            "ORDER BY period_start DESC LIMIT 1", (uid,)).fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def _wait(pred, timeout_seconds: float, what: str, agent) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not pred():
        assert time.monotonic() < deadline, f"{what} within {timeout_seconds:.0f} s: {agent.log()}"
        assert agent.alive(), agent.log()
        time.sleep(0.5)


def _run(synth, ledger, tmp_path, *, outage_seconds: float, compact: bool):
    rotel, cost = ledger["rotel"], ledger["cost"]
    known = synth.add_pod("shop", "web-1", containers=("web",))
    with FakeApiServer() as api:
        api.set_node(make_node("node-a"))
        api.add_pod(_pod_json(known))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        agent = agent_process(tmp_path, kubepods=synth.kubepods, endpoint=rotel.endpoint,
                              metadata=("--metadata", "kubernetes"),
                              env_extra={"KUBECONFIG": str(kubeconfig), "NODE_NAME": "node-a"}).start()
        try:
            _wait(lambda: cost.points() > 0, 60, "the first export in the ledger", agent)
            # after the node's first export: earlier usage would be a baseline, not billed
            known_burner = synth.spawn(known.container("web"), duty_burner(1.0))
            _wait(lambda: _ledger_namespace(cost.db, known.uid) == "shop", 60, "the known pod billed", agent)

            api.stop()
            down_at = time.monotonic()
            ghost = synth.add_pod("ghost-ns", "ghost-job-1", containers=("job",))
            api.add_pod(_pod_json(ghost))  # the API server saw it; the agent cannot ask
            g = synth.spawn(ghost.container("job"), duty_burner(1.0, sleep_seconds=0.1))
            assert g.wait(timeout=60) == 0
            time.sleep(2.5)  # the agent reads its final values (under its uid only)
            ghost_truth = cpu_usage_seconds(ghost.path)
            synth.remove_pod(ghost)
            api.delete_pod("ghost-ns", "ghost-job-1")
            if compact:
                api.expire_resource_versions()
            time.sleep(max(0.0, outage_seconds - (time.monotonic() - down_at)))
            _wait(lambda: _ledger_namespace(cost.db, ghost.uid) is not None, 30,
                  "the ghost pod in the ledger at all", agent)
            assert _ledger_namespace(cost.db, ghost.uid) == UNKNOWN  # not named during the outage
            api.start()
            if compact:
                _wait(lambda: len(api.requests_to("/api/v1/pods", watch=False)) >= 2, 90,
                      "a relist after the API came back", agent)
                time.sleep(3)
            else:
                _wait(lambda: _ledger_namespace(cost.db, ghost.uid) == "ghost-ns", 90,
                      "the ghost pod billed to its namespace after the API came back", agent)
            known_burner.wait(timeout=60)
            time.sleep(2.5)
            known_truth = cpu_usage_seconds(known.path)
        finally:
            code = agent.stop()
    log = agent.log(50000)
    assert code == 0, log
    assert "Kubernetes API unreachable" in log
    cost.wait_quiet()
    assert cost.stop() == 0, cost.log()
    bills, _ = ledger_cpu(cost.db)
    assert bills[known.uid].namespace == "shop"
    assert bills[known.uid].cpu_seconds == pytest.approx(known_truth, rel=0.01)
    assert ghost_truth >= 1.0
    assert bills[ghost.uid].cpu_seconds == pytest.approx(ghost_truth, rel=0.01)
    return bills[ghost.uid]


@pytest.mark.timeout(240)
def test_api_down_60s_pod_born_and_dead_in_outage_billed_to_its_namespace(synth, ledger, tmp_path):
    bill = _run(synth, ledger, tmp_path, outage_seconds=60, compact=False)
    assert (bill.namespace, bill.pod) == ("ghost-ns", "ghost-job-1")


@pytest.mark.timeout(180)
def test_api_history_compacted_during_outage_pod_billed_under_its_uid(synth, ledger, tmp_path):
    bill = _run(synth, ledger, tmp_path, outage_seconds=10, compact=True)
    assert bill.namespace == UNKNOWN  # no source can name a pod deleted before any list saw it
