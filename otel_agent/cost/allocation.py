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

The currency is the ledger's: each row carries the one its node-hour was priced in, so a report
opened with other (or default) pricing still labels the money right. A window whose money is in
more than one currency (the pricing's currency changed) is refused, not added up.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

import sqlalchemy as sa

from otel_agent.cost.errors import QueryCancelled, QueryError
from otel_agent.cost.ingest import UNKNOWN
from otel_agent.cost.ledger import (KIND_CONTAINER, KIND_IDLE, KIND_NODE, KIND_OVERHEAD,
                                    KIND_POD, KIND_UNALLOCATED)
from otel_agent.cost.store import LEDGER_TABLES, Store
from otel_agent.cost.types import IDLE, OVERHEAD, UNALLOCATED, Allocation, Model, SharePolicy, Window

AGGREGATES = ("namespace", "workload", "pod", "container", "node", "cluster", "label:<key>")
MONTH = "month"  # a calendar-month step, beside any timedelta
RATIO_CURRENCY = "ratio"
UNLABELED = "__unlabeled__"


@dataclass(slots=True)
class _Fine:
    """One ledger group: a tenant (container or pod level) or a special row, on one node."""

    props: dict[str, str]
    kind: str
    node: str  # cluster/node
    cpu_qty: float = 0.0
    cpu_micros: int = 0
    ram_qty: float = 0.0
    ram_micros: int = 0
    gpu_qty: float = 0.0
    gpu_micros: int = 0
    gpu_used_qty: float = 0.0  # GPU-hours busy (DCGM), beside gpu_qty held
    net_qty: float = 0.0
    net_micros: int = 0
    pv_qty: float = 0.0  # byte-hours of claims' volumes
    pv_micros: int = 0
    shared_micros: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def own_micros(self) -> int:
        return self.cpu_micros + self.ram_micros + self.gpu_micros + self.net_micros + self.pv_micros


def steps(window: Window, step: timedelta | str | None) -> list[Window]:
    if step is None:
        return [window]
    out: list[Window] = []
    t = window.start
    while t < window.end:
        if step == MONTH:
            nxt = datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=timezone.utc)
        elif isinstance(step, timedelta) and step > timedelta(0):
            nxt = t + step
        else:
            raise QueryError(f"step {step!r}: must be a positive duration or 'month'")
        out.append(Window(t, min(nxt, window.end)))
        t = nxt
    return out


def allocations(store: Store, window: Window, *, aggregate: str = "namespace",
                step: timedelta | str | None = None, model: Model = Model.CHARGEBACK,
                share_idle: SharePolicy = SharePolicy.NONE, idle_by_node: bool = False,
                filter: str | None = None, refresh: bool = True,  # noqa: A002
                should_stop: Callable[[], bool] | None = None) -> list[list[Allocation]]:
    """One list of Allocations per step, sorted by total cost (then name), descending.

    `should_stop` (e.g. "the HTTP client went away") is polled before each step's read and
    each step's allocation; when it returns True the query raises QueryCancelled."""
    def check() -> None:
        if should_stop is not None and should_stop():
            raise QueryCancelled("report query stopped: should_stop said so")

    model = Model(model)
    share_idle = SharePolicy(share_idle)
    keyfn = _aggregate_key(aggregate)
    clauses = parse_filter(filter)
    if refresh:
        store.refresh()
    labels = store.pod_labels() if (aggregate.startswith("label:") or
                                     any(c.field.startswith("label[") for c in clauses)) else {}
    loaded = []
    currencies: set[str] = set()
    for w in steps(window, step):
        check()
        loaded.append((w, _load(store, w, model, labels, currencies)))
    if len(currencies) > 1 and model != Model.USAGE:
        raise QueryError(f"the ledger holds money in {' and '.join(sorted(currencies))} within "
                         f"{window.start.isoformat()} - {window.end.isoformat()} (the pricing's "
                         "currency changed): report the periods before and after the change "
                         "separately")
    currency = next(iter(currencies)) if len(currencies) == 1 else store.pricing.currency
    out = []
    for w, fine in loaded:
        check()
        out.append(_allocate(fine, w, currency, keyfn, aggregate, model, share_idle, idle_by_node,
                             clauses))
    return out


def _table_for(w: Window) -> sa.Table:
    def on_day(t: datetime) -> bool:
        return t.hour == 0 and t.minute == 0 and t.second == 0 and t.microsecond == 0

    s, e = w.start.astimezone(timezone.utc), w.end.astimezone(timezone.utc)
    if on_day(s) and on_day(e) and s.day == 1 and e.day == 1:
        return LEDGER_TABLES["month"]
    if on_day(s) and on_day(e):
        return LEDGER_TABLES["day"]
    return LEDGER_TABLES["hour"]


def _load(store: Store, w: Window, model: Model, labels: dict[str, dict[str, str]],
          currencies: set[str]) -> list[_Fine]:
    """The window's rows per tenant and special row; adds the rows' currencies to `currencies`."""
    t = _table_for(w)
    ror = model == Model.REQUEST_OR_USAGE
    qty = t.c.ror_qty if ror else t.c.usage_qty
    cost = t.c.cost_ror_micros if ror else t.c.cost_usage_micros
    group = [t.c.cluster, t.c.node, t.c.namespace, t.c.workload_kind, t.c.workload, t.c.pod_uid,
             t.c.pod, t.c.container, t.c.kind, t.c.resource, t.c.currency]
    q = (sa.select(*group, sa.func.sum(qty), sa.func.sum(cost))
         .where(t.c.period_start >= int(w.start.timestamp()),
                t.c.period_start < int(w.end.timestamp()), t.c.kind != KIND_NODE)
         .group_by(*group))
    fine: dict[tuple, _Fine] = {}
    with store.engine.connect() as c:
        rows = c.execute(q).all()
    money = model != Model.USAGE
    for cluster, node, ns, wk, wl, uid, pod, container, kind, resource, cur, qsum, csum in rows:
        currencies.add(cur)
        key = (cluster, node, uid, container, kind)
        f = fine.get(key)
        if f is None:
            props = {"cluster": cluster or UNKNOWN, "node": node}
            if kind in (KIND_CONTAINER, KIND_POD):
                props.update(namespace=ns or UNKNOWN, controllerKind=wk, controller=wl,
                             pod=pod or uid, pod_uid=uid, container=container)
            f = fine[key] = _Fine(props, kind, f"{cluster}/{node}", labels=labels.get(uid, {}))
        qv, cv = float(qsum or 0.0), int(csum or 0) if money else 0
        if resource == "cpu":
            f.cpu_qty += qv
            f.cpu_micros += cv
        elif resource == "memory":
            f.ram_qty += qv
            f.ram_micros += cv
        elif resource == "gpu":
            f.gpu_qty += qv
            f.gpu_micros += cv
        elif resource == "gpu.used":
            f.gpu_used_qty += qv
        elif resource.startswith("pv:"):
            f.pv_qty += qv
            f.pv_micros += cv
        elif resource.startswith("network:"):
            f.net_qty += qv
            f.net_micros += cv
    return list(fine.values())


def _aggregate_key(aggregate: str) -> Callable[[_Fine], str]:
    a = aggregate
    if a == "namespace":
        return lambda f: f.props["namespace"]
    if a == "workload":
        return lambda f: f"{f.props['namespace']}/{f.props['controller'] or f.props['pod']}"
    if a == "pod":
        return lambda f: f"{f.props['namespace']}/{f.props['pod']}"
    if a == "container":
        return lambda f: f"{f.props['namespace']}/{f.props['pod']}/{f.props['container'] or '__pod__'}"
    if a == "node":
        return lambda f: f.props["node"]
    if a == "cluster":
        return lambda f: f.props["cluster"]
    if a.startswith("label:") and len(a) > len("label:"):
        k = a[len("label:"):]
        return lambda f: f.labels.get(k) or UNLABELED
    raise QueryError(f"aggregate {aggregate!r}: must be one of {', '.join(AGGREGATES)}")


_KEEP_PROPS = {
    "namespace": ("namespace", "cluster"), "workload": ("namespace", "controllerKind", "controller", "cluster"),
    "pod": ("namespace", "controllerKind", "controller", "pod", "pod_uid", "node", "cluster"),
    "container": ("namespace", "controllerKind", "controller", "pod", "pod_uid", "node", "container", "cluster"),
    "node": ("node", "cluster"), "cluster": ("cluster",),
}


def _allocate(fine: list[_Fine], w: Window, currency: str, keyfn: Callable[[_Fine], str],
              aggregate: str, model: Model, share: SharePolicy, by_node: bool,
              clauses: list["_Clause"]) -> list[Allocation]:
    tenants = [f for f in fine if f.kind in (KIND_CONTAINER, KIND_POD)]
    special = [f for f in fine if f.kind not in (KIND_CONTAINER, KIND_POD)]
    # A filter on a property the aggregate keeps is applied after sharing (a tenant's share is
    # its share of the whole cluster, as OpenCost does); other filters select rows first.
    kept = set(_KEEP_PROPS.get(aggregate, ())) | ({"label[" + aggregate[6:] + "]"} if aggregate.startswith("label:") else set())
    pre = [c for c in clauses if c.field not in kept]
    post = [c for c in clauses if c.field in kept]
    if pre:
        tenants = [f for f in tenants if all(c.match(f) for c in pre)]
        special = [f for f in special if all(c.match(f) for c in pre)]
    if share != SharePolicy.NONE and model != Model.USAGE:
        special = _share(tenants, special, keyfn, share, by_node)
    groups: dict[str, Allocation] = {}
    props_of: dict[str, dict[str, str]] = {}
    for f in tenants + special:
        if f.kind in (KIND_CONTAINER, KIND_POD):
            name = keyfn(f)
            props = {k: f.props[k] for k in _KEEP_PROPS.get(aggregate, ()) if k in f.props}
            if aggregate.startswith("label:"):
                props = {aggregate: name}
        else:
            base = {KIND_IDLE: IDLE, KIND_OVERHEAD: OVERHEAD, KIND_UNALLOCATED: UNALLOCATED}[f.kind]
            name = f"{f.props['node']}/{base}" if by_node else base
            props = {"node": f.props["node"], "cluster": f.props["cluster"]} if by_node else {}
        a = groups.get(name)
        if a is None:
            a = groups[name] = Allocation(name=name, window=w, currency=currency)
            props_of[name] = dict(props)
        else:  # keep only properties every member shares
            props_of[name] = {k: v for k, v in props_of[name].items() if props.get(k) == v}
        a.cpu_core_hours += f.cpu_qty
        a.cpu_cost += f.cpu_micros
        a.ram_byte_hours += f.ram_qty
        a.ram_cost += f.ram_micros
        a.gpu_hours += f.gpu_qty
        a.gpu_cost += f.gpu_micros
        a.gpu_used_hours += f.gpu_used_qty
        a.network_bytes += f.net_qty
        a.network_cost += f.net_micros
        a.pv_byte_hours += f.pv_qty
        a.pv_cost += f.pv_micros
        a.shared_cost += f.shared_micros
    result = []
    for name, a in groups.items():
        a.properties = props_of[name]
        if post and not all(c.match_props(a.properties, name) for c in post):
            continue
        result.append(a)
    total = sum(a.cpu_cost + a.ram_cost + a.gpu_cost + a.network_cost + a.pv_cost + a.shared_cost
                for a in groups.values())
    for a in result:
        if model == Model.SHOWBACK_RATIO:
            d = float(total) if total else 1.0
            a.currency = RATIO_CURRENCY
        else:
            d = 1_000_000.0
        a.cpu_cost /= d
        a.ram_cost /= d
        a.gpu_cost /= d
        a.network_cost /= d
        a.pv_cost /= d
        a.shared_cost /= d
    result.sort(key=lambda a: (-a.total_cost, a.name))
    return result


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


def _split_int(total: int, weights: list[int]) -> list[int]:
    """Split an integer in proportion to weights, exactly (largest remainder)."""
    wsum = sum(weights)
    if wsum <= 0:
        return [0] * len(weights)
    base = [total * w // wsum for w in weights]
    rem = total - sum(base)
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % wsum), i))
    for i in order[:rem]:
        base[i] += 1
    return base


# --- filters (a subset of OpenCost's v1 filter language) ---------------------------------------

_FIELDS = {"namespace", "node", "cluster", "pod", "container", "controllerKind", "controller",
           "controllerName"}
_CLAUSE = re.compile(r'^\s*([A-Za-z]+(?:\[[^\]]+\])?)\s*(!?):\s*(.+?)\s*$')


@dataclass(frozen=True, slots=True)
class _Clause:
    field: str
    negate: bool
    values: tuple[str, ...]

    def _value(self, props: dict[str, str], labels: dict[str, str]) -> str | None:
        if self.field.startswith("label["):
            return labels.get(self.field[6:-1])
        return props.get(self.field)

    def match(self, f: _Fine) -> bool:
        v = self._value(f.props, f.labels)
        return (v in self.values) != self.negate if v is not None else self.negate

    def match_props(self, props: dict[str, str], name: str) -> bool:
        if self.field.startswith("label["):
            v = props.get("label:" + self.field[6:-1])
        else:
            v = props.get(self.field)
        return (v in self.values) != self.negate if v is not None else self.negate


def parse_filter(text: str | None) -> list[_Clause]:
    """`namespace:"a","b"+label[team]:"x"+node!:"n1"` → clauses (all must hold)."""
    if not text or not text.strip():
        return []
    out = []
    for part in text.split("+"):
        m = _CLAUSE.match(part)
        if not m:
            raise QueryError(f"filter clause {part!r}: expected field:\"value\"[,\"value\"...]")
        fieldname, neg, vals = m.groups()
        if fieldname == "controllerName":
            fieldname = "controller"
        if fieldname not in _FIELDS and not fieldname.startswith("label["):
            raise QueryError(f"filter field {fieldname!r}: must be one of "
                             f"{', '.join(sorted(_FIELDS))} or label[key]")
        values = tuple(v.strip().strip('"') for v in vals.split(","))
        if not all(values):
            raise QueryError(f"filter clause {part!r}: empty value")
        out.append(_Clause(fieldname, neg == "!", values))
    return out


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
    t = LEDGER_TABLES["hour"]
    cost = t.c.cost_ror_micros if Model(model) == Model.REQUEST_OR_USAGE else t.c.cost_usage_micros
    q = (sa.select(t.c.cluster, t.c.node, t.c.kind, sa.func.sum(cost))
         .where(t.c.period_start >= int(window.start.timestamp()),
                t.c.period_start < int(window.end.timestamp()),
                sa.not_(t.c.resource.like("network:%")), sa.not_(t.c.resource.like("pv:%")))
         .group_by(t.c.cluster, t.c.node, t.c.kind))
    acc: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with store.engine.connect() as c:
        for cluster, node, kind, s in c.execute(q):
            acc[(cluster, node)][kind] += int(s or 0)
    return [Reconciliation(cluster, node, k[KIND_CONTAINER] + k[KIND_POD], k[KIND_UNALLOCATED],
                           k[KIND_OVERHEAD], k[KIND_IDLE], k[KIND_NODE])
            for (cluster, node), k in sorted(acc.items())]


def parse_aggregate(text: str) -> str:
    _aggregate_key(text)
    return text


__all__ = ["allocations", "reconcile", "Reconciliation", "parse_filter", "steps", "MONTH",
           "AGGREGATES", "RATIO_CURRENCY"]

