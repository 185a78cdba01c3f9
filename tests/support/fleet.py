"""A simulated fleet for the multi-replica test and benchmark: N nodes in several clusters,
each exporting what the agent sends (node CPU, kubepods CPU, capacity and allocatable, and per
pod its CPU counter, its container's CPU counter and working set), one export every `step_s`.

Usage varies from step to step (seeded, reproducible), so a point delivered late, twice or to
another replica changes the deltas of the hours around it: a ledger that mishandles one shows
in the totals. `requests()` cuts the exports as a gateway would send them (several nodes of one
cluster per request), and `delivery()` shuffles them locally and repeats some, as a retrying
gateway in front of a load-balanced Service does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tests.unit.cost.builders import Res, request

S = 1_000_000_000
GIB = 2**30


@dataclass(frozen=True)
class Fleet:
    clusters: tuple[str, ...] = ("east", "west")
    nodes_per_cluster: int = 25
    pods_per_node: int = 2
    step_s: int = 300
    seed: int = 15

    def nodes(self) -> list[tuple[str, str]]:
        return [(c, f"{c}-node-{i:03d}") for c in self.clusters for i in range(self.nodes_per_cluster)]


def _attrs(cluster: str, node: str, **more: object) -> dict[str, object]:
    return {"k8s.cluster.name": cluster, "k8s.node.name": node, **more}


def exports(fleet: Fleet, t0_ns: int, steps: int) -> list[tuple[int, str, str, Res | None, list[Res]]]:
    """(time, cluster, node, resources) of every node's every export, in time order. Counters
    start at `t0_ns` (the nodes boot then)."""
    out = []
    for cluster, node in fleet.nodes():
        rng = random.Random(f"{fleet.seed}/{cluster}/{node}")
        cpu_node = cpu_pods = 0.0
        pod_cpu = [0.0] * fleet.pods_per_node
        for k in range(1, steps + 1):
            t = t0_ns + k * fleet.step_s * S
            res = []
            pods_sum = 0.0
            for p in range(fleet.pods_per_node):
                # cores × seconds; a node's pods together stay within its 8 cores
                inc = fleet.step_s * rng.uniform(0.05, 1.5) * min(1.0, 2.0 / fleet.pods_per_node)
                pod_cpu[p] += inc
                pods_sum += inc
                uid = f"{node}-pod{p}"
                pa = _attrs(cluster, node, **{"k8s.pod.uid": uid, "k8s.namespace.name": f"team-{p}",
                                              "k8s.pod.name": f"web-{node}-{p}",
                                              "k8s.deployment.name": f"web-{p}"})
                ca = {**pa, "container.id": f"cid-{uid}", "k8s.container.name": "app"}
                res.append(Res(pa).sum("k8s.pod.cpu.time", [(t0_ns, t, pod_cpu[p] * 1.1)], unit="s"))
                res.append(Res(ca).sum("container.cpu.time", [(t0_ns, t, pod_cpu[p])], unit="s")
                           .updown("container.memory.working_set",
                                   [(t0_ns, t, float(rng.randint(1, 4) * GIB // 2))], unit="By"))
            cpu_pods += pods_sum * 1.1 + fleet.step_s * rng.uniform(0.0, 0.3)
            cpu_node = max(cpu_node, cpu_pods) + fleet.step_s * rng.uniform(0.1, 0.5)
            na = _attrs(cluster, node)
            kp = {**na, "k8s.node.system_container.name": "pods"}
            res.append(Res(na).sum("k8s.node.cpu.time", [(t0_ns, t, cpu_node)], unit="s")
                       .updown("otel_agent.node.cpu.capacity", [(t0_ns, t, 8.0)], unit="{cpu}")
                       .updown("k8s.node.cpu.allocatable", [(t0_ns, t, 7.5)], unit="{cpu}"))
            res.append(Res(kp).sum("k8s.node.system_container.cpu.time", [(t0_ns, t, cpu_pods)], unit="s"))
            out.append((t, cluster, node, res))
    out.sort(key=lambda e: (e[0], e[1], e[2]))
    return out


def requests(all_exports, nodes_per_request: int = 5) -> list[tuple[int, bytes]]:
    """(earliest time, serialized ExportMetricsServiceRequest): a gateway's batches, several
    nodes of one cluster and one export time each."""
    out = []
    group: list = []

    def flush() -> None:
        if group:
            out.append((group[0][0], request(*[r for e in group for r in e[3]]).SerializeToString()))
            group.clear()

    for e in all_exports:
        if group and (len(group) >= nodes_per_request or group[0][0] != e[0] or group[0][1] != e[1]):
            flush()
        group.append(e)
    flush()
    return out


def delivery(reqs: list[tuple[int, bytes]], *, seed: int = 15, window: int = 40,
             duplicate: float = 0.15) -> list[bytes]:
    """Every request at least once: shuffled within a sliding window of `window` requests (a
    few export steps: well within the ledger's first-seen window), a `duplicate` fraction sent
    again some requests later (a retry whose first attempt was acknowledged after all)."""
    rng = random.Random(seed)
    keyed = [(i + rng.uniform(0, window), body) for i, (_t, body) in enumerate(reqs)]
    keyed += [(i + rng.uniform(0, 3 * window), body) for i, (_t, body) in enumerate(reqs)
              if rng.random() < duplicate]
    keyed.sort(key=lambda kv: kv[0])
    return [body for _k, body in keyed]
