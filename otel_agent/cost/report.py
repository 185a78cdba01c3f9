"""One report query, many renderings: the CLI, the HTTP API and the HTML page all take the same
`ReportQuery`, ask the ledger once through `run_query`, and hand the per-step allocation sets
to a pure renderer. Keeping the ledger behind this single seam means the renderers are tested
on hand-built `Allocation`s and the ledger can change shape without touching them.

Plain renderers live here (table, CSV, OpenCost JSON); FOCUS and HTML have modules of their own
because each follows an outside specification.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, make_dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Sequence

from otel_agent.cost import grammar
from otel_agent.cost.components import ADDITIVE_FIELDS, COMPONENTS, GIB, total_of
from otel_agent.cost.errors import QueryCancelled
from otel_agent.cost.types import IDLE, OVERHEAD, UNALLOCATED, Allocation, Model, SharePolicy, Window
from otel_agent.errors import ConfigError, OtelAgentError

AGGREGATE_HELP = grammar.AGGREGATE_HELP
SPECIAL = (UNALLOCATED, OVERHEAD, IDLE)  # shown last, in this order


def special_kind(name: str) -> str | None:
    """IDLE/OVERHEAD/UNALLOCATED for a special row, also per node (`node-1/__idle__` with
    idle-by-node); None for a tenant."""
    base = name.rsplit("/", 1)[-1]
    return base if base in SPECIAL else None


class ReportError(OtelAgentError):
    """The ledger could not answer a report query, or answered something no report can show
    (not the user's mistake: exit 1 / HTTP 500). Malformed queries are `ConfigError`s."""


def parse_aggregate(text: str) -> str:
    """OpenCost's aggregate grammar (otel_agent.cost.grammar), canonical spelling."""
    return grammar.parse_aggregate(text)


def parse_enum(enum_cls: type, text: str, what: str) -> Any:
    try:
        return enum_cls((text or "").strip())
    except ValueError as e:
        allowed = ", ".join(m.value for m in enum_cls)
        raise ConfigError(f"unknown {what} {text!r}; allowed: {allowed}") from e


@dataclass(frozen=True, slots=True)
class ReportQuery:
    window: Window
    aggregate: str = "namespace"
    step: timedelta | None = None
    model: Model = Model.CHARGEBACK
    share_idle: SharePolicy = SharePolicy.NONE
    idle_by_node: bool = False
    filter: str | None = None


# The ledger's query function, injectable so the HTTP server and tests can pass their own.
QueryFn = Callable[..., list[list[Allocation]]]


def run_query(store: Any, q: ReportQuery, query_fn: QueryFn | None = None, *,
              refresh: bool | None = None,
              should_stop: Callable[[], bool] | None = None) -> list[list[Allocation]]:
    """Ask the ledger (`otel_agent.cost.allocation.allocations`) for one list per step.

    `refresh=False` reads the ledger as it is, without rebuilding dirty hours first: a report
    process that does not have the server's pricing must not re-price anything.
    `should_stop` is polled between units of work; when it says yes the query raises
    `QueryCancelled` (the HTTP API passes "the client went away")."""
    if query_fn is None:
        try:
            from otel_agent.cost.allocation import allocations as query_fn
        except ImportError as e:
            raise ReportError(f"the ledger query module is not available: {e}") from e
    extra: dict[str, Any] = {} if refresh is None else {"refresh": refresh}
    if should_stop is not None:
        extra["should_stop"] = should_stop
    try:
        sets = query_fn(store, q.window, aggregate=q.aggregate, step=q.step, model=q.model,
                        share_idle=q.share_idle, idle_by_node=q.idle_by_node, filter=q.filter,
                        **extra)
    except (ConfigError, QueryCancelled):
        raise
    except OtelAgentError as e:
        raise ReportError(str(e)) from e
    return [list(s) for s in sets]


# --- shared arithmetic ----------------------------------------------------------------------


class _TotalsBase:
    __slots__ = ()

    def add(self, a: "Allocation | Totals") -> None:
        for f in ADDITIVE_FIELDS:
            setattr(self, f, getattr(self, f) + getattr(a, f))

    @property
    def total_cost(self) -> float:
        return total_of(self)


# A running sum of every additive field of the components (components.COMPONENTS).
Totals = make_dataclass("Totals", [(f, float, 0.0) for f in ADDITIVE_FIELDS], bases=(_TotalsBase,),
                        slots=True)


def accumulate(sets: Sequence[Sequence[Allocation]]) -> dict[str, Totals]:
    """Sum every step per allocation name (OpenCost's `accumulate=true`)."""
    out: dict[str, Totals] = {}
    for s in sets:
        for a in s:
            out.setdefault(a.name, Totals()).add(a)
    return out


def accumulate_sets(sets: Sequence[Sequence[Allocation]]) -> list[list[Allocation]]:
    """`accumulate` as allocation sets: one set spanning all steps (keeps properties that all
    steps agree on)."""
    if not any(sets):
        return [[]]
    starts = [a.window.start for s in sets for a in s]
    ends = [a.window.end for s in sets for a in s]
    win = Window(min(starts), max(ends))
    merged: dict[str, Allocation] = {}
    for s in sets:
        for a in s:
            m = merged.get(a.name)
            if m is None:
                merged[a.name] = Allocation(name=a.name, window=win, currency=a.currency,
                                            properties=dict(a.properties), labels=dict(a.labels),
                                            annotations=dict(a.annotations))
                m = merged[a.name]
            else:
                m.properties = _common(m.properties, a.properties)
                m.labels = _common(m.labels, a.labels)
                m.annotations = _common(m.annotations, a.annotations)
            for f in ADDITIVE_FIELDS:
                setattr(m, f, getattr(m, f) + getattr(a, f))
    return [list(merged.values())]


ACCUMULATE_PERIODS = ("hour", "day", "week", "month", "quarter")


def accumulate_by(sets: Sequence[Sequence[Allocation]], period: str,
                  windows: Sequence[Window] | None = None) -> list[list[Allocation]]:
    """OpenCost's accumulate=hour|day|week|month|quarter: the step sets summed per calendar
    period of their start (weeks end on Saturday, as OpenCost's accumulateByWeek has them);
    `all` is accumulate_sets. `windows` are the steps' windows (one per set): with them a
    period without any allocation is still an (empty) set, as OpenCost answers it."""
    if period == "all":
        return accumulate_sets(sets)
    if period not in ACCUMULATE_PERIODS:
        raise ConfigError(f"accumulate period {period!r}: allowed: all, "
                          f"{', '.join(ACCUMULATE_PERIODS)}")

    def bucket(t: Any) -> tuple:
        if period == "hour":
            return (t.date(), t.hour)
        if period == "day":
            return (t.date(),)
        if period == "week":
            return (t.date() - timedelta(days=(t.weekday() + 1) % 7),)  # the Sunday before
        if period == "month":
            return (t.year, t.month)
        return (t.year, (t.month - 1) // 3)

    if windows is None or len(windows) != len(sets):
        pairs = [(s[0].window.start, s) for s in sets if s]
    else:
        pairs = [(w.start, s) for w, s in zip(windows, sets)]
    out: list[list[Allocation]] = []
    group: list[Sequence[Allocation]] = []
    key = None
    for start, s in pairs:
        k = bucket(start)
        if key is not None and k != key:
            out.extend(accumulate_sets(group))
            group = []
        group.append(s)
        key = k
    if key is not None:
        out.extend(accumulate_sets(group))
    return out or [[]]


def _common(a: Any, b: Any) -> dict[str, str]:
    return {k: v for k, v in a.items() if b.get(k) == v}


def ordered_names(totals: dict[str, Totals]) -> list[str]:
    """Tenants by total cost (CPU for the money-less usage model), largest first, then
    unallocated, overhead, idle."""
    tenants = sorted((n for n in totals if special_kind(n) is None),
                     key=lambda n: (-totals[n].total_cost, -totals[n].cpu_core_hours, n))
    specials = sorted((n for n in totals if special_kind(n) is not None),
                      key=lambda n: (SPECIAL.index(special_kind(n) or IDLE), n))
    return tenants + specials


def currency_of(sets: Iterable[Iterable[Allocation]], default: str = "USD") -> str:
    found = {a.currency for s in sets for a in s}
    if len(found) > 1:
        raise ReportError(f"allocations in more than one currency: {sorted(found)}")
    return found.pop() if found else default


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """allocated + overhead + idle = node total, in money.

    `allocated` is every tenant's total (including idle/overhead shared onto it by policy) plus
    usage seen with no pod (`__unallocated__`); `overhead` and `idle` are what was left unshared.
    `node_total` is the ledger's own figure when it gives one; otherwise the sum.
    """

    allocated: float
    shared_in: float
    unallocated: float
    overhead: float
    idle: float
    node_total: float | None
    currency: str

    @property
    def parts_sum(self) -> float:
        return self.allocated + self.overhead + self.idle

    @property
    def balanced(self) -> bool | None:
        if self.node_total is None:
            return None
        return abs(self.parts_sum - self.node_total) < 0.005  # to the cent

    def line(self, decimals: int = 2, note: str = "") -> str:
        c = self.currency
        tail = f"; {note}" if note else ""

        def _money(x: float) -> str:
            return f"{x:,.{decimals}f}"

        extra = []
        if self.shared_in:
            extra.append(f"incl. {_money(self.shared_in)} shared")
        if self.unallocated:
            extra.append(f"incl. {_money(self.unallocated)} unallocated")
        alloc = f"allocated {_money(self.allocated)}" + (f" ({', '.join(extra)})" if extra else "")
        lhs = f"{alloc} + overhead {_money(self.overhead)} + idle {_money(self.idle)}"
        if self.node_total is None:
            return f"{lhs} = node total {_money(self.parts_sum)} {c}" + (f" ({note})" if note else "")
        if self.balanced:
            return f"{lhs} = node total {_money(self.node_total)} {c} (reconciled{tail})"
        diff = self.parts_sum - self.node_total
        return (f"{lhs} = {_money(self.parts_sum)} {c} != node total {_money(self.node_total)} "
                f"{c} (off by {diff:+.{decimals}f}{tail})")


def reconcile(sets: Sequence[Sequence[Allocation]], node_total: float | None = None) -> Reconciliation:
    t = accumulate(sets)
    def part(kind: str) -> float:
        return sum(v.total_cost for n, v in t.items() if special_kind(n) == kind)

    allocated = sum(v.total_cost for n, v in t.items() if special_kind(n) not in (OVERHEAD, IDLE))
    shared = sum(v.shared_cost for n, v in t.items() if special_kind(n) is None)
    return Reconciliation(
        allocated=allocated, shared_in=shared, unallocated=part(UNALLOCATED),
        overhead=part(OVERHEAD), idle=part(IDLE),
        node_total=node_total, currency=currency_of(sets))


RECONCILED_MODELS = (Model.CHARGEBACK, Model.USAGE)
COMPUTE_NOTE = "CPU, memory and GPUs; network egress and volumes are billed on top"


def quantity_reconciliation(sets: Sequence[Sequence[Allocation]]) -> list[str]:
    """The `usage` model has no money: reconcile what the node offered, per resource."""
    t = accumulate(sets)
    out = []
    for label, get, unit in (("cpu", lambda v: v.cpu_core_hours, "core-hours"),
                             ("memory", lambda v: v.ram_byte_hours / GIB, "GiB-hours"),
                             ("gpu", lambda v: v.gpu_hours, "GPU-hours")):
        if label == "gpu" and not any(v.gpu_hours for v in t.values()):
            continue
        alloc = sum(get(v) for n, v in t.items() if special_kind(n) not in (OVERHEAD, IDLE))
        over = sum(get(v) for n, v in t.items() if special_kind(n) == OVERHEAD)
        idle = sum(get(v) for n, v in t.items() if special_kind(n) == IDLE)
        out.append(f"{label}: allocated {alloc:,.3f} + overhead {over:,.3f} + idle {idle:,.3f} "
                   f"= node total {alloc + over + idle:,.3f} {unit}")
    return out


def ledger_reconciliation(store: Any, q: ReportQuery, currency: str) -> Reconciliation | None:
    """The ledger's own per-node check, summed over nodes, exact in micro-units: the node total
    here is the ledger's node row, not the sum of the parts. Compute only (CPU and memory):
    network egress is billed to its sender on top of the node. None when the ledger cannot say."""
    try:
        from otel_agent.cost.allocation import reconcile as ledger_reconcile
    except ImportError:
        return None
    model = Model.CHARGEBACK if q.model == Model.USAGE else q.model
    try:
        per_node = ledger_reconcile(store, q.window, model=model, refresh=False)
    except OtelAgentError as e:
        raise ReportError(f"reconciliation failed: {e}") from e
    if not per_node:
        return None
    alloc = sum(r.allocated_micros for r in per_node)
    unalloc = sum(r.unallocated_micros for r in per_node)
    over = sum(r.overhead_micros for r in per_node)
    idle = sum(r.idle_micros for r in per_node)
    node = sum(r.node_micros for r in per_node)
    return Reconciliation(allocated=(alloc + unalloc) / 1e6, shared_in=0.0,
                          unallocated=unalloc / 1e6, overhead=over / 1e6, idle=idle / 1e6,
                          node_total=node / 1e6, currency=currency)


# --- renderers ------------------------------------------------------------------------------


def _money(x: float, decimals: int = 2) -> str:
    return f"{x:,.{decimals}f}"


def money_decimals(total: float) -> int:
    """Cents for real bills; four places when the whole report is under 10 (a short demo or a
    one-hour window), where cents would show every tenant as 0.00."""
    return 2 if abs(total) >= 10 else 4


def render_table(sets: Sequence[Sequence[Allocation]], q: ReportQuery | None = None, *,
                 node_total: float | None = None,
                 reconciliation: Reconciliation | None = None) -> str:
    """Aligned text for a terminal: one row per allocation, summed over all steps."""
    totals = accumulate(sets)
    cur = currency_of(sets)
    names = ordered_names(totals)
    grand = Totals()
    for v in totals.values():
        grand.add(v)
    dec = money_decimals(grand.total_cost)

    def money(x: float) -> str:
        return _money(x, dec)

    cols: list[tuple[str, Callable[[Totals], str]]] = [
        ("CPU core-h", lambda v: f"{v.cpu_core_hours:,.3f}"),
        ("RAM GiB-h", lambda v: f"{v.ram_byte_hours / GIB:,.3f}"),
        ("NET GiB", lambda v: f"{v.network_bytes / GIB:,.3f}"),
    ]
    if any(v.gpu_hours for v in totals.values()):
        cols.append(("GPU-h", lambda v: f"{v.gpu_hours:,.3f}"))
    if any(v.gpu_used_hours for v in totals.values()):
        # the waste: how busy the GPUs a tenant held were (DCGM), where it reports
        cols.append(("GPU busy", lambda v: f"{100 * v.gpu_used_hours / v.gpu_hours:.0f}%"
                     if v.gpu_hours else "-"))
    if any(v.pv_byte_hours for v in totals.values()):
        cols.append(("PV GiB-h", lambda v: f"{v.pv_byte_hours / GIB:,.3f}"))
    n_quantities = len(cols)
    for c in COMPONENTS:  # money columns: every component, the optional ones when non-zero
        if c.always_shown or any(getattr(v, c.cost_field) or
                                 (c.quantity_field and getattr(v, c.quantity_field))
                                 for v in totals.values()):
            cols.append((c.short, lambda v, f=c.cost_field: money(getattr(v, f))))
    cols.append((f"TOTAL {cur}", lambda v: money(v.total_cost)))
    if q is not None and q.model == Model.USAGE:
        cols = cols[:n_quantities]  # the usage model carries quantities only: no money columns
    head = ["NAME"] + [c for c, _ in cols]
    rows = [[n] + [fn(totals[n]) for _, fn in cols] for n in names]
    total_row = ["TOTAL"] + [fn(grand) for _, fn in cols]
    widths = [max(len(r[i]) for r in [head, total_row, *rows]) for i in range(len(head))]

    def fmt(r: list[str]) -> str:
        return "  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])])

    lines = []
    if q is not None:
        w = q.window
        lines.append(f"window {w.start:%Y-%m-%dT%H:%M:%SZ} .. {w.end:%Y-%m-%dT%H:%M:%SZ}  "
                     f"by {q.aggregate}  model {q.model.value}  share-idle {q.share_idle.value}"
                     + ("  idle-by-node" if q.idle_by_node else "")
                     + (f"  filter {q.filter}" if q.filter else ""))
    lines.append(fmt(head))
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt(r) for r in rows]
    lines.append("  ".join("-" * w for w in widths))
    lines.append(fmt(total_row))
    if not rows:
        lines.append("(no allocations in this window)")
    if reconciliation is not None:
        lines.append(reconciliation.line(dec, COMPUTE_NOTE))
    elif rows and q is not None and q.model == Model.USAGE:
        lines += quantity_reconciliation(sets)
    elif rows and (q is None or q.model in RECONCILED_MODELS):
        lines.append(reconcile(sets, node_total).line(dec))
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (("window_start", "window_end", "name")
               + tuple(col for c in COMPONENTS for col in (c.csv_quantity, c.cost_field) if col)
               + ("total_cost", "currency", "properties"))


# OWASP "CSV injection": a spreadsheet runs a cell that starts with one of these as a formula
# (`=HYPERLINK(...)` in a namespace or label value). Numbers we wrote ourselves are left alone.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def csv_safe(row: Any) -> Any:
    """A CSV row (list or dict) with every text cell that a spreadsheet would run as a formula
    prefixed with a single quote, the OWASP rule. Every CSV the project writes goes through
    this (render_csv here, FOCUS in focus.py)."""
    if isinstance(row, dict):
        return {k: _cell(v) for k, v in row.items()}
    return [_cell(v) for v in row]


def _cell(v: Any) -> Any:
    if isinstance(v, str) and v.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(v):
        return "'" + v
    return v


def render_csv(sets: Sequence[Sequence[Allocation]]) -> str:
    """One row per allocation per step; quantities in GiB, properties as a JSON object."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for s in sets:
        for a in sorted(s, key=lambda a: (special_kind(a.name) is not None, a.name)):
            parts: list[str] = []
            for c in COMPONENTS:
                if c.csv_quantity:
                    parts.append(_num(getattr(a, c.quantity_field) / c.divisor))
                parts.append(_num(getattr(a, c.cost_field)))
            w.writerow(csv_safe([
                _ts(a.window.start), _ts(a.window.end), a.name, *parts,
                _num(a.total_cost), a.currency,
                json.dumps(a.flat_properties(), sort_keys=True, separators=(",", ":")),
            ]))
    return buf.getvalue()


def opencost_json(sets: Sequence[Sequence[Allocation]]) -> dict[str, Any]:
    """OpenCost's `/allocation` body: `data` is one `{name: allocation}` object per step."""
    return {"code": 200, "status": "success",
            "data": [{a.name: _finite(a.to_opencost_json()) for a in s} for s in sets]}


def render_json(sets: Sequence[Sequence[Allocation]]) -> str:
    return json.dumps(opencost_json(sets), indent=2, sort_keys=False) + "\n"


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN/Infinity; a NaN reaching a client would break every OpenCost reader.
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ReportError(f"non-finite {k} in allocation {d.get('name')!r}")
    return d


def _ts(t: Any) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(x: float) -> str:
    # Plain decimal, no exponent: spreadsheets and FOCUS readers both choke on 1e-05.
    s = f"{x:.10f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


__all__ = ["ReportQuery", "run_query", "parse_aggregate", "parse_enum", "accumulate",
           "accumulate_sets", "accumulate_by", "ACCUMULATE_PERIODS", "reconcile", "Reconciliation", "render_table", "render_csv",
           "render_json", "opencost_json", "ReportError", "Totals", "csv_safe"]
