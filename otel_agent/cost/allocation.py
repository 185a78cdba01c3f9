"""Allocation queries: ledger rows → `Allocation`s per aggregate and step, under a cost model
and an idle-sharing policy. The report renderers (table, CSV, JSON, FOCUS, HTTP, HTML) only
ever see the result of `allocations()`.

Why the models differ only here: the ledger stores, per row, usage and max(request, usage)
quantities and their prices side by side, so switching model is choosing columns, and a
report over a year reads the monthly roll-up instead of points.

Models (README "Allocation models" has them on one worked example):
  usage             quantities consumed; no money. Idle and overhead appear as quantities.
  request-or-usage  max(request, usage) per container-hour at the rates (OpenCost's rule);
                    idle is capacity minus that.
  chargeback        usage at the node's rates: money. Idle/overhead shared by policy.
  showback-ratio    the chargeback figures divided by the step's total: every cost field is a
                    fraction of the cluster, the step's rows sum to 1 (currency "ratio").

Sharing (`share_idle`) of __idle__ and __overhead__: `none` keeps them as rows;
`proportional` spreads them over the tenants in proportion to their cost; `even` splits them
equally between the tenants. Shared rows are gone from the result (only a pool with nobody to
share it with stays, on __idle__). With `idle_by_node` the pools are per node and go to the tenants
on that node; otherwise one cluster-wide pool per step. __unallocated__ (usage no pod was seen
for) is never shared: it stays visible. Money is shared in integer micro-units by largest
remainder, so sharing never creates or loses a micro-unit.

Rows of a step come from the coarsest roll-up whose periods tile the step: a step on calendar
month boundaries reads ledger_monthly, on day boundaries ledger_daily, else ledger_hourly (an
hour belongs to a step when the hour starts inside it).

Aggregation follows OpenCost (AllocationSet.AggregateBy), with its grammar from grammar.py:
idle is shared over every tenant first, then the filter drops tenants (so a tenant's share is
its share of the whole cluster), then each tenant is named by the aggregate keys (`/`-joined)
and merged; an allocation keeps the properties, labels and annotations all its members agree
on. The ledger is read through typed Store methods only: no SQL here.

The currency is the ledger's: each row carries the one its node-hour was priced in, so a report
opened with other (or default) pricing still labels the money right. A window whose money is in
more than one currency (the pricing's currency changed) is refused, not added up.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping

from otel_agent.cost import grammar
from otel_agent.cost.components import COST_FIELDS
from otel_agent.cost.errors import QueryCancelled, QueryError
from otel_agent.cost.ingest import UNKNOWN
from otel_agent.cost.ledger import (KIND_CONTAINER, KIND_IDLE, KIND_NODE, KIND_OVERHEAD,
                                    KIND_POD, KIND_UNALLOCATED)
from otel_agent.cost.pricing import split_micros as _split_int
from otel_agent.cost.store import Store
from otel_agent.cost.types import IDLE, OVERHEAD, UNALLOCATED, Allocation, Model, SharePolicy, Window
from otel_agent.cost.window import MONTH, split

RATIO_CURRENCY = "ratio"
TENANT_KINDS = (KIND_CONTAINER, KIND_POD)
# ledger resource -> the component whose fields it fills
_RESOURCE_FIELDS = {"cpu": ("cpu_core_hours", "cpu_cost"), "memory": ("ram_byte_hours", "ram_cost"),
                    "gpu": ("gpu_hours", "gpu_cost"),
                    "gpu.used": ("gpu_used_hours", None)}  # DCGM: shown, never priced
_PV_FIELDS = ("pv_byte_hours", "pv_cost")  # resource pv:<storage class>
_NETWORK_FIELDS = ("network_bytes", "network_cost")
_EMPTY: Mapping[str, str] = {}


@dataclass(slots=True)
class _Fine:
    """One ledger group: a tenant (container or pod level) or a special row, on one node."""

    props: dict[str, str]  # OpenCost's property names (grammar.Subject)
    kind: str
    node: str  # cluster/node
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    qty: dict[str, float] = field(default_factory=dict)  # Allocation quantity field -> sum
    micros: dict[str, int] = field(default_factory=dict)  # Allocation cost field -> sum
    shared_micros: int = 0
    name: str = ""  # the allocation it goes to, set once per step (aggregate or special name)

    @property
    def own_micros(self) -> int:
        return sum(self.micros.values())

    def subject(self) -> grammar.Subject:
        return grammar.Subject(self.props, self.labels, self.annotations)


def steps(window: Window, step: timedelta | str | None) -> list[Window]:
    """The query's steps (window.split, the one splitter); kept as this module's name for it."""
    return split(window, step)


def allocations(store: Store, window: Window, *, aggregate: str = "namespace",
                step: timedelta | str | None = None, model: Model = Model.CHARGEBACK,
                share_idle: SharePolicy = SharePolicy.NONE, idle_by_node: bool = False,
                filter: str | None = None, refresh: bool = True,  # noqa: A002
                should_stop: Callable[[], bool] | None = None) -> list[list[Allocation]]:
    """One list of Allocations per step, sorted by total cost (then name), descending.

    `aggregate` and `filter` are OpenCost's grammar (otel_agent.cost.grammar).
    `should_stop` (e.g. "the HTTP client went away") is polled before each step's read and
    each step's allocation; when it returns True the query raises QueryCancelled."""
    def check() -> None:
        if should_stop is not None and should_stop():
            raise QueryCancelled("report query stopped: should_stop said so")

    model = Model(model)
    share_idle = SharePolicy(share_idle)
    keys = grammar.aggregate_keys(aggregate)
    tree = grammar.parse_filter(filter)
    if refresh:
        store.refresh()
    labels = store.pod_labels()
    annotations = store.pod_annotations()
    loaded = []
    currencies: set[str] = set()
    by_cluster: dict[str, set[str]] = defaultdict(set)  # cluster -> its rows' currencies
    for w in steps(window, step):
        check()
        loaded.append((w, _load(store, w, model, labels, annotations, currencies, by_cluster)))
    if len(currencies) > 1 and tree is not None:
        # Clusters priced in different currencies (pricing.py `clusters:`): a filter whose
        # tenants are all in clusters of one currency reports in it; the other clusters'
        # rows (their idle, their overhead) are left out, each cluster a ledger of its own.
        kept = {f.props["cluster"] for _w, fine in loaded for f in fine
                if f.kind in (KIND_CONTAINER, KIND_POD) and grammar.matches(tree, f.subject())}
        loaded = [(w, [f for f in fine if f.props["cluster"] in kept]) for w, fine in loaded]
        currencies = set().union(*(by_cluster[c] for c in kept)) if kept else currencies
    if len(currencies) > 1 and model != Model.USAGE:
        raise QueryError(f"the ledger holds money in {' and '.join(sorted(currencies))} within "
                         f"{window.start.isoformat()} - {window.end.isoformat()} (clusters priced "
                         "in different currencies, or the pricing's currency changed): report "
                         "each cluster (filter=cluster:\"name\") or the periods before and after "
                         "the change separately")
    currency = next(iter(currencies)) if len(currencies) == 1 else store.pricing.currency
    out = []
    for w, fine in loaded:
        check()
        out.append(_allocate(fine, w, currency, keys, model, share_idle, idle_by_node, tree))
    return out


def grain_for(w: Window) -> str:
    """The coarsest roll-up whose periods tile the step: month, day or hour."""
    def on_day(t: datetime) -> bool:
        return t.hour == 0 and t.minute == 0 and t.second == 0 and t.microsecond == 0

    s, e = w.start.astimezone(timezone.utc), w.end.astimezone(timezone.utc)
    if on_day(s) and on_day(e) and s.day == 1 and e.day == 1:
        return "month"
    if on_day(s) and on_day(e):
        return "day"
    return "hour"


def _load(store: Store, w: Window, model: Model, labels: dict[str, dict[str, str]],
          annotations: dict[str, dict[str, str]], currencies: set[str],
          by_cluster: dict[str, set[str]] | None = None) -> list[_Fine]:
    """The window's rows per tenant and special row; adds the rows' currencies to `currencies`
    (and to `by_cluster`, per cluster)."""
    fine: dict[tuple, _Fine] = {}
    money = model != Model.USAGE
    for (cluster, node, namespace, workload_kind, workload, pod_uid, pod, container, kind,
         resource, currency, quantity, cost_micros) in store.ledger_groups(
            w.start, w.end, grain=grain_for(w), request_or_usage=model == Model.REQUEST_OR_USAGE):
        if kind == KIND_NODE:
            continue
        currencies.add(currency)
        if by_cluster is not None:
            by_cluster[cluster or UNKNOWN].add(currency)
        key = (cluster, node, pod_uid, container, kind)
        f = fine.get(key)
        if f is None:
            props = {"cluster": cluster or UNKNOWN, "node": node}
            if kind in TENANT_KINDS:
                props["namespace"] = namespace or UNKNOWN
                props["pod"] = pod or pod_uid
                if workload and workload_kind != KIND_POD:  # the ledger's bare-pod marker
                    props["controllerKind"] = workload_kind
                    props["controller"] = workload
                if container:
                    props["container"] = container
            f = fine[key] = _Fine(props, kind, f"{cluster}/{node}",
                                  labels=labels.get(pod_uid, _EMPTY),
                                  annotations=annotations.get(pod_uid, _EMPTY))
        fields = _RESOURCE_FIELDS.get(resource)
        if fields is None:
            if resource.startswith("pv:"):
                fields = _PV_FIELDS
            elif not resource.startswith("network:"):
                continue  # a resource no component prices yet
            else:
                fields = _NETWORK_FIELDS
        qf, cf = fields
        f.qty[qf] = f.qty.get(qf, 0.0) + quantity
        if money and cf is not None:
            f.micros[cf] = f.micros.get(cf, 0) + cost_micros
    return list(fine.values())


def _special_name(f: _Fine, by_node: bool) -> str:
    base = {KIND_IDLE: IDLE, KIND_OVERHEAD: OVERHEAD, KIND_UNALLOCATED: UNALLOCATED}[f.kind]
    return f"{f.props['node']}/{base}" if by_node else base


def _allocate(fine: list[_Fine], w: Window, currency: str, keys: tuple[str, ...], model: Model,
              share: SharePolicy, by_node: bool, tree: grammar.Node | None) -> list[Allocation]:
    """OpenCost's order (AllocationSet.AggregateBy): share idle over every tenant, then drop
    the tenants the filter refuses, then name each by the aggregate and merge, keeping the
    properties, labels and annotations every member agrees on."""
    tenants = [f for f in fine if f.kind in TENANT_KINDS]
    special = [f for f in fine if f.kind not in TENANT_KINDS]
    for f in tenants:
        f.name = grammar.key_name(keys, f.subject())
    for f in special:
        f.name = _special_name(f, by_node)
    if share != SharePolicy.NONE and model != Model.USAGE:
        special = _share(tenants, special, lambda t: t.name, share, by_node)
    if tree is not None:
        tenants = [f for f in tenants if grammar.matches(tree, f.subject())]
        special = [f for f in special if grammar.matches(tree, f.subject())]
    groups: dict[str, Allocation] = {}
    for f in tenants + special:
        name = f.name
        a = groups.get(name)
        if a is None:
            # shared, never mutated: an intersection below makes a new mapping
            a = groups[name] = Allocation(name=name, window=w, currency=currency,
                                          properties=f.props, labels=f.labels,
                                          annotations=f.annotations)
        else:  # keep only what every member shares (OpenCost's Intersection)
            a.properties = _common(a.properties, f.props)
            a.labels = _common(a.labels, f.labels)
            a.annotations = _common(a.annotations, f.annotations)
        for qf, v in f.qty.items():
            setattr(a, qf, getattr(a, qf) + v)
        for cf, v in f.micros.items():
            setattr(a, cf, getattr(a, cf) + v)
        a.shared_cost += f.shared_micros
    result = list(groups.values())
    total = sum(a.total_cost for a in result)
    for a in result:
        if model == Model.SHOWBACK_RATIO:
            d = float(total) if total else 1.0
            a.currency = RATIO_CURRENCY
        else:
            d = 1_000_000.0
        for cf in COST_FIELDS:
            setattr(a, cf, getattr(a, cf) / d)
    result.sort(key=lambda a: (-a.total_cost, a.name))
    return result


def _common(a: Mapping[str, str], b: Mapping[str, str]) -> Mapping[str, str]:
    """What `a` and `b` agree on; `a` itself when that is all of it (mappings here are never
    mutated), so the running intersection of a group costs the size of what is left."""
    if a is b or not a:
        return a
    out = {k: v for k, v in a.items() if b.get(k) == v}
    return a if len(out) == len(a) else out


def _share(tenants: list[_Fine], special: list[_Fine], keyfn: Callable[[_Fine], str],
           share: SharePolicy, by_node: bool) -> list[_Fine]:
    """Move idle and overhead money onto tenants; returns the special rows left over:
    __unallocated__ (never shared) and the idle and overhead rows of a pool that had no tenant
    to go to, unchanged. A shared row is dropped: its money is in the tenants' sharedCost."""
    left: list[_Fine] = []
    pools: dict[str, int] = defaultdict(int)
    parked: dict[str, list[_Fine]] = defaultdict(list)
    for f in special:
        if f.kind in (KIND_IDLE, KIND_OVERHEAD):
            scope = f.node if by_node else ""
            pools[scope] += f.own_micros
            parked[scope].append(f)
        else:
            left.append(f)
    for scope, pool in pools.items():
        members = [t for t in tenants if not by_node or t.node == scope]
        if not members:
            # nobody to share with: the money stays where it was, visible
            left.extend(f for f in parked[scope] if f.own_micros)
            continue
        if share == SharePolicy.PROPORTIONAL:
            weights = [max(0, t.own_micros) for t in members]
            if sum(weights) == 0:
                weights = [1] * len(members)
        else:  # even: each aggregate gets the same, split among its members by cost
            by_group: dict[str, list[int]] = defaultdict(list)
            for i, t in enumerate(members):
                by_group[keyfn(t)].append(i)
            per_group = _split_int(pool, [1] * len(by_group))
            for (g, idx), amount in zip(sorted(by_group.items()), per_group):
                inner = _split_int(amount, [max(1, members[i].own_micros) for i in idx])
                for i, part in zip(idx, inner):
                    members[i].shared_micros += part
            continue
        for t, part in zip(members, _split_int(pool, weights)):
            t.shared_micros += part
    return left




# --- reconciliation ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reconciliation:
    """Per node (and per model) over a window: the parts and the node's cost, in micro-units."""

    cluster: str
    node: str
    allocated_micros: int  # containers + pod level
    unallocated_micros: int
    overhead_micros: int
    idle_micros: int
    node_micros: int

    @property
    def balanced(self) -> bool:
        return (self.allocated_micros + self.unallocated_micros + self.overhead_micros
                + self.idle_micros) == self.node_micros


def reconcile(store: Store, window: Window, *, model: Model = Model.CHARGEBACK,
              refresh: bool = True) -> list[Reconciliation]:
    """allocated + unallocated + overhead + idle vs the node's cost, per node, exactly."""
    if refresh:
        store.refresh()
    acc: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in store.compute_cost_by_kind(window.start, window.end,
                                        request_or_usage=Model(model) == Model.REQUEST_OR_USAGE):
        acc[(r.cluster, r.node)][r.kind] += r.cost_micros
    return [Reconciliation(cluster, node, k[KIND_CONTAINER] + k[KIND_POD], k[KIND_UNALLOCATED],
                           k[KIND_OVERHEAD], k[KIND_IDLE], k[KIND_NODE])
            for (cluster, node), k in sorted(acc.items())]


def parse_aggregate(text: str) -> str:
    """grammar.parse_aggregate (kept under this name for callers of this module)."""
    return grammar.parse_aggregate(text)


__all__ = ["allocations", "reconcile", "Reconciliation", "steps", "grain_for", "MONTH",
           "RATIO_CURRENCY"]
