"""The invoice reconciliation: per billing period,

    invoice total = allocated + idle + overhead + shared + unmatched

to the micro-unit, and printed to the cent.

Why it proves something: each term is computed on its own, from a different place, and the
difference is reported, never absorbed.
  * invoice total: the sum of the imported lines' EffectiveCost (exact per billing period,
    invoice.keyed); BilledCost's total is printed beside it (it differs by amortization).
  * allocated, unallocated, overhead, idle: the ledger's own hourly rows (compute: CPU and
    memory; network rows cost nothing in invoice-priced hours) of the node-hours the invoice
    matched, split as the ledger split them. They add up to the invoice's node cost only if
    every matched node-hour was re-priced at the invoice (ledger.py `_invoice_priced`).
  * shared: invoice lines that are the cluster's as a whole (load balancers, NAT, control
    plane, support, tax, credits), one row per kind.
  * unmatched: lines for no node of this ledger (their reason on each row), and node lines for
    hours in which the ledger saw nothing of the node.
A difference other than 0 means the ledger and the invoice disagree (a node-hour not yet
re-priced, or one whose usage exceeded its capacity, which the ledger bills above the node's
cost); `balanced` says so and the CLI exits 1.

Rounding rule: every term is exact in integer micro-units. For printing, each term is rounded
to cents by largest remainder (floor each, then give the missing cents to the largest
fractional parts), so the printed rows add up to the printed total, which is the exact total
rounded half-even to the cent.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import sqlalchemy as sa

from otel_agent.cost.invoice import MATCH_SHARED, MATCH_UNMATCHED
from otel_agent.cost.ledger import (KIND_CONTAINER, KIND_IDLE, KIND_NODE, KIND_OVERHEAD, KIND_POD,
                                    KIND_UNALLOCATED)
from otel_agent.cost.store import LEDGER_TABLES, Store, dirty_t, invoice_lines_t, invoice_node_hours_t

UNOBSERVED = "node lines for hours the ledger has no data of the node"


@dataclass(slots=True)
class PeriodReconciliation:
    period_start: int  # UTC seconds
    period_end: int
    currency: str
    invoice_micros: int = 0
    billed_micros: int = 0
    allocated_micros: int = 0  # containers + pod level
    unallocated_micros: int = 0  # usage seen on the node with no pod
    idle_micros: int = 0
    overhead_micros: int = 0
    shared: dict[str, int] = field(default_factory=dict)  # label → micro-units
    unmatched: dict[str, int] = field(default_factory=dict)  # reason → micro-units
    node_hours: int = 0  # matched by the invoice
    mispriced_node_hours: int = 0  # whose ledger node cost is not the invoice's
    pending_node_hours: int = 0  # marked for a rebuild not yet done
    lines: int = 0

    def terms(self) -> list[tuple[str, str, int]]:
        """(group, name, micro-units) in print order: the right-hand side of the equation."""
        out = [("allocated", "allocated", self.allocated_micros),
               ("allocated", "__unallocated__", self.unallocated_micros),
               ("idle", "__idle__", self.idle_micros),
               ("overhead", "__overhead__", self.overhead_micros)]
        out += [("shared", k, v) for k, v in sorted(self.shared.items())]
        out += [("unmatched", k, v) for k, v in sorted(self.unmatched.items())]
        return out

    @property
    def difference_micros(self) -> int:
        return self.invoice_micros - sum(v for _g, _n, v in self.terms())

    @property
    def balanced(self) -> bool:
        return self.difference_micros == 0

    def to_json(self) -> dict[str, Any]:
        terms = self.terms()
        cents = cents_adding_up([v for _g, _n, v in terms], self.invoice_micros
                                if self.balanced else sum(v for *_x, v in terms))
        groups: dict[str, Any] = defaultdict(dict)
        for (g, n, v), c in zip(terms, cents):
            groups[g][n] = {"micros": v, "amount": _cents_text(c)}
        return {"billingPeriodStart": _iso(self.period_start),
                "billingPeriodEnd": _iso(self.period_end), "currency": self.currency,
                "invoiceTotal": _cents_text(round_cents(self.invoice_micros)),
                "invoiceTotalMicros": self.invoice_micros,
                "billedTotal": _cents_text(round_cents(self.billed_micros)),
                "terms": dict(groups), "differenceMicros": self.difference_micros,
                "balanced": self.balanced, "lines": self.lines, "nodeHours": self.node_hours,
                "mispricedNodeHours": self.mispriced_node_hours,
                "pendingNodeHours": self.pending_node_hours}


def round_cents(micros: int) -> int:
    return int((Decimal(micros) / 10_000).to_integral_value(rounding=ROUND_HALF_EVEN))


def cents_adding_up(parts_micros: list[int], total_micros: int) -> list[int]:
    """Each part in cents such that they add up to the total rounded half-even (largest
    remainder). `total_micros` must be the parts' sum."""
    target = round_cents(total_micros)
    floors = [p // 10_000 for p in parts_micros]
    rem = [p - f * 10_000 for p, f in zip(parts_micros, floors)]
    missing = target - sum(floors)
    order = sorted(range(len(parts_micros)), key=lambda i: (-rem[i], i))
    for i in order[:max(0, missing)]:
        floors[i] += 1
    return floors


def _cents_text(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _exact(micros: int) -> str:
    sign = "-" if micros < 0 else ""
    return f"{sign}{abs(micros) // 1_000_000}.{abs(micros) % 1_000_000:06d}"


def _iso(t_s: int) -> str:
    return datetime.fromtimestamp(t_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def reconcile_invoice(store: Store, *, period: int | None = None) -> list[PeriodReconciliation]:
    """The reconciliation of every imported billing period (or the one starting at `period`),
    from the ledger as it stands (refresh it first to include pending re-pricing)."""
    lt, nt, ht = invoice_lines_t, invoice_node_hours_t, LEDGER_TABLES["hour"]
    out: dict[int, PeriodReconciliation] = {}
    with store.engine.connect() as c:
        q = sa.select(lt.c.billing_period_start, lt.c.billing_period_end, lt.c.currency,
                      lt.c.match_kind, lt.c.label, lt.c.micros, lt.c.billed_cost)
        if period is not None:
            q = q.where(lt.c.billing_period_start == period)
        billed: dict[int, Decimal] = defaultdict(Decimal)
        for p0, p1, cur, kind, label, micros, bc in c.execute(q):
            r = out.get(p0)
            if r is None:
                r = out[p0] = PeriodReconciliation(p0, p1, cur)
            r.period_end = max(r.period_end, p1)
            r.lines += 1
            r.invoice_micros += micros
            billed[p0] += Decimal(bc)
            if kind == MATCH_SHARED:
                r.shared[label] = r.shared.get(label, 0) + micros
            elif kind == MATCH_UNMATCHED:
                r.unmatched[label] = r.unmatched.get(label, 0) + micros
        for p0, b in billed.items():
            out[p0].billed_micros = int((b * 1_000_000).to_integral_value(rounding=ROUND_HALF_EVEN))
        for p0, r in out.items():
            invoiced: dict[tuple[str, str, int], int] = defaultdict(int)
            for cl, n, h, m in c.execute(
                    sa.select(nt.c.cluster, nt.c.node, nt.c.hour, sa.func.sum(nt.c.micros))
                    .where(nt.c.billing_period_start == p0)
                    .group_by(nt.c.cluster, nt.c.node, nt.c.hour)):
                invoiced[(cl, n, h)] += int(m)
            if not invoiced:
                continue
            r.node_hours = len(invoiced)
            lo = min(h for _c, _n, h in invoiced)
            hi = max(h for _c, _n, h in invoiced) + 3600
            nodes = sorted({(cl, n) for cl, n, _h in invoiced})
            kinds: dict[tuple[str, str, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
            for i in range(0, len(nodes), 100):
                chunk = nodes[i:i + 100]
                q = (sa.select(ht.c.cluster, ht.c.node, ht.c.period_start, ht.c.kind,
                               sa.func.sum(ht.c.cost_usage_micros))
                     .where(ht.c.period_start >= lo, ht.c.period_start < hi,
                            sa.or_(*[sa.and_(ht.c.cluster == cl, ht.c.node == n)
                                     for cl, n in chunk]))
                     .group_by(ht.c.cluster, ht.c.node, ht.c.period_start, ht.c.kind))
                for cl, n, h, kind, s in c.execute(q):
                    if (cl, n, h) in invoiced:
                        kinds[(cl, n, h)][kind] += int(s or 0)
            for key, m in invoiced.items():
                k = kinds.get(key)
                if k is None or KIND_NODE not in k:
                    r.unmatched[UNOBSERVED] = r.unmatched.get(UNOBSERVED, 0) + m
                    continue
                r.allocated_micros += k[KIND_CONTAINER] + k[KIND_POD]
                r.unallocated_micros += k[KIND_UNALLOCATED]
                r.idle_micros += k[KIND_IDLE]
                r.overhead_micros += k[KIND_OVERHEAD]
                if k[KIND_NODE] != m:
                    r.mispriced_node_hours += 1
            r.pending_node_hours = c.execute(
                sa.select(sa.func.count()).select_from(dirty_t)
                .where(dirty_t.c.hour >= lo, dirty_t.c.hour < hi)).scalar_one()
    return [out[p] for p in sorted(out)]


def render_text(recs: list[PeriodReconciliation]) -> str:
    if not recs:
        return "no invoice imported (otel-agent cost import-invoice FILE)\n"
    lines: list[str] = []
    for r in recs:
        terms = r.terms()
        shown = [(g, n, v) for g, n, v in terms if v or g in ("allocated", "idle", "overhead")]
        total = sum(v for *_x, v in shown)
        cents = cents_adding_up([v for *_x, v in shown], total)
        lines.append(f"billing period {_iso(r.period_start)[:10]} .. {_iso(r.period_end)[:10]} "
                     f"({r.lines} invoice lines, {r.node_hours} node-hour{'' if r.node_hours == 1 else 's'} "
                     f"matched), {r.currency}")
        labels = [g if n in (g, f"__{g}__") else f"{g}: {n}" for g, n, _v in shown]
        head = "invoice total (EffectiveCost)"
        width = max([len(x) + 2 for x in labels] + [len(head), len("sum of the rows")])
        lines.append(f"  {'':<{width}}  {'to the cent':>14}  {'exact':>16}")
        lines.append(f"  {head:<{width}}  {_cents_text(round_cents(r.invoice_micros)):>14}  "
                     f"{_exact(r.invoice_micros):>16}")
        for label, ct, (_g, _n, v) in zip(labels, cents, shown):
            lines.append(f"    {label:<{width - 2}}  {_cents_text(ct):>14}  {_exact(v):>16}")
        lines.append(f"  {'sum of the rows':<{width}}  {_cents_text(round_cents(total)):>14}  "
                     f"{_exact(total):>16}")
        diff = r.difference_micros
        status = ("balanced: invoice total = allocated + idle + overhead + shared + unmatched, "
                  "to the micro-unit" if diff == 0 else
                  f"NOT balanced: {diff / 1e6:+,.6f} {r.currency} differ "
                  f"({r.mispriced_node_hours} node-hours not at the invoice's price, "
                  f"{r.pending_node_hours} awaiting rebuild)")
        lines.append(f"  {status}")
        lines.append(f"  billed total (BilledCost, before amortization): "
                     f"{_cents_text(round_cents(r.billed_micros))}")
    return "\n".join(lines) + "\n"


def render_json(recs: list[PeriodReconciliation]) -> str:
    return json.dumps({"code": 200, "data": [r.to_json() for r in recs]}, indent=2) + "\n"


__all__ = ["PeriodReconciliation", "reconcile_invoice", "render_text", "render_json",
           "cents_adding_up", "round_cents", "UNOBSERVED"]
