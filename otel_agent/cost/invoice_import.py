"""An invoice into the ledger: one transaction, idempotent, a correction replaces what it covers.

Why this shape:
  * Every file is read and validated before anything is written, and everything is written in
    one transaction: a bad row leaves the ledger as it was, never half an invoice.
  * Lines are keyed by content (invoice.keyed): re-importing the same file finds the same keys
    with the same matches and writes nothing at all.
  * A corrected export replaces what it covers, by (BillingAccountId, BillingPeriodStart): all
    stored lines of each account and period present in the import are deleted and the new ones
    inserted. Give every part of a period's export in one command (AWS writes large periods
    as several files): a part imported alone replaces its period's other parts.
  * Matching happens at import, against the nodes the ledger knows then (their providerID, from
    the node resource's `otel_agent.k8s.node.provider_id`). Importing the same file again after
    more nodes have reported matches them too (the matches are part of what "same" compares).
  * The node-hours an import touches (before and after) are marked dirty: the ledger's refresh
    re-prices them from `invoice_node_hours` (store.py, ledger.py), in the serving process or in
    any process sharing the database.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import sqlalchemy as sa

from otel_agent.cost import invoice as I
from otel_agent.cost.errors import StoreUnavailable
from otel_agent.cost.store import (_CHUNK, Store, _reason, _unavailable, invoice_lines_t,
                                   invoice_node_hours_t, series_t)
from otel_agent.cost.validate import MAX_NODE_HOUR_MICROS
from otel_agent.otlp.resources import PROVIDER_ID_ATTR


@dataclass(slots=True)
class ImportResult:
    files: list[str]
    lines: int
    currency: str
    scopes: list[tuple[str, int]]  # (billing account, billing period start) replaced
    unchanged: bool
    replaced_lines: int = 0  # stored lines of those scopes before
    by_kind: dict[str, int] = field(default_factory=dict)  # node | shared | unmatched → lines
    node_hours: int = 0
    total_micros: int = 0

    def summary(self) -> str:
        if self.unchanged:
            return (f"{self.lines} lines from {', '.join(self.files)}: already imported, "
                    "nothing changed")
        kinds = ", ".join(f"{self.by_kind.get(k, 0)} {k}" for k in
                          (I.MATCH_NODE, I.MATCH_SHARED, I.MATCH_UNMATCHED))
        periods = ", ".join(sorted({f"{a} {_ym(p)}" for a, p in self.scopes}))
        return (f"imported {self.lines} lines ({kinds}) from {', '.join(self.files)}: "
                f"{self.total_micros / 1e6:,.2f} {self.currency} for {periods}; "
                f"{self.node_hours} node-hour{'s' if self.node_hours != 1 else ''} re-priced"
                + (f"; replaced {self.replaced_lines} earlier lines" if self.replaced_lines else ""))


def _ym(t_s: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t_s, timezone.utc).strftime("%Y-%m-%d")


def node_map(conn) -> dict[str, tuple[str, str]]:
    """provider_key → (cluster, node), from the latest metadata of each node's series."""
    q = (sa.select(series_t.c.cluster, series_t.c.node, series_t.c.meta, series_t.c.seen_ns)
         .where(series_t.c.scope == "node").order_by(series_t.c.seen_ns))
    out: dict[str, tuple[str, str]] = {}
    for cluster, node, meta, _seen in conn.execute(q):
        try:
            pid = json.loads(meta).get("node_attrs", {}).get(PROVIDER_ID_ATTR)
        except (ValueError, AttributeError):
            continue
        key = I.provider_key(pid) if isinstance(pid, str) else None
        if key is not None:
            out[key] = (cluster, node)  # the latest seen wins (a machine re-joined under a name)
    return out


def import_invoice(store: Store, paths: Sequence[str | Path]) -> ImportResult:
    """Read, validate, match and store the files as one import (module docstring). Raises
    InvoiceError (the files' fault) or StoreUnavailable (the database's)."""
    lines: list[I.InvoiceLine] = []
    for p in paths:
        lines.extend(I.read_invoice(p))
    files = [str(p) for p in paths]
    if not lines:
        raise I.InvoiceError(f"{', '.join(files)}: no invoice lines")
    currency = lines[0].currency
    for ln in lines:
        if ln.currency != currency:
            raise I.InvoiceError(f"{ln.source}: row {ln.row}, column BillingCurrency: "
                                 f"{ln.currency} beside {currency}; one currency per import")
    keyed = I.keyed(lines)
    try:
        with store.engine.begin() as c:
            return _store(store, c, keyed, files, currency)
    except I.InvoiceError:
        raise
    except sa.exc.SQLAlchemyError as e:
        if _unavailable(e):
            raise StoreUnavailable(f"ledger cannot store the invoice: {_reason(e)}") from e
        raise StoreUnavailable(f"ledger refused the invoice: {_reason(e)}") from e


def _check_currency(store: Store, c, keyed: list[I.KeyedLine], currency: str) -> None:
    """Each cluster an invoice line is matched into must be priced in the invoice's currency:
    the currency of its ledger rows (what the serving process priced in; the importer may run
    with other pricing), else its pricing section's."""
    from otel_agent.cost.store import hourly_t

    seen: set[str] = set()
    for k in keyed:
        cl = k.match.cluster
        if k.match.kind != I.MATCH_NODE or cl in seen:
            continue
        seen.add(cl)
        row = c.execute(sa.select(hourly_t.c.currency).where(hourly_t.c.cluster == cl)
                        .order_by(hourly_t.c.period_start.desc()).limit(1)).first()
        theirs = row[0] if row else store.pricing.for_cluster(cl).currency
        if theirs != currency:
            raise I.InvoiceError(f"{k.line.source}: row {k.line.row}, column BillingCurrency: "
                                 f"{currency}, but the ledger prices cluster {cl or '(unnamed)'!r} "
                                 f"in {theirs}")


def _scope_clause(table: sa.Table, scopes: list[tuple[str, int]]):
    return sa.or_(*[sa.and_(table.c.billing_account == a, table.c.billing_period_start == p)
                    for a, p in scopes])


def _store(store: Store, c, keyed: list[I.KeyedLine], files: list[str],
           currency: str) -> ImportResult:
    I.match_all(keyed, node_map(c))
    _check_currency(store, c, keyed, currency)
    hours = I.node_hours(keyed)
    per_node_hour: dict[tuple[str, str, int], int] = defaultdict(int)
    for (cl, n, _a, _p, h), m in hours.items():
        per_node_hour[(cl, n, h)] += m
    for (cl, n, h), m in sorted(per_node_hour.items()):
        if not 0 <= m <= MAX_NODE_HOUR_MICROS:
            src = next(k.line for k in keyed if k.match.kind == I.MATCH_NODE
                       and k.match.node == n and k.match.cluster == cl)
            raise I.InvoiceError(
                f"{src.source}: row {src.row}, column EffectiveCost: node {n} costs "
                f"{m / 1e6:,.2f} {currency} in hour {_ym(h)}T{h % 86400 // 3600:02d}; a node-hour "
                f"must cost between 0 and {MAX_NODE_HOUR_MICROS / 1e6:,.0f}")
    scopes = sorted({I.scope_of(k.line) for k in keyed})
    result = ImportResult(files=files, lines=len(keyed), currency=currency, scopes=scopes,
                          unchanged=False)
    for k in keyed:
        result.by_kind[k.match.kind] = result.by_kind.get(k.match.kind, 0) + 1
    result.total_micros = sum(k.micros for k in keyed)
    lt, nt = invoice_lines_t, invoice_node_hours_t
    old: set[tuple] = set()
    old_hours: set[tuple[str, str, int]] = set()
    for i in range(0, len(scopes), _CHUNK // 5):
        chunk = scopes[i:i + _CHUNK // 5]
        old |= {tuple(r) for r in c.execute(sa.select(
            lt.c.line_key, lt.c.match_kind, lt.c.cluster, lt.c.node, lt.c.label, lt.c.micros)
            .where(_scope_clause(lt, chunk)))}
        old_hours |= {tuple(r) for r in c.execute(sa.select(nt.c.cluster, nt.c.node, nt.c.hour)
                                                   .where(_scope_clause(nt, chunk)))}
    new = {(k.key, k.match.kind, k.match.cluster, k.match.node, k.match.label, k.micros)
           for k in keyed}
    if old == new:
        result.unchanged = True
        return result
    result.replaced_lines = len(old)
    for i in range(0, len(scopes), _CHUNK // 5):
        chunk = scopes[i:i + _CHUNK // 5]
        c.execute(sa.delete(lt).where(_scope_clause(lt, chunk)))
        c.execute(sa.delete(nt).where(_scope_clause(nt, chunk)))
    rows = [{"line_key": k.key, "billing_account": k.line.billing_account,
             "billing_period_start": k.line.billing_period_start,
             "billing_period_end": k.line.billing_period_end,
             "charge_period_start": k.line.charge_period_start,
             "charge_period_end": k.line.charge_period_end,
             "charge_category": k.line.charge_category, "service_name": k.line.service_name,
             "resource_id": k.line.resource_id, "sku_id": k.line.sku_id,
             "currency": k.line.currency, "effective_cost": str(k.line.effective_cost),
             "billed_cost": str(k.line.billed_cost), "micros": k.micros,
             "match_kind": k.match.kind, "cluster": k.match.cluster, "node": k.match.node,
             "label": k.match.label[:255], "source": k.line.source[-1024:],
             "source_row": k.line.row} for k in keyed]
    for i in range(0, len(rows), _CHUNK):
        c.execute(sa.insert(lt), rows[i:i + _CHUNK])
    hrows = [{"cluster": cl, "node": n, "billing_account": a, "billing_period_start": p,
              "hour": h, "micros": m} for (cl, n, a, p, h), m in sorted(hours.items())]
    for i in range(0, len(hrows), _CHUNK):
        c.execute(sa.insert(nt), hrows[i:i + _CHUNK])
    touched = old_hours | set(per_node_hour)
    store.mark_dirty(c, touched)
    result.node_hours = len(per_node_hour)
    return result


__all__ = ["ImportResult", "import_invoice", "node_map"]
