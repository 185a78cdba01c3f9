"""The agent sends a pod's network twice: per container and as the pod's total (the sum of its
containers, plus dead ones whose map entries were freed). The ledger must bill each byte once:
the container row its own bytes, the pod-level row only what no live container series carries.
Expected bytes are the ones written into the requests below."""

from __future__ import annotations

import pytest

from otel_agent.cost.ingest import decode
from otel_agent.cost.store import Store
from tests.unit.cost.builders import H, S, T0, Res, container_attrs, node_attrs, pod_attrs, request
from tests.unit.cost.ledger_helpers import pricing, totals, unbalanced

TX = {"network.io.direction": "transmit", "otel_agent.network.class": "internet"}
RX = {"network.io.direction": "receive", "otel_agent.network.class": "internet"}
MIB = 1 << 20


def _req(t_s: int, app_tx: float, pod_tx: float, pod_rx: float):
    t = T0 + t_s * S
    return request(
        Res(node_attrs()).gauge("otel_agent.node.cpu.capacity", [(t, 2.0)]),
        Res(container_attrs("p1", "app")).sum("container.network.io", [(T0, t, app_tx)], unit="By",
                                              dp_attrs=TX),
        Res(pod_attrs("p1")).sum("k8s.pod.network.io", [(T0, t, pod_tx)], unit="By", dp_attrs=TX)
                            .sum("k8s.pod.network.io", [(T0, t, pod_rx)], unit="By", dp_attrs=RX),
    )


def test_pod_network_is_not_billed_twice(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/l.db", pricing=pricing())
    try:
        # app sends 10 then 30 MiB; a dead sibling container had sent 5 MiB (pod total = sum).
        for t_s, app, dead in ((60, 10 * MIB, 5 * MIB), (120, 30 * MIB, 5 * MIB)):
            store.write(decode(_req(t_s, app, app + dead, 7 * MIB), now_ns=T0 + H))
        t = totals(store)
        assert t[("container", "p1", "app", "network:internet")] == pytest.approx(30 * MIB)
        assert t[("pod", "p1", "", "network:internet")] == pytest.approx(5 * MIB)
        assert sum(v for k, v in t.items() if k[3].startswith("network:")) == pytest.approx(35 * MIB)
        assert unbalanced(store) == []
    finally:
        store.close()
