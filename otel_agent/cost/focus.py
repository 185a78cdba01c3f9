"""Allocations as a FinOps FOCUS Cost and Usage dataset (CSV), so the ledger loads into any
FOCUS-reading FinOps tool next to the cloud provider's own bill without counting it twice.

Why these choices (README "Reports" says the same for users):

- **We split a bill; we do not issue one.** The money in this export is the cluster's cost (at
  the configured rates) split to tenants. The nodes were invoiced by someone else: the cloud
  provider, or whoever owns the machines. FOCUS reserves BilledCost for the invoice issuer
  (1.2: "BilledCost MUST be 0 for charges where payments are received by a third party"; the
  sum per InvoiceId must equal the invoice; the current spec text: entities not responsible for
  invoicing a charge MUST NOT give it a non-zero BilledCost, so that merged datasets do not count
  it twice). So **BilledCost is 0 and InvoiceId is null on every row**, and the money is in
  EffectiveCost, with ListCost = ContractedCost = EffectiveCost (our rates, no discounts).
  A future invoice import fills `Charge.billed_cost`/`invoice_id` for rows that are invoiced.
- **One row per allocation, step and cost component** (`COMPONENTS`). FOCUS rows are charges
  for one thing priced in one unit, so a row per tenant could not carry PricingQuantity/Unit
  honestly. Components with no cost and no quantity are left out.
- **FOCUS 1.3's split cost allocation is the model**, for both versions. The origin charge is
  one component of the cluster in one step (ResourceId `k8s://<cluster>`); its allocated
  charges are the tenants, `__unallocated__`, `__overhead__` and `__idle__` (1.3 allows rows
  for unused capacity when the method documents them). Every dimension column of an allocated
  charge equals the origin's (so the tenant is never in ChargeDescription or Tags under 1.3),
  and the allocated charges add up to the origin. The tenant is in AllocatedResourceId /
  AllocatedResourceName / AllocatedTags; AllocatedMethodId names the model and idle policy and
  AllocatedMethodDetails gives each row's AllocatedRatio of its origin.
- **1.2 (the default) has no Allocated\\* columns**: they are written as custom `x_` columns,
  and the tenant's properties go in Tags, where a 1.2 reader looks for them. 1.2 is the default
  because the FinOps Foundation's validator (`focus-validator`) checks 1.2 and not yet 1.3, and
  `make test` runs it on every report shape.
- **Shared idle and overhead** (`--share-idle proportional|even`) reach a tenant as money only
  (the ledger does not split a tenant's share by resource), so they are a `shared` row whose
  quantity is the tenant's fraction of the step's shared pool (unit `Shares`; a step's Shares add
  up to 1). A filtered report cannot see the whole pool: there AllocatedRatio is unknown
  (AllocatedMethodDetails is null) and shared rows are refused.
- **Tags** follow FOCUS's tag rules: our own keys carry the provider prefix `otel-agent/`, pod
  label values (`--by label:<key>`) are the user's tags and keep their key unprefixed.
- **Columns are a table** (`_COLUMNS`): each says which FOCUS version defines it, whether it is
  a dimension or a metric, and how a charge fills it. A new cost component (GPU, persistent
  volumes) is one row of `components.COMPONENTS`, shared by every format; a new column is one row of `_COLUMNS`.
- Dates are `YYYY-MM-DDTHH:MM:SSZ`, decimals plain with a point (`0.0`, no exponent), nulls
  empty cells.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator, Mapping, Sequence

from otel_agent.cost.components import COMPONENTS, Component
from otel_agent.cost.report import ReportQuery, _num, csv_safe, special_kind
from otel_agent.cost.types import IDLE, OVERHEAD, UNALLOCATED, Allocation, Model
from otel_agent.errors import ConfigError

FOCUS_VERSIONS = ("1.2", "1.3")
DEFAULT_FOCUS_VERSION = "1.2"
FOCUS_VERSION_HELP = (
    "FOCUS version of --format focus: 1.2 (default) or 1.3. 1.2 is the default because the "
    "FinOps Foundation's validator checks 1.2 (make test runs it on every report shape) and not "
    "yet 1.3; 1.3 adds the split-cost-allocation columns (Allocated*) that 1.2 gets as x_ columns")

# Provider capabilities this dataset has, in the FOCUS requirements model's terms. The validator
# checks the rules conditional on them (`focus-validator --applicability-criteria`).
APPLICABILITY_CRITERIA = (
    "ACCOUNT_NAMING_SUPPORTED",  # BillingAccountName
    "BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED",  # ResourceId/Name: the cluster
    "RESOURCE_TYPE_ASSIGNMENT_SUPPORTED",  # ResourceType
    "SUB_ACCOUNT_SUPPORTED",  # SubAccountId/Name
    "TAGGING_SUPPORTED",  # Tags
    "USAGE_MEASUREMENT_SUPPORTED",  # ConsumedQuantity/Unit
)

TAG_PREFIX = "otel-agent/"  # FOCUS: provider-defined tag keys carry a provider prefix
SHARES = "Shares"
_ISO_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True, slots=True)
class FocusOptions:
    """Who is who. Defaults suit a cluster whose machines the platform team runs itself."""

    version: str = DEFAULT_FOCUS_VERSION
    billing_account_id: str | None = None  # default: the cluster name
    billing_account_name: str | None = None
    service_provider: str = "Kubernetes"  # the platform offering: ProviderName, PublisherName
    host_provider: str | None = None  # who runs the machines, e.g. "AWS"; default: the above
    invoice_issuer: str | None = None  # who invoices the machines; default: the host provider
    cluster: str = "cluster"  # for rows whose ledger rows name no cluster


@dataclass(frozen=True, slots=True)
class Charge:
    """One allocated charge: an allocation's component in one step, before it becomes a row."""

    a: Allocation
    comp: Component
    cluster: str
    cost: float  # EffectiveCost = ListCost = ContractedCost
    quantity: float
    ratio: float | None  # AllocatedRatio: share of its origin charge (None: not knowable)
    q: ReportQuery | None
    opts: FocusOptions
    billed_cost: float = 0.0  # we issue no invoice (module docstring); an invoice import would
    invoice_id: str | None = None


DIMENSION, METRIC = "dimension", "metric"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: str  # DIMENSION or METRIC: a split's dimensions equal the origin's, metrics add up
    value: Callable[[Charge], str | None]
    since: str = "1.0"  # the FOCUS version that defines it
    earlier: str | None = "x_"  # in older versions: written with this prefix, or left out (None)
    allocation: bool = False  # describes the allocated resource, not the origin charge


def _decimal(x: float) -> str:
    # Plain decimal with a point: a column of bare integers ("0") is read as an integer type by
    # FOCUS readers that infer types, and FOCUS metrics are of type Decimal.
    s = _num(x)
    return s if "." in s else s + ".0"


def _cost(c: Charge) -> str:
    return _decimal(c.cost)


def _qty(c: Charge) -> str:
    return _decimal(c.quantity)


_COLUMNS: tuple[Column, ...] = (
    Column("AllocatedMethodDetails", DIMENSION, lambda c: _method_details(c), "1.3", allocation=True),
    Column("AllocatedMethodId", DIMENSION, lambda c: method_id(c.q), "1.3", allocation=True),
    Column("AllocatedResourceId", DIMENSION, lambda c: _allocated_id(c), "1.3", allocation=True),
    Column("AllocatedResourceName", DIMENSION, lambda c: c.a.name, "1.3", allocation=True),
    Column("AllocatedTags", DIMENSION, lambda c: _tags(c.a.flat_properties()), "1.3", allocation=True),
    Column("BilledCost", METRIC, lambda c: _decimal(c.billed_cost)),
    Column("BillingAccountId", DIMENSION, lambda c: _account(c)),
    Column("BillingAccountName", DIMENSION, lambda c: c.opts.billing_account_name or _account(c)),
    Column("BillingCurrency", DIMENSION, lambda c: c.a.currency),
    Column("BillingPeriodEnd", DIMENSION, lambda c: _ts(_billing_period(c.a.window.start)[1])),
    Column("BillingPeriodStart", DIMENSION, lambda c: _ts(_billing_period(c.a.window.start)[0])),
    Column("ChargeCategory", DIMENSION, lambda c: "Usage"),
    Column("ChargeClass", DIMENSION, lambda c: None),  # not a correction
    Column("ChargeDescription", DIMENSION, lambda c: _describe(c)),
    Column("ChargeFrequency", DIMENSION, lambda c: "Usage-Based"),
    Column("ChargePeriodEnd", DIMENSION, lambda c: _ts(c.a.window.end)),
    Column("ChargePeriodStart", DIMENSION, lambda c: _ts(c.a.window.start)),
    Column("ConsumedQuantity", METRIC, _qty),
    Column("ConsumedUnit", DIMENSION, lambda c: c.comp.unit),
    Column("ContractedCost", METRIC, _cost),
    Column("EffectiveCost", METRIC, _cost),
    Column("HostProviderName", DIMENSION, lambda c: _host(c.opts), "1.3"),
    Column("InvoiceId", DIMENSION, lambda c: c.invoice_id, "1.2"),
    Column("InvoiceIssuerName", DIMENSION, lambda c: c.opts.invoice_issuer or _host(c.opts)),
    Column("ListCost", METRIC, _cost),
    Column("PricingQuantity", METRIC, _qty),
    Column("PricingUnit", DIMENSION, lambda c: c.comp.unit),
    Column("ProviderName", DIMENSION, lambda c: c.opts.service_provider),
    Column("PublisherName", DIMENSION, lambda c: c.opts.service_provider),
    Column("ResourceId", DIMENSION, lambda c: f"k8s://{c.cluster}"),
    Column("ResourceName", DIMENSION, lambda c: c.cluster),
    Column("ResourceType", DIMENSION, lambda c: "Kubernetes Cluster"),
    Column("ServiceCategory", DIMENSION, lambda c: "Compute"),
    Column("ServiceName", DIMENSION, lambda c: "Kubernetes"),
    # 1.3 renames ProviderName; in 1.2 it would only repeat ProviderName, so it is left out
    Column("ServiceProviderName", DIMENSION, lambda c: c.opts.service_provider, "1.3", None),
    Column("ServiceSubcategory", DIMENSION, lambda c: "Containers"),
    Column("SubAccountId", DIMENSION, lambda c: _account(c)),
    Column("SubAccountName", DIMENSION, lambda c: c.cluster),
    # 1.3: the origin charge's tags (none: a cluster has no tags we know of); 1.2 has no
    # AllocatedTags, so there the tenant's tags are the row's tags
    Column("Tags", DIMENSION, lambda c: (_tags(c.a.flat_properties()) if c.opts.version == "1.2"
                                         else None)),
    Column("x_CostComponent", DIMENSION, lambda c: c.comp.key),
)


def columns(version: str = DEFAULT_FOCUS_VERSION) -> tuple[tuple[str, Column], ...]:
    """(header, column) for a version: FOCUS columns first, then custom ones, each sorted."""
    _check_version(version)
    out = []
    for col in _COLUMNS:
        if col.name.startswith("x_") or _vkey(version) >= _vkey(col.since):
            out.append((col.name, col))
        elif col.earlier is not None:
            out.append((col.earlier + col.name, col))
    return tuple(sorted(out, key=lambda hc: (hc[0].startswith("x_"), hc[0])))


def header(version: str = DEFAULT_FOCUS_VERSION) -> tuple[str, ...]:
    return tuple(h for h, _ in columns(version))


# FOCUS mandatory columns per version: the tests check every one is written.
MANDATORY = {
    "1.2": ("BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
            "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass",
            "ChargeDescription", "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost",
            "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingQuantity", "PricingUnit",
            "ProviderName", "PublisherName", "ServiceCategory", "ServiceName"),
    "1.3": ("BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
            "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass",
            "ChargeDescription", "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost",
            "EffectiveCost", "HostProviderName", "InvoiceIssuerName", "ListCost",
            "PricingQuantity", "PricingUnit", "ServiceCategory", "ServiceName",
            "ServiceProviderName"),
}


def method_id(q: ReportQuery | None) -> str:
    if q is None:
        return "otel-agent"
    return (f"otel-agent/{q.model.value}/share-idle={q.share_idle.value}"
            + ("/idle-by-node" if q.idle_by_node else ""))


def charges(sets: Sequence[Sequence[Allocation]], q: ReportQuery | None = None,
            opts: FocusOptions = FocusOptions()) -> Iterator[Charge]:
    """Every allocated charge, step by step, with its share of its origin charge."""
    filtered = q is not None and bool(q.filter)
    for s in sets:
        named = {a.properties.get("cluster") for a in s} - {None, ""}
        default_cluster = named.pop() if len(named) == 1 else opts.cluster
        staged: list[tuple[Allocation, Component, str, float, float]] = []
        for a in sorted(s, key=lambda a: (special_kind(a.name) is not None, a.name)):
            cluster = a.properties.get("cluster") or default_cluster
            for comp in COMPONENTS:
                cost = float(getattr(a, comp.cost_field))
                qty = getattr(a, comp.quantity_field) / comp.divisor if comp.quantity_field else 0.0
                if not cost and not qty:
                    continue
                staged.append((a, comp, cluster, cost, qty))
        # the origin charge of each row: one component of one cluster in this step
        totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for a, comp, cluster, cost, qty in staged:
            t = totals[(cluster, comp.key)]
            t[0] += cost
            t[1] += qty
        for a, comp, cluster, cost, qty in staged:
            tc, tq = totals[(cluster, comp.key)]
            ratio = None if filtered else (cost / tc if tc else (qty / tq if tq else None))
            if comp.quantity_field is None:  # a share of the pool: its own quantity
                if ratio is None:
                    raise ConfigError("format focus: a filtered report cannot say what fraction "
                                      "of the shared idle and overhead a tenant got; use "
                                      "--share-idle none with --filter, or no filter")
                qty = ratio
            yield Charge(a=a, comp=comp, cluster=cluster, cost=cost, quantity=qty,
                         ratio=ratio, q=q, opts=opts)


def rows(sets: Sequence[Sequence[Allocation]], q: ReportQuery | None = None,
         opts: FocusOptions = FocusOptions()) -> Iterator[dict[str, str]]:
    cols = columns(opts.version)
    for c in charges(sets, q, opts):
        yield {h: _cell(col.value(c)) for h, col in cols}


def render_focus(sets: Sequence[Sequence[Allocation]], q: ReportQuery | None = None,
                 opts: FocusOptions = FocusOptions()) -> str:
    _check_version(opts.version)
    if (q is not None and q.model == Model.SHOWBACK_RATIO) or any(
            not _ISO_CURRENCY.match(a.currency) for s in sets for a in s):
        raise ConfigError("format focus needs money in an ISO 4217 currency; showback-ratio "
                          "gives shares of the cluster. Allowed models for focus: chargeback, "
                          "request-or-usage, usage")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header(opts.version), lineterminator="\n")
    w.writeheader()
    for r in rows(sets, q, opts):
        w.writerow(csv_safe(r))
    return buf.getvalue()


def origin_key(row: dict[str, str], version: str = DEFAULT_FOCUS_VERSION) -> tuple[str, ...]:
    """The origin charge a written row was split from: its dimension columns, less those that
    describe the allocated resource (and, in 1.2, the tenant's Tags)."""
    out = []
    for h, col in columns(version):
        if col.kind == DIMENSION and not col.allocation and not (
                col.name == "Tags" and version == "1.2"):
            out.append(row[h])
    return tuple(out)


# --- cell values ----------------------------------------------------------------------------


def _cell(v: str | None) -> str:
    return "" if v is None else v  # FOCUS null in CSV: an empty cell


def _account(c: Charge) -> str:
    return c.opts.billing_account_id or c.cluster


def _host(o: FocusOptions) -> str:
    return o.host_provider or o.service_provider


def _kind(q: ReportQuery | None) -> str:
    return q.aggregate if q else "allocation"


def _allocated_id(c: Charge) -> str:
    if special_kind(c.a.name) is not None:
        return f"k8s://{c.cluster}/{c.a.name}"  # __idle__, or node/__idle__ with idle-by-node
    return f"k8s://{c.cluster}/{_kind(c.q)}/{c.a.name}"


def _tags(props: Mapping[str, str]) -> str | None:
    """Tenant properties as FOCUS tags: pod labels are the user's (unprefixed), the rest ours."""
    out: dict[str, str] = {}
    for k, v in sorted(props.items()):
        if k.startswith("label:"):
            out[k[len("label:"):]] = str(v)
        else:
            out[TAG_PREFIX + k] = str(v)
    return json.dumps(out, separators=(",", ":"), sort_keys=True) if out else None


def _method_details(c: Charge) -> str | None:
    if c.ratio is None:
        return None  # a filtered report: the origin charge is not all here
    element: dict[str, object] = {"AllocatedRatio": round(c.ratio, 12)}
    if c.comp.quantity_field is not None:
        element["UsageUnit"] = c.comp.unit
        element["UsageQuantity"] = round(c.quantity, 12)
    kind = special_kind(c.a.name)
    doc: dict[str, object] = {
        "Elements": [element],
        "x_AllocationKind": {IDLE: "idle", OVERHEAD: "overhead",
                             UNALLOCATED: "unallocated"}.get(kind or "", "tenant"),
        "x_Model": c.q.model.value if c.q else None,
        "x_SharePolicy": c.q.share_idle.value if c.q else None,
        "x_Aggregate": _kind(c.q),
    }
    return json.dumps(doc, separators=(",", ":"))


def _describe(c: Charge) -> str:
    # The origin charge's description: the same for every tenant's share of it (FOCUS 1.3: an
    # allocated charge's dimensions equal its origin's). Who got it is in AllocatedResourceName.
    if c.comp.quantity_field is None:
        return f"Kubernetes {c.comp.what} to tenants, cluster {c.cluster}"
    return f"Kubernetes {c.comp.what} ({c.comp.unit}), cluster {c.cluster}"


def _billing_period(t: datetime) -> tuple[datetime, datetime]:
    start = datetime(t.year, t.month, 1, tzinfo=timezone.utc)
    nxt = datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=timezone.utc)
    return start, nxt


def _ts(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def _check_version(version: str) -> None:
    if version not in FOCUS_VERSIONS:
        raise ConfigError(f"unknown FOCUS version {version!r}; allowed: "
                          f"{', '.join(FOCUS_VERSIONS)}")


__all__ = ["render_focus", "rows", "charges", "columns", "header", "origin_key", "FocusOptions",
           "COMPONENTS", "MANDATORY", "FOCUS_VERSIONS", "DEFAULT_FOCUS_VERSION",
           "APPLICABILITY_CRITERIA", "FOCUS_VERSION_HELP", "method_id"]
