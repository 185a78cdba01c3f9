"""Fault: the agent is SIGKILLed mid-stream and started again (agent → rotel → cost processor).

What the kernel keeps and what it does not, and therefore exactly what the ledger can have:

* cgroup-file counters (cpu.stat) are cumulative since the cgroup's creation and exported with
  the node's boot time as start time: the restarted agent continues the same series, so a live
  pod loses nothing and nothing is counted twice (ledger == cpu.stat within 1%);
* a pod born and dead entirely while no agent ran left no cgroup to read and no BPF entry
  (nothing was attached): its CPU is only in its parent, kubepods, and the ledger bills it to
  __unallocated__ (asserted: unallocated == that pod's cpu.stat), never to a tenant;
* BPF counters restart at the new attach with a new start time, so they form a new series
  (no double count); what they would have counted in the gap is lost. Asserted with network
  bytes sent by a pod before, during and after the gap: the ledger bills before + after.
* the killed agent's programs must not outlive it: cgroup_skb programs attached with
  BPF_PROG_ATTACH stay on the root cgroup after SIGKILL (found by this test; now BPF links).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from otel_agent.k8s.static import write_static
from tests.e2e.faults.conftest import PY, burner, duty_burner, static_meta
from tests.support.pipeline import (agent_process, cgroup_prog_ids, cpu_usage_seconds, ledger_cpu,
                                    ledger_network_bytes, prog_ids_held, series_starts)

pytestmark = [pytest.mark.kernel, pytest.mark.e2e, pytest.mark.timeout(240)]

SEND = "import socket,sys\ns=socket.create_connection(('127.0.0.1',{port}))\ns.sendall(b'x'*{n})\ns.close()\n"


class _Drain:
    """A TCP server that reads and counts whatever it is sent."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1 << 16):
                    with self._lock:
                        self.received += len(data)

    def wait_received(self, n: int, timeout_seconds: float = 30) -> None:
        """Until `n` bytes in all have arrived. A sender's exit does not mean its bytes are on
        the wire: close() leaves what is still in the socket's send buffer to the kernel, which
        transmits it as the receiver drains, still as the sender's cgroup (CI once saw 132 KB of
        the gap's bytes leave after the new agent had attached)."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            with self._lock:
                got = self.received
            if got >= n:
                return
            assert time.monotonic() < deadline, f"the drain got {got} of {n} bytes"
            time.sleep(0.01)

    def close(self) -> None:
        self.sock.close()


def _wait_points(cost, more_than: int, agent, timeout_seconds: float = 90) -> int:
    deadline = time.monotonic() + timeout_seconds
    while (n := cost.points()) <= more_than:
        assert time.monotonic() < deadline, f"no new points in the ledger: {agent.log()}"
        assert agent.alive(), agent.log()
        time.sleep(0.5)
    return n


def test_agent_sigkill_restart_loses_only_what_the_kernel_lost(synth, ledger, tmp_path):
    rotel, cost = ledger["rotel"], ledger["cost"]
    a = synth.add_pod("shop", "web-1", containers=("web",))
    b = synth.add_pod("batch", "etl-1", containers=("etl",))
    ghost = synth.add_pod("shop", "ghost-1", containers=("job",))  # lives only while no agent runs
    static = tmp_path / "pods.yaml"
    write_static(static, None, static_meta([a, b, ghost]))
    synth.remove_pod(ghost)
    drain = _Drain()

    sent_total = 0

    def send(n: int) -> None:
        nonlocal sent_total
        p = synth.spawn(a.container("web"), [*PY, SEND.format(port=drain.port, n=n)])
        assert p.wait(timeout=30) == 0
        sent_total += n
        drain.wait_received(sent_total)

    def start_agent(name: str):
        return agent_process(tmp_path, kubepods=synth.kubepods, endpoint=rotel.endpoint,
                             interval_ms=1000, bpf_profile="standard", log_name=name,
                             metadata=("--metadata", "static", "--static-metadata", str(static))).start()

    agent = start_agent("agent-1.log")
    agent2 = None
    try:
        n = _wait_points(cost, 0, agent)
        # Work starts after the ledger's first export of this node: what ran before it is a
        # baseline by the ledger's rules (usage from before it watched), not billed.
        burners = [synth.spawn(p.containers[0], duty_burner(3.0, sleep_seconds=0.35)) for p in (a, b)]
        sent_before = 1_000_000
        send(sent_before)
        _wait_points(cost, n + 50, agent)
        time.sleep(2)  # a cycle has read the bytes, its export has gone out
        held = prog_ids_held(agent.pid)
        attached_before_kill = cgroup_prog_ids(synth.root)
        killed_at = time.time_ns()
        agent.kill()
        # The gap: a pod comes and goes, and pod A sends bytes nobody counts.
        ghost = synth.add_pod("shop", "ghost-1", containers=("job",), uid=ghost.uid)
        gp = synth.spawn(ghost.container("job"), burner(0.5))
        assert gp.wait(timeout=60) == 0
        ghost_truth = cpu_usage_seconds(ghost.path)
        synth.remove_pod(ghost)
        send(4_000_000)
        leaked = held & cgroup_prog_ids(synth.root)
        n = cost.points()
        agent2 = start_agent("agent-2.log")
        _wait_points(cost, n + 50, agent2)
        sent_after = 2_000_000
        send(sent_after)
        for p in burners:
            p.wait(timeout=120)
        time.sleep(2.5)
        truth = {p.uid: cpu_usage_seconds(p.path) for p in (a, b)}
    finally:
        agent.kill()
        code = agent2.stop() if agent2 is not None else None
        drain.close()
    assert code == 0, agent2.log()
    cost.wait_quiet()
    assert cost.stop() == 0, cost.log()

    assert held & attached_before_kill, "the agent had no cgroup_skb program attached to check"
    assert not leaked, f"programs {sorted(leaked)} of the SIGKILLed agent are still attached to the root cgroup"

    bills, unallocated = ledger_cpu(cost.db)
    for p in (a, b):
        assert bills[p.uid].namespace == p.namespace
        # same series across the restart (start = boot): nothing lost, nothing counted twice
        assert bills[p.uid].cpu_seconds == pytest.approx(truth[p.uid], rel=0.01), p.name
        assert len(series_starts(cost.db, p.uid, "k8s.pod.cpu.time")) == 1
    assert ghost.uid not in bills  # never seen by an agent: no tenant can be billed for it
    assert unallocated == pytest.approx(ghost_truth, rel=0.03, abs=0.02)
    assert ghost_truth >= 0.5

    # BPF counters: a new start time after the restart, the gap's bytes lost, nothing twice.
    starts = series_starts(cost.db, a.uid, "%network%")
    assert len(starts) == 2 and max(starts) > killed_at, starts
    billed = ledger_network_bytes(cost.db).get(a.uid, 0.0)
    assert billed == pytest.approx(sent_before + sent_after, rel=0.02)
