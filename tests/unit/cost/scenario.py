"""A node over three hours, written as the agent would export it, with its expected usage
computed from the scenario's own parameters (rates × time), not from the ledger code.

Node n1: 4 cores capacity, 3.5 allocatable. The whole machine runs 3.0 cores, kubepods 2.5:
  pod p1 (deployment web, team-a) 1.5 cores, of which its container app 1.0 (restarted at
  1.5 h: a new start time, counting from zero again) and 0.5 only at pod level;
  pod p2 without metadata (only uid / container id): container 0.5 cores;
  pod p3, a job that lived 10 s and used 5 CPU-seconds, seen in one export only;
  the remaining 0.5 core of kubepods belongs to no pod seen (→ __unallocated__).
Memory: app's working set 1 GiB (usage 1.5 GiB, page cache included).
Network: app sends 1 GiB per hour to the internet.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.unit.cost.builders import (H, S, T0, Res, container_attrs, node_attrs, pod_attrs,
                                      request)

GIB = 2**30
STEP_S = 60
DURATION_S = 3 * 3600
RESTART_S = 5400
JOB = (90, 100, 5.0)  # start s, death s, CPU seconds

RATES = {"node": 3.0, "kubepods": 2.5, "p1": 1.5, "app": 1.0, "p2": 0.5}
EXPECTED_CORE_HOURS = {  # over the whole run, independent of how the ledger splits hours
    "app": RATES["app"] * DURATION_S / 3600,
    "p1-pod-level": (RATES["p1"] - RATES["app"]) * DURATION_S / 3600,
    "p2": RATES["p2"] * DURATION_S / 3600,
    "job": JOB[2] / 3600,
    "unallocated": (RATES["kubepods"] - RATES["p1"] - RATES["p2"]) * DURATION_S / 3600,
}
EXPECTED_NET_BYTES = GIB * DURATION_S / 3600


@dataclass(frozen=True)
class Item:
    """One data point of one metric of one resource: the unit batches are cut from."""

    attrs: tuple[tuple[str, object], ...]
    kind: str  # sum (monotonic) | updown (non-monotonic sum: semconv's levels) | gauge
    name: str
    start: int
    time: int
    value: float
    unit: str = ""
    dp_attrs: tuple[tuple[str, object], ...] = ()


def items(node: str = "n1", duration_s: int = DURATION_S, step_s: int = STEP_S,
          t0: int = T0) -> list[Item]:
    """Every point of the scenario; `t0` (ns, on an hour) moves it in time."""
    T0 = t0  # noqa: N806 - the scenario's origin
    out: list[Item] = []
    na = tuple(node_attrs(node).items())
    kp = tuple({**node_attrs(node), "k8s.node.system_container.name": "pods"}.items())
    p1 = tuple(pod_attrs("p1", node=node, deployment="web", labels={"team": "alpha"}).items())
    app = tuple(container_attrs("p1", "app", node=node, deployment="web", labels={"team": "alpha"}).items())
    p2c = tuple(container_attrs("p2", "main", node=node, namespace=None).items())
    p2 = tuple(pod_attrs("p2", node=node, namespace=None).items())
    job = tuple(container_attrs("p3", "job", node=node, namespace="batch").items())
    jobpod = tuple(pod_attrs("p3", node=node, namespace="batch").items())
    js, jd, jcpu = JOB
    for k in range(1, duration_s // step_s + 1):
        e = k * step_s
        t = T0 + e * S
        extra = jcpu if e >= jd else 0.0
        out += [
            Item(na, "sum", "k8s.node.cpu.time", T0, t, RATES["node"] * e + extra, "s"),
            Item(kp, "sum", "k8s.node.system_container.cpu.time", T0, t, RATES["kubepods"] * e + extra, "s"),
            Item(na, "updown", "otel_agent.node.cpu.capacity", T0, t, 4.0),
            Item(na, "updown", "k8s.node.cpu.allocatable", T0, t, 3.5),
            Item(p1, "sum", "k8s.pod.cpu.time", T0, t, RATES["p1"] * e, "s"),
            Item(p2, "sum", "k8s.pod.cpu.time", T0, t, RATES["p2"] * e, "s"),
            Item(p2c, "sum", "container.cpu.time", T0, t, RATES["p2"] * e, "s"),
            Item(app, "updown", "container.memory.working_set", T0, t, 1.0 * GIB, "By"),
            Item(app, "updown", "container.memory.usage", T0, t, 1.5 * GIB, "By"),
            Item(app, "updown", "k8s.container.cpu.request.desired", T0, t, 0.25),
            Item(app, "sum", "container.network.io", T0, t, GIB * e / 3600, "By",
                 (("network.io.direction", "transmit"), ("otel_agent.network.class", "internet"))),
        ]
        if e <= RESTART_S:
            out.append(Item(app, "sum", "container.cpu.time", T0, t, RATES["app"] * e, "s"))
        else:
            out.append(Item(app, "sum", "container.cpu.time", T0 + RESTART_S * S, t,
                            RATES["app"] * (e - RESTART_S), "s"))
        if js < e and e - step_s < jd:  # the only export that saw the job
            out.append(Item(job, "sum", "container.cpu.time", T0 + js * S, t, jcpu, "s"))
            out.append(Item(jobpod, "sum", "k8s.pod.cpu.time", T0 + js * S, t, jcpu, "s"))
    return out


def gpu_items(node: str = "n1", duration_s: int = DURATION_S, step_s: int = STEP_S,
              t0: int = T0) -> list[Item]:
    """The scenario's node as a GPU node: 2 nvidia.com/gpu, one held by p1's container app
    throughout (the other idle)."""
    na = tuple(node_attrs(node).items())
    app = tuple(container_attrs("p1", "app", node=node, deployment="web", labels={"team": "alpha"}).items())
    gpu = (("otel_agent.gpu.resource", "nvidia.com/gpu"),)
    out = []
    for k in range(1, duration_s // step_s + 1):
        t = t0 + k * step_s * S
        out += [Item(na, "updown", "otel_agent.node.gpu.capacity", t0, t, 2.0, "{device}", gpu),
                Item(na, "updown", "otel_agent.node.gpu.allocatable", t0, t, 2.0, "{device}", gpu),
                Item(app, "updown", "otel_agent.container.gpu.request", t0, t, 1.0, "{device}", gpu)]
    return out


def pack(batch: list[Item]):
    """Items → one ExportMetricsServiceRequest (grouped by resource, as the agent sends)."""
    by_res: dict[tuple, Res] = {}
    for it in batch:
        r = by_res.setdefault(it.attrs, Res(dict(it.attrs)))
        if it.kind == "sum":
            r.sum(it.name, [(it.start, it.time, it.value)], unit=it.unit, dp_attrs=dict(it.dp_attrs))
        elif it.kind == "updown":
            r.updown(it.name, [(it.start, it.time, it.value)], unit=it.unit, dp_attrs=dict(it.dp_attrs))
        else:
            r.gauge(it.name, [(it.time, it.value)], unit=it.unit)
    return request(*by_res.values())


def per_export(all_items: list[Item]) -> list[list[Item]]:
    """Batches as the agent would send them: one per export time."""
    by_t: dict[int, list[Item]] = {}
    for it in all_items:
        by_t.setdefault(it.time, []).append(it)
    return [by_t[t] for t in sorted(by_t)]


NOW_NS = T0 + 10 * H
