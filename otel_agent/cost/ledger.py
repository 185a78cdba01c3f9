"""One node-hour of stored points → ledger rows that add up to the node's cost (pure).

The rules, in the order they are applied (README "Cost processor"):

Usage in the hour
  * A cumulative counter's delta is value − the highest value before it of the same (series,
    start time); a delta is never negative. A value below an earlier one is *not* a reset:
    OTLP marks a reset with a new start time (DESIGN rule 2), and every counter the agent sends
    only grows within one start time, so a lower value is a stale or forged reading. It bills
    nothing, and the next higher value bills only what lies above the highest seen. (The
    Prometheus rule, "lower means restarted from zero", let one forged 0 between two real
    points bill the whole counter again: 4.5 core-h became 54.) A delta is billed in the hour
    its interval ends in; with exports every 10-60 s at most one interval per series straddles
    an hour boundary.
  * What a counter adds can never exceed what its node can do in the time it covers: CPU
    seconds at most the node's cores (its capacity reading in the hour, else the most any node
    has) × the interval, bytes sent at most the fastest NIC × the interval (validate.py, with
    its clock slack). An increment above that is cut to it. For a counter's first point the
    interval starts at the later of its start time and the node's previous point before it
    (the previous export): a pod not in that export did not exist then, or the agent was not
    running, so that is the longest it can have run unseen. What is cut is dropped, not
    carried into later intervals (the level a counter is measured from is the highest value it
    reported). Honest counters never reach these bounds; forged ones (a counter "since 1970",
    one high point between real ones) are held to them, and a forged high point can only make
    its tenant's next real increments bill less, never more.
  * The first point of a (series, start time) counts from zero at that start time, so a
    container that lived three seconds between two exports is billed, and so is a pod created
    while the agent was down (its whole usage happened on this node, after its start). Two
    exceptions make that first value a *baseline* (not billed; later deltas count from it),
    because it holds usage from before the ledger watched the node, which no capacity reading
    covers and which would otherwise land, days of it, in the first hour:
      - a whole-node counter (node, all pods) whose first point is more than MAX_GAP_S after
        its start (it starts at boot; it measures no tenant);
      - a pod or container counter whose start is more than MAX_GAP_S before its first point
        AND whose first point came in the node's first export to this ledger (within
        FIRST_EXPORT_SLACK_S of the node's first point ever stored): the pods that already
        ran when the agent was installed or the ledger was created. Their usage before that
        is not billed to anyone. A series first seen in any later export counts from zero;
        a brand-new node (booted less than MAX_GAP_S before its first point) counts from zero
        throughout. A pod created just after the node's first export is not a baseline: the
        slack is far below any export interval (the agent stamps a whole cycle with one time).
        The price of that: a pre-existing pod whose first point misses the node's first export
        (one request of a split first export lost for good) is billed its history in the hour
        it first arrives, as before this rule.
    The node's first point is kept per node (store.node_first_t), the minimum over every point
    ever stored for it, so the rule depends on the set of points only: order, duplicates and
    retention change nothing.
  * A delta-temporality point's value is billed in the hour of its time.
  * A gauge (memory, requests, capacity: levels, sent as UpDownCounters or, by agents before
    semconv v1.44, as gauges; stored as temporality "gauge") holds from its time until the next
    point of its series, for at most MAX_GAP_S; integrating gives byte-hours and core-hours.
    Past the gap the value is unknown and not billed to the tenant: the node's capacity then
    shows it as idle.

Splitting a node (per resource, cpu, memory and gpu; quantities in core-hours / byte-hours /
GPU-hours; a GPU's usage is the GPU-hours its container held it, see build_node_hour)
  * containers: each container's own usage.
  * pod level: a pod's usage above the sum of its containers' (dead containers whose cgroups
    are gone, the pause container): billed to the pod with container "".
  * __unallocated__: all-pods usage (kubepods) above the sum of pods: usage on the node no pod
    was seen for (pods that lived and died between two exports).
  * __overhead__: max(capacity − allocatable, node usage − kubepods usage): the reserved
    capacity, or what the system actually used when it used more than was reserved.
  * __idle__: capacity − overhead − attributed, never negative.
  * If the parts exceed capacity (clock skew between readings, or request-or-usage above
    allocatable) the node's cost for that hour is the parts' sum: usage is never dropped.
Money is integer micro-units; idle takes the rounding remainder, so per node, hour, resource
and model: containers + pods + unallocated + overhead + idle == node, exactly.

Invoice prices (invoice.py): when an imported cloud invoice says what the node cost in the
hour, that replaces capacity × list rate. The invoice's micro-units are split between CPU and
memory in the ratio of their list costs; each resource's node row costs exactly its share and
its parts are priced at share / node quantity, idle taking the rounding, so the rule above
(parts == node) still holds and the node's compute rows add up to the invoice. Network egress
costs nothing in such hours (the invoice holds what the cloud charged for traffic).

Two models are materialised side by side, so reports never recompute from points: `usage`
(what was consumed, priced at the rates) and `ror` (max(request, usage) per container, as
OpenCost). Network egress (direction transmit) is billed per GiB by traffic class to whoever
sent it and is outside the node's compute cost; as for CPU, a pod-level row carries only what
the pod sent beyond its containers' series.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Mapping

from otel_agent.cost.ingest import CUMULATIVE, DELTA, GAUGE, NANOS_PER_SECOND, UNKNOWN, UNMOUNTED
from otel_agent.cost.pricing import Pricing, money_micros, split_node_cost
from otel_agent.gpu import gpu_equivalents, is_gpu_resource, mig_profile_gpus
from otel_agent.cost.validate import (MAX_NODE_CORES, MAX_NODE_HOUR_MICROS, counter_allowance,
                                      rate_bound)

MAX_GAP_S = 300
# Whole-node counters (the machine, all pods) measure no tenant: a first point more than
# MAX_GAP after its start time is a baseline, never usage (see series_quantities).
BASELINE_SCOPES = ("node", "kubepods")
# Pod and container counters are a baseline only when they came in the node's first export.
TENANT_SCOPES = ("container", "pod")
MAX_GAP_NS = MAX_GAP_S * NANOS_PER_SECOND
# One export carries one time for every point (the agent stamps a whole collection cycle);
# the slack allows senders that stamp each resource as they read it, and stays well below any
# export interval, so a pod created between the first and the second export is still billed.
FIRST_EXPORT_SLACK_S = 0.5
FIRST_EXPORT_SLACK_NS = int(FIRST_EXPORT_SLACK_S * NANOS_PER_SECOND)
GIB = 2**30

KIND_CONTAINER, KIND_POD, KIND_UNALLOCATED = "container", "pod", "unallocated"
KIND_OVERHEAD, KIND_IDLE, KIND_NODE = "overhead", "idle", "node"
TENANT_KINDS = (KIND_CONTAINER, KIND_POD)
# kinds whose rows add up to the node row
PART_KINDS = (KIND_CONTAINER, KIND_POD, KIND_UNALLOCATED, KIND_OVERHEAD, KIND_IDLE)


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    series_id: int
    quantity: str
    scope: str
    temporality: str
    pod_uid: str
    container_key: str
    net_class: str
    direction: str
    meta: str
    seen_ns: int
    namespace: str = ""  # the pod's namespace once known (immutable), else UNKNOWN


class LedgerBoundError(ValueError):
    """A node-hour whose figures exceed what any node-hour can hold (validate.py): it is not
    written; the store quarantines it with this message."""


@dataclass(slots=True)
class LedgerRow:
    period_start: int  # seconds since the epoch, UTC hour start
    cluster: str
    node: str
    namespace: str
    workload_kind: str
    workload: str
    pod_uid: str
    pod: str
    container: str
    kind: str
    resource: str  # cpu | memory | gpu | gpu.used | network:<class> | pv:<storage class>
    unit: str  # core-hour | byte-hour | gpu-hour | byte
    usage_qty: float
    request_qty: float
    ror_qty: float
    cost_usage_micros: int
    cost_ror_micros: int
    currency: str


@dataclass(slots=True)
class _PodInfo:
    namespace: str = UNKNOWN
    pod: str = ""
    workload_kind: str = ""
    workload: str = ""
    seen_ns: int = -1
    meta: str = ""
    named: bool = False


def is_baseline(scope: str, start_ns: int, first_ns: int, node_first_ns: int | None) -> bool:
    """Whether the first point (at first_ns) of a counter (series, start) is a baseline."""
    if first_ns - start_ns <= MAX_GAP_NS:
        return False  # the counter began (about) when we first saw it: all of it is billed
    if scope in BASELINE_SCOPES:
        return True
    return (scope in TENANT_SCOPES and node_first_ns is not None
            and first_ns - node_first_ns <= FIRST_EXPORT_SLACK_NS)


def series_quantities(series: Mapping[int, SeriesInfo],
                      points: Iterable[tuple[int, int, int, float]],
                      h0_ns: int, h1_ns: int, node_first_ns: int | None = None,
                      prev_node_ns: Mapping[int, int | None] | None = None) -> dict[int, float]:
    """Per series, its amount in [h0, h1): counter units (s, By) or gauge unit × seconds.

    `points` must hold every point of the node in [h0 − MAX_GAP, h1) and, for counters, the
    last point before h0 of each (series, start) that has a point in the hour. `node_first_ns`
    is the time of the node's first point ever stored (None: not known, no pod baselines).
    `prev_node_ns` maps the time of each counter's first point ever, when it lies in the hour,
    to the time of the node's latest point before it (None: there is none), which bounds how
    long that counter can have run unseen (module docstring).
    """
    by_key: dict[tuple[int, int], list[tuple[int, float]]] = defaultdict(list)
    cores = 0.0
    for sid, start, t, v in points:
        s = series.get(sid)
        if s is None:
            continue
        by_key[(sid, start)].append((t, v))
        if s.quantity == "cpu.capacity" and s.scope == "node" and v > cores:
            cores = v
    cpu_rate = cores if cores > 0 else float(MAX_NODE_CORES)
    prev_node_ns = prev_node_ns or {}
    out: dict[int, float] = defaultdict(float)
    gauges: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for (sid, start), pts in sorted(by_key.items()):  # sorted: the same float sums in any order
        info = series[sid]
        temporality = info.temporality
        if temporality == GAUGE:
            gauges[sid].extend(pts)
            continue
        pts.sort()
        rate = cpu_rate if info.quantity == "cpu" else rate_bound(info.quantity)
        if temporality == DELTA:
            total = 0.0
            for t, v in pts:
                if h0_ns <= t < h1_ns:
                    total += v if rate is None else min(v, counter_allowance(rate, t - start))
            out[sid] += total
            continue
        assert temporality == CUMULATIVE
        level: float | None = None  # the highest value billed up to (see the module docstring)
        prev_t = start
        # pts[0] is the key's first point ever when it lies in the hour (the caller supplies
        # the predecessor otherwise); before the hour it is only a predecessor either way.
        if is_baseline(info.scope, start, pts[0][0], node_first_ns):
            # Usage before the ledger watched the node (see the module docstring): a node's
            # counters since boot, a pre-existing pod's since its creation.
            level, prev_t = pts[0][1], pts[0][0]
        for t, v in pts:
            if level is None:  # the first point of its start time: counts from zero
                since = start
                if h0_ns <= t:
                    before = prev_node_ns.get(t)
                    if before is not None and before > since:
                        since = before
                inc = v
                if rate is not None:
                    inc = min(inc, counter_allowance(rate, t - since))
            else:
                inc = v - level
                if inc <= 0:  # unchanged, or stale or forged: never a reset (module docstring)
                    if h0_ns <= t < h1_ns:
                        out[sid] += 0.0  # the series was there in the hour: it keeps its row
                    prev_t = t
                    continue
                if rate is not None:
                    inc = min(inc, counter_allowance(rate, t - prev_t))
            if h0_ns <= t < h1_ns:
                out[sid] += inc
            # What was cut is dropped, never carried into later intervals: the counter's level
            # is the highest value it reported.
            level = v
            prev_t = t
    for sid, pts in sorted(gauges.items()):
        pts = sorted(set(pts))
        total = 0.0
        for i, (t, v) in enumerate(pts):
            end = t + MAX_GAP_NS
            if i + 1 < len(pts) and pts[i + 1][0] < end:
                end = pts[i + 1][0]
            lo, hi = max(t, h0_ns), min(end, h1_ns)
            if hi > lo:
                total += v * (hi - lo)
        out[sid] += total / NANOS_PER_SECOND
    return out


def build_node_hour(*, hour_s: int, cluster: str, node: str, series: Mapping[int, SeriesInfo],
                    points: Iterable[tuple[int, int, int, float]], pricing: Pricing,
                    node_first_ns: int | None = None,
                    prev_node_ns: Mapping[int, int | None] | None = None,
                    invoice_micros: int | None = None) -> list[LedgerRow]:
    """The rows of one node-hour (see the module docstring). `series` must hold every series
    with a point in `points` and the node's own series (its attributes pick the rates).
    `invoice_micros`: what the cloud invoice says the node cost in this hour (invoice.py); it
    replaces the list rates (_invoice_priced). Raises LedgerBoundError if the hour would hold
    more money than any node-hour can."""
    h0 = hour_s * NANOS_PER_SECOND
    h1 = h0 + 3600 * NANOS_PER_SECOND
    amounts = series_quantities(series, points, h0, h1, node_first_ns, prev_node_ns)

    node_attrs: dict[str, str] = {}
    node_seen = -1
    pods: dict[str, _PodInfo] = defaultdict(_PodInfo)
    container_names: dict[tuple[str, str], tuple[int, str]] = {}
    for s in series.values():
        if s.scope == "node" and s.seen_ns > node_seen:
            node_seen = s.seen_ns
            node_attrs = json.loads(s.meta).get("node_attrs", {})
        if s.pod_uid and s.scope != "claim":  # a claim is no pod (_claim_rows)
            info = pods[s.pod_uid]
            if s.namespace and s.namespace != UNKNOWN:
                info.namespace = s.namespace  # known once, never changes (validated at ingest)
            # The latest metadata that names the pod wins; a later nameless one (API server
            # down) does not unname it.
            m = json.loads(s.meta)
            rank = (bool(m.get("pod")), s.seen_ns, s.meta)
            if rank > (info.named, info.seen_ns, info.meta):
                info.named, info.seen_ns, info.meta = rank
                if info.namespace == UNKNOWN:
                    info.namespace = m.get("namespace") or UNKNOWN
                info.pod = m.get("pod") or s.pod_uid
                info.workload_kind = m.get("workload_kind") or ""
                info.workload = m.get("workload") or ""
            if s.scope == "container":
                key = (s.pod_uid, s.container_key)
                name = json.loads(s.meta).get("container") or s.container_key
                if key not in container_names or (s.seen_ns, name) > container_names[key]:
                    container_names[key] = (s.seen_ns, name)
    for info in pods.values():
        if not info.workload:
            info.workload_kind, info.workload = "pod", info.pod
    rates = pricing.rates_for(node_attrs)

    # Gather amounts per (quantity, scope, pod, container).
    per: dict[str, dict[str, dict[tuple[str, str], float]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    net: dict[tuple[str, str, str], float] = defaultdict(float)  # (pod, container, class) → bytes
    busy: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))  # DCGM, below
    claims: dict[int, float] = {}  # claim series → byte-seconds (pv rows, below)
    for sid, amount in sorted(amounts.items()):
        s = series[sid]
        if s.scope == "claim":
            claims[sid] = amount
            continue
        if s.scope == "gpu":
            # GPU-seconds busy, per ns/pod/container and source: util in percent, engine
            # activity as a ratio, a MIG instance's relative to its share of the GPU
            scale = 0.01 if s.quantity == "gpu.util_percent" else 1.0
            busy[s.container_key][s.quantity] += amount * scale * mig_profile_gpus(s.direction)
            continue
        if s.quantity == "network":
            if s.direction == "transmit":
                net[(s.pod_uid, s.container_key if s.scope == "container" else "", s.net_class or "unclassified")] += amount
            continue
        if s.quantity.startswith("gpu."):
            # device-seconds of one extended resource → whole-GPU-seconds (a MIG slice is a
            # fraction of a GPU); the resource was checked at ingest
            if not is_gpu_resource(s.net_class):
                continue
            amount *= gpu_equivalents(s.net_class)
        per[s.quantity][s.scope][(s.pod_uid, s.container_key)] += amount

    rows: list[LedgerRow] = []
    mem_q = f"memory.{pricing.memory_quantity}"
    specs = []
    for resource, usage_q, request_q, cap_q, alloc_q, unit, scale, rate in (
        ("cpu", "cpu", "cpu.request", "cpu.capacity", "cpu.allocatable", "core-hour",
         1 / 3600, rates.cpu_core_hour),
        ("memory", mem_q, "memory.request", "memory.capacity", "memory.allocatable", "byte-hour",
         1 / 3600, rates.memory_gib_hour / GIB),
        # A GPU is allocated whole to the container that holds it (device plugins hand out
        # devices, not time), so its usage is its allocation: GPU-hours held, at gpu_hour.
        # Capacity − allocatable (GPUs the device plugin marks unhealthy) is overhead; the
        # GPUs no pod holds are idle.
        ("gpu", "gpu.request", "gpu.request", "gpu.capacity", "gpu.allocatable", "gpu-hour",
         1 / 3600, rates.gpu_hour),
    ):
        specs.append((resource, unit, rate, (
            {k: v * scale for k, v in per[usage_q]["container"].items()},
            {k[0]: v * scale for k, v in per[usage_q]["pod"].items()},
            sum(per[usage_q]["kubepods"].values()) * scale if per[usage_q]["kubepods"] else None,
            sum(per[usage_q]["node"].values()) * scale if per[usage_q]["node"] else None,
            {k: v / 3600 for k, v in per[request_q]["container"].items()},
            sum(per[cap_q]["node"].values()) / 3600 if per[cap_q]["node"] else None,
            sum(per[alloc_q]["node"].values()) / 3600 if per[alloc_q]["node"] else None,
            pods, container_names)))
    parts = [_split(hour_s, cluster, node, resource, unit, rate, pricing.currency, *args)
             for resource, unit, rate, args in specs]
    if invoice_micros is not None:
        parts = _invoice_priced(hour_s, cluster, node, pricing.currency, specs, parts,
                                invoice_micros)
    for p in parts:
        rows.extend(p)
    rows.extend(_gpu_used_rows(hour_s, cluster, node, busy, pods, pricing.currency))
    claim_rows = _claim_rows(hour_s, cluster, node, claims, series, pricing)
    if invoice_micros is not None:
        # Under invoice prices a volume's cost is the invoice's disk line (matched to no node:
        # a row of the reconciliation), not the list rate: billing both would count it twice.
        for r in claim_rows:
            r.cost_usage_micros = r.cost_ror_micros = 0
    rows.extend(claim_rows)
    # The agent sends a pod's network both per container and as the pod's total (the sum of
    # its containers, plus dead ones): like CPU, the pod-level row is only what its containers
    # do not account for, or every byte would be billed twice.
    by_pod_containers: dict[tuple[str, str], float] = defaultdict(float)
    for (pod_uid, ckey, cls), nbytes in net.items():
        if ckey:
            by_pod_containers[(pod_uid, cls)] += nbytes
    for (pod_uid, ckey, cls), nbytes in sorted(net.items()):
        if not ckey:
            nbytes -= by_pod_containers.get((pod_uid, cls), 0.0)
        if nbytes <= 0:
            continue
        info = pods[pod_uid]
        # Under invoice prices the invoice holds what the cloud charged for traffic (on the
        # instance's lines, or shared: NAT, load balancers): list rates would bill it twice.
        cost = money_micros(nbytes / GIB, rates.network_rate(cls)) if invoice_micros is None else 0
        rows.append(LedgerRow(hour_s, cluster, node, info.namespace, info.workload_kind,
                              info.workload, pod_uid, info.pod or pod_uid,
                              container_names.get((pod_uid, ckey), (0, ckey))[1] if ckey else "",
                              KIND_CONTAINER if ckey else KIND_POD, f"network:{cls}", "byte",
                              nbytes, 0.0, nbytes, cost, cost, pricing.currency))
    _check_bounds(rows, hour_s, node)
    return rows


def _claim_rows(hour_s: int, cluster: str, node: str, claims: Mapping[int, float],
                series: Mapping[int, SeriesInfo], pricing: Pricing) -> list[LedgerRow]:
    """Persistent volume claims (reported by the one agent with cluster_objects on, on its
    node): GiB-hours of each claim's volume at its storage class's rate, billed to the claim's
    namespace like network egress, on top of the node's compute (the disk is not the node's).
    The workload is the claim while a running pod mounts it, `__unmounted__` in its
    namespace for the hours none does (and so is the container column then); the pod column
    names the claim."""
    rows = []
    for sid, byte_s in sorted(claims.items()):
        s = series[sid]
        if byte_s <= 0:
            continue
        m = json.loads(s.meta)
        byte_h = byte_s / 3600
        cost = money_micros(byte_h / GIB, pricing.storage_rate(s.net_class))
        workload = m.get("workload") or UNMOUNTED
        # the container column tells the two states of one claim apart (reports group a pod's
        # rows by uid and container): "" while mounted, __unmounted__ for the other hours
        rows.append(LedgerRow(hour_s, cluster, node, s.namespace or m.get("namespace") or UNKNOWN,
                              "persistentvolumeclaim", workload, s.pod_uid,
                              m.get("pod") or s.pod_uid, UNMOUNTED if workload == UNMOUNTED else "",
                              KIND_POD, f"pv:{s.net_class}",
                              "byte-hour", byte_h, byte_h, byte_h, cost, cost, pricing.currency))
    return rows


def _gpu_used_rows(hour_s: int, cluster: str, node: str, busy: Mapping[str, Mapping[str, float]],
                   pods: Mapping[str, _PodInfo], currency: str) -> list[LedgerRow]:
    """GPU-hours a pod's GPUs were busy (DCGM), beside the GPU-hours it held: resource
    `gpu.used`, never priced (a GPU is billed whole, busy or not; the difference is the waste).
    Engine activity (DCGM_FI_PROF_GR_ENGINE_ACTIVE) is preferred where both arrive: it measures
    the share of time the GPU worked, where DCGM_FI_DEV_GPU_UTIL counts any kernel running.
    The pod is found by namespace and name among the node's pods in the hour (dcgm-exporter
    does not know its uid); one not found is billed under its names with no uid."""
    by_name = {(p.namespace, p.pod): uid for uid, p in sorted(pods.items()) if p.pod}
    rows = []
    for ckey, sources in sorted(busy.items()):
        ns, pod, container = (ckey.split("/", 2) + ["", ""])[:3]
        seconds = sources.get("gpu.active_ratio", sources.get("gpu.util_percent", 0.0))
        uid = by_name.get((ns, pod), "")
        info = pods[uid] if uid else _PodInfo(namespace=ns, pod=pod, workload_kind="pod",
                                                 workload=pod)
        hours = seconds / 3600
        rows.append(LedgerRow(hour_s, cluster, node, info.namespace, info.workload_kind,
                              info.workload, uid, info.pod or pod, container, KIND_CONTAINER,
                              "gpu.used", "gpu-hour", hours, 0.0, hours, 0, 0, currency))
    return rows


def _check_bounds(rows: list[LedgerRow], hour_s: int, node: str) -> None:
    """Every row's money within what a node-hour can cost (validate.MAX_NODE_HOUR_MICROS), so
    no roll-up or report sum can overflow; and the node's network total too (it is billed on
    top of the node's compute)."""
    net = 0
    for r in rows:
        for micros in (r.cost_usage_micros, r.cost_ror_micros):
            if not -MAX_NODE_HOUR_MICROS <= micros <= MAX_NODE_HOUR_MICROS:
                raise LedgerBoundError(
                    f"{r.resource} {r.kind} row of node {node} at hour {hour_s} costs {micros} "
                    f"micro-units, beyond what a node-hour can cost ({MAX_NODE_HOUR_MICROS})")
        if r.resource.startswith(("network:", "pv:")):
            net += r.cost_usage_micros
    if net > MAX_NODE_HOUR_MICROS:
        raise LedgerBoundError(f"network of node {node} at hour {hour_s} costs {net} micro-units, "
                               f"beyond what a node-hour can cost ({MAX_NODE_HOUR_MICROS})")


def _invoice_priced(hour_s: int, cluster: str, node: str, currency: str, specs: list,
                    list_parts: list[list[LedgerRow]], invoice_micros: int) -> list[list[LedgerRow]]:
    """The node-hour re-split at the invoice's price: the invoice's micro-units are divided
    between the resources (CPU, memory, GPU) in the ratio of their list costs (the node rows just
    built at list rates, through pricing.split_node_cost: OpenCost's rule for custom pricing),
    each resource's rate becomes its share over its node quantity, and its node row costs exactly
    its share (idle takes the rounding), so the node's compute rows add up to the invoice to the
    micro-unit. A node whose resources have no list cost gets it all on CPU."""
    node_rows = {spec[0]: next((r for r in p if r.kind == KIND_NODE), None)
                 for spec, p in zip(specs, list_parts)}
    if all(r is None for r in node_rows.values()):
        return list_parts  # nothing measured on the node this hour: nothing to price
    shares = split_node_cost(invoice_micros, {res: r.cost_usage_micros if r is not None else 0
                                              for res, r in node_rows.items()})
    out: list[list[LedgerRow]] = []
    for resource, unit, _rate, args in specs:
        node_row, share = node_rows[resource], shares.get(resource, 0)
        if node_row is None and share == 0:
            out.append([])
            continue
        qty = Decimal(repr(node_row.usage_qty)) if node_row is not None else Decimal(0)
        rate = Decimal(share) / (qty * 1_000_000) if qty > 0 else Decimal(0)
        out.append(_split(hour_s, cluster, node, resource, unit, rate, currency, *args,
                          node_micros=share))
    return out


def _split(hour_s: int, cluster: str, node: str, resource: str, unit: str, rate: Decimal,
           currency: str, containers: dict[tuple[str, str], float], pod_usage: dict[str, float],
           kubepods: float | None, node_usage: float | None,
           requests: dict[tuple[str, str], float], capacity: float | None,
           allocatable: float | None, pods: Mapping[str, _PodInfo],
           container_names: Mapping[tuple[str, str], tuple[int, str]],
           node_micros: int | None = None) -> list[LedgerRow]:
    rows: list[LedgerRow] = []

    def row(kind: str, pod_uid: str, container: str, usage: float, request: float, ror: float) -> LedgerRow:
        info = pods[pod_uid] if pod_uid else None
        r = LedgerRow(hour_s, cluster, node,
                      info.namespace if info else "", info.workload_kind if info else "",
                      info.workload if info else "", pod_uid,
                      (info.pod or pod_uid) if info else "", container, kind, resource, unit,
                      usage, request, ror, money_micros(usage, rate), money_micros(ror, rate),
                      currency)
        rows.append(r)
        return r

    # containers (a request with no usage series still counts under request-or-usage)
    by_pod_usage: dict[str, float] = defaultdict(float)
    by_pod_ror: dict[str, float] = defaultdict(float)
    for key in sorted(set(containers) | set(requests)):
        pod_uid, ckey = key
        u, req = containers.get(key, 0.0), requests.get(key, 0.0)
        name = container_names.get(key, (0, ckey))[1]
        row(KIND_CONTAINER, pod_uid, name, u, req, max(u, req))
        by_pod_usage[pod_uid] += u
        by_pod_ror[pod_uid] += max(u, req)
    # pod-level remainder
    pods_total_usage = 0.0
    pods_total_ror = 0.0
    for pod_uid in sorted(set(by_pod_usage) | set(pod_usage)):
        cu = by_pod_usage.get(pod_uid, 0.0)
        pu = pod_usage.get(pod_uid, cu)
        rest = max(0.0, pu - cu)
        if rest > 0:
            row(KIND_POD, pod_uid, "", rest, 0.0, rest)
        pods_total_usage += max(pu, cu)
        pods_total_ror += by_pod_ror.get(pod_uid, 0.0) + rest
    # usage seen in kubepods but on no pod
    unalloc = max(0.0, kubepods - pods_total_usage) if kubepods is not None else 0.0
    if unalloc > 0:
        row(KIND_UNALLOCATED, "", "", unalloc, 0.0, unalloc)
    in_pods = pods_total_usage + unalloc
    system = max(0.0, node_usage - in_pods) if node_usage is not None else 0.0
    reserved = max(0.0, capacity - allocatable) if capacity is not None and allocatable is not None else 0.0
    overhead = max(reserved, system)
    if overhead > 0:
        row(KIND_OVERHEAD, "", "", overhead, 0.0, overhead)
    cap = capacity if capacity is not None else (allocatable if allocatable is not None else None)
    parts_usage = in_pods + overhead
    parts_ror = pods_total_ror + unalloc + overhead
    if cap is None:
        # no capacity reported: the node is what was measured on it, nothing idle
        cap = node_usage if node_usage is not None and node_usage > parts_usage else parts_usage
    if not rows and cap <= 0:
        return rows
    idle_usage = max(0.0, cap - parts_usage)
    idle_ror = max(0.0, cap - parts_ror)
    parts_micros_usage = sum(r.cost_usage_micros for r in rows)
    parts_micros_ror = sum(r.cost_ror_micros for r in rows)
    # node_micros: the node's cost when an invoice sets it (_invoice_priced), else capacity × rate
    cap_micros = money_micros(cap, rate) if node_micros is None else node_micros
    node_usage_micros = max(cap_micros, parts_micros_usage)
    node_ror_micros = max(cap_micros, parts_micros_ror)
    idle = row(KIND_IDLE, "", "", idle_usage, 0.0, idle_ror)
    idle.cost_usage_micros = node_usage_micros - parts_micros_usage
    idle.cost_ror_micros = node_ror_micros - parts_micros_ror
    node_row = row(KIND_NODE, "", "", max(cap, parts_usage), 0.0, max(cap, parts_ror))
    node_row.cost_usage_micros = node_usage_micros
    node_row.cost_ror_micros = node_ror_micros
    return rows
