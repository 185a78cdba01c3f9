"""A cost report a FinOps team can open, mail or print without any server or network: one
HTML file with inline CSS and an inline SVG chart, no scripts, fonts or CDN links.

The chart is a stacked bar per step, one band per tenant, so both "who costs what" and "how it
moved over time" are visible at once. More than `max_series` tenants are folded into "other"
(largest tenants keep their own colour); idle, overhead and unallocated keep fixed greys so the
unbilled remainder is never mistaken for a tenant. Every bar carries `data-*` attributes and a
`<title>` so browsers show exact figures on hover and tests can read the rendered DOM.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timedelta, timezone
from typing import Sequence

from otel_agent.cost.components import COMPONENTS
from otel_agent.cost.report import (COMPUTE_NOTE, GIB, RECONCILED_MODELS, Reconciliation,
                                    ReportQuery, Totals, accumulate, currency_of, money_decimals,
                                    ordered_names, quantity_reconciliation, reconcile,
                                    special_kind)
from otel_agent.cost.types import IDLE, OVERHEAD, UNALLOCATED, Allocation, Model, Window
from otel_agent.cost.window import split

# Tableau-10-like palette: distinct in colour and in lightness, still readable in greyscale.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#2f4b7c")
SPECIAL_COLOURS = {UNALLOCATED: "#8c8c8c", OVERHEAD: "#5f5f5f", IDLE: "#c8c8c8"}
OTHER = "(other)"
OTHER_COLOUR = "#bab0ac"
SPECIAL_LABELS = {IDLE: "idle", OVERHEAD: "overhead", UNALLOCATED: "unallocated"}

W, H = 960, 360
ML, MR, MT, MB = 70, 20, 20, 48


def render_html(sets: Sequence[Sequence[Allocation]], q: ReportQuery, *,
                title: str = "Kubernetes cost report", max_series: int = 10,
                node_total: float | None = None, generated_at: datetime | None = None,
                default_currency: str = "USD",
                reconciliation: Reconciliation | None = None) -> str:
    """`reconciliation` is the ledger's own check (report.ledger_reconciliation); without it
    the parts are summed from the allocations."""
    currency = currency_of(sets, default_currency)
    steps = _step_windows(sets, q)
    per_step = _per_step(sets, steps)
    totals = accumulate(sets)
    names = ordered_names(totals)
    series = _series(names, totals, max_series)
    colours = _colours(series)
    step_values = [{s: sum(per_step[i].get(n, 0.0) for n in members)
                    for s, members in series.items()} for i in range(len(steps))]
    gen = (generated_at or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    grand = Totals()
    for v in totals.values():
        grand.add(v)
    dec = money_decimals(grand.total_cost)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1>",
        '<dl class="meta">',
        _dd("Window", f"{_fmt_t(q.window.start)} – {_fmt_t(q.window.end)}"),
        _dd("By", q.aggregate),
        _dd("Model", q.model.value),
        _dd("Idle sharing", q.share_idle.value + (", per node" if q.idle_by_node else "")),
        _dd("Step", _fmt_step(steps)),
        _dd("Currency", currency),
        *([_dd("Filter", q.filter)] if q.filter else []),
        "</dl>",
        f'<p class="total">Total <strong id="grand-total" data-value="{grand.total_cost!r}">'
        f"{_money(grand.total_cost, dec)} {_e(currency)}</strong></p></header>",
        '<section class="chart"><h2>Cost per step</h2>',
        _svg(steps, step_values, series, colours, currency, dec),
        _legend(series, colours, totals, dec),
        "</section>",
        '<section class="detail"><h2>Allocations</h2>',
        _table(names, totals, grand, currency, dec),
    ]
    if reconciliation is not None:
        parts.append(f'<p class="reconcile" id="reconciliation">'
                     f"{_e(reconciliation.line(dec, COMPUTE_NOTE))}</p>")
    elif names and q.model == Model.USAGE:
        parts.append('<p class="reconcile" id="reconciliation">'
                     + "<br>".join(_e(x) for x in quantity_reconciliation(sets)) + "</p>")
    elif names and q.model in RECONCILED_MODELS:
        parts.append(f'<p class="reconcile" id="reconciliation">{_e(reconcile(sets, node_total).line(dec))}</p>')
    parts += ["</section>",
              f'<footer>Generated {gen} by otel-agent. Quantities: CPU in core-hours, memory in '
              "GiB-hours, network in GiB. Idle is capacity paid for but unused; overhead is "
              "system daemons and capacity the node does not offer to pods.</footer>",
              "</body></html>"]
    return "\n".join(parts) + "\n"


def _step_windows(sets: Sequence[Sequence[Allocation]], q: ReportQuery) -> list[Window]:
    """The steps as the ledger returned them; the grid from the query where a step is empty."""
    found = []
    for s in sets:
        ws = {a.window for a in s}
        found.append(ws.pop() if len(ws) == 1 else None)
    grid = split(q.window, q.step)
    if len(grid) == len(sets):
        return [f or g for f, g in zip(found, grid)]
    return [f or q.window for f in found]


def _per_step(sets: Sequence[Sequence[Allocation]], steps: list[Window]) -> list[dict[str, float]]:
    out = []
    for s in sets:
        d: dict[str, float] = {}
        for a in s:
            d[a.name] = d.get(a.name, 0.0) + a.total_cost
        out.append(d)
    return out


def _series(names: list[str], totals: dict[str, Totals], max_series: int) -> dict[str, list[str]]:
    """Series label -> the allocation names it sums, tenants first, specials last."""
    tenants = [n for n in names if special_kind(n) is None]
    specials = [n for n in names if special_kind(n) is not None]
    out: dict[str, list[str]] = {}
    keep = tenants if len(tenants) <= max_series else tenants[: max_series - 1]
    for n in keep:
        out[n] = [n]
    rest = tenants[len(keep):]
    if rest:
        out[OTHER] = rest
    for n in specials:
        out[n] = [n]
    return out


def _colours(series: dict[str, list[str]]) -> dict[str, str]:
    out, i = {}, 0
    for s in series:
        if special_kind(s):
            out[s] = SPECIAL_COLOURS[special_kind(s) or IDLE]
        elif s == OTHER:
            out[s] = OTHER_COLOUR
        else:
            out[s] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def _nice_max(v: float) -> tuple[float, float]:
    """A round axis maximum and tick size above v (1, 2, 2.5, 5 × 10^k)."""
    if v <= 0:
        return 1.0, 0.25
    raw = v / 5
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            tick = m * mag
            break
    return tick * math.ceil(v / tick - 1e-9), tick


def _svg(steps: list[Window], values: list[dict[str, float]], series: dict[str, list[str]],
         colours: dict[str, str], currency: str, dec: int = 2) -> str:
    n = max(len(steps), 1)
    stack_max = max((sum(max(v, 0.0) for v in sv.values()) for sv in values), default=0.0)
    ymax, tick = _nice_max(stack_max)
    pw, ph = W - ML - MR, H - MT - MB
    slot = pw / n
    bw = max(1.0, slot * 0.72)
    out = [f'<svg id="cost-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" '
           f'role="img" aria-label="Stacked cost per step in {_e(currency)}" '
           f'data-steps="{len(steps)}" data-series="{len(series)}">']
    # grid and y axis
    k = 0
    while k * tick <= ymax + 1e-12:
        y = MT + ph - (k * tick) / ymax * ph
        out.append(f'<line class="grid" x1="{ML}" x2="{W - MR}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="ylab" x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{_short_money(k * tick)}</text>")
        k += 1
    out.append(f'<text class="axis-title" x="14" y="{MT + ph / 2:.0f}" '
               f'transform="rotate(-90 14 {MT + ph / 2:.0f})" text-anchor="middle">'
               f"{_e(currency)}</text>")
    # one <g> per series, one <rect> per step, stacked bottom-up in series order
    base = [0.0] * len(steps)
    for si, (name, _members) in enumerate(series.items()):
        label = _label(name)
        out.append(f'<g class="series" data-series="{_e(name)}" fill="{colours[name]}">')
        for i, w in enumerate(steps):
            v = max(values[i].get(name, 0.0), 0.0)
            if v <= 0:
                continue
            y0 = MT + ph - base[i] / ymax * ph
            hgt = v / ymax * ph
            base[i] += v
            x = ML + i * slot + (slot - bw) / 2
            out.append(f'<rect class="bar" x="{x:.2f}" y="{y0 - hgt:.2f}" width="{bw:.2f}" '
                       f'height="{max(hgt, 0.0):.2f}" data-step="{i}" data-value="{v!r}">'
                       f"<title>{_e(label)} · {_fmt_t(w.start)}: {_money(v, dec)} {_e(currency)}"
                       f"</title></rect>")
        out.append("</g>")
    # x labels, thinned so they never overlap (~70 px each)
    every = max(1, math.ceil(n / max(1, pw // 70)))
    for i, w in enumerate(steps):
        if i % every:
            continue
        x = ML + i * slot + slot / 2
        out.append(f'<text class="xlab" x="{x:.1f}" y="{H - MB + 16}" text-anchor="middle">'
                   f"{_e(_xlabel(w, steps))}</text>")
    out.append(f'<line class="axis" x1="{ML}" x2="{W - MR}" y1="{MT + ph}" y2="{MT + ph}"/>')
    out.append("</svg>")
    return "\n".join(out)


def _legend(series: dict[str, list[str]], colours: dict[str, str], totals: dict[str, Totals],
            dec: int = 2) -> str:
    items = []
    for name, members in series.items():
        total = sum(totals[m].total_cost for m in members)
        label = _label(name)
        if name == OTHER:
            label = f"other ({len(members)} more)"
        items.append(f'<li class="legend-item" data-series="{_e(name)}">'
                     f'<span class="swatch" style="background:{colours[name]}"></span>'
                     f"{_e(label)} <span class=\"num\">{_money(total, dec)}</span></li>")
    return '<ul class="legend">' + "".join(items) + "</ul>"


def _table(names: list[str], totals: dict[str, Totals], grand: Totals, currency: str,
           dec: int = 2) -> str:
    money_cols = [(c.label, c.cost_field) for c in COMPONENTS]
    head = ("Name", "CPU core-h", "RAM GiB-h", "Net GiB", *(h for h, _ in money_cols),
            f"Total {currency}", "Share")
    rows = ["<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    gt = grand.total_cost

    def row(label: str, v: Totals, cls: str) -> str:
        share = f"{v.total_cost / gt * 100:.1f}%" if gt else "–"
        cells = (f"{v.cpu_core_hours:,.2f}", f"{v.ram_byte_hours / GIB:,.2f}",
                 f"{v.network_bytes / GIB:,.2f}",
                 *(_money(getattr(v, f), dec) for _, f in money_cols),
                 _money(v.total_cost, dec), share)
        return (f'<tr class="{cls}" data-name="{_e(label)}" data-total="{v.total_cost!r}">'
                f"<th scope=\"row\">{_e(_label(label))}</th>"
                + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>")

    for n in names:
        rows.append(row(n, totals[n], "special" if special_kind(n) else "tenant"))
    rows.append("</tbody><tfoot>" + row("Total", grand, "total") + "</tfoot></table>")
    if not names:
        rows.append('<p class="empty">No allocations in this window.</p>')
    return "".join(rows)


def _label(name: str) -> str:
    kind = special_kind(name)
    if kind is None:
        return name
    node = name.rsplit("/", 1)[0] if "/" in name else ""
    return SPECIAL_LABELS[kind] + (f" ({node})" if node else "")


def _xlabel(w: Window, steps: list[Window]) -> str:
    span = w.end - w.start
    if span >= timedelta(days=1):
        return w.start.strftime("%b %d")
    multi_day = steps and steps[-1].end - steps[0].start > timedelta(days=1)
    return w.start.strftime("%m-%d %H:%M" if multi_day else "%H:%M")


def _fmt_step(steps: list[Window]) -> str:
    if len(steps) <= 1:
        return "whole window"
    d = steps[0].end - steps[0].start
    if d % timedelta(days=1) == timedelta(0):
        return f"{d.days} day{'s' if d.days != 1 else ''} ({len(steps)} steps)"
    hours = d.total_seconds() / 3600
    return f"{hours:g} h ({len(steps)} steps)"


def _fmt_t(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _money(x: float, dec: int = 2) -> str:
    return f"{x:,.{dec}f}"


def _short_money(x: float) -> str:
    if x >= 1000:
        return f"{x / 1000:g}k"
    return f"{x:g}" if x >= 1 or x == 0 else f"{x:.2g}"


def _dd(k: str, v: str) -> str:
    return f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>"


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:#1f2328;margin:24px auto;max-width:1040px;padding:0 16px;line-height:1.4;background:#fff}
h1{font-size:1.5rem;margin:0 0 8px}
h2{font-size:1.05rem;margin:24px 0 8px;color:#444;text-transform:uppercase;letter-spacing:.04em}
.meta{display:flex;flex-wrap:wrap;gap:4px 24px;margin:0;font-size:.9rem}
.meta div{display:flex;gap:6px}.meta dt{color:#666}.meta dd{margin:0;font-weight:600}
.total{font-size:1.15rem;margin:12px 0 0}
svg{width:100%;height:auto;display:block}
.grid{stroke:#e4e4e4;stroke-width:1}.axis{stroke:#444;stroke-width:1}
.ylab,.xlab{font-size:11px;fill:#555}.axis-title{font-size:11px;fill:#555}
.bar{stroke:#fff;stroke-width:.5}
.legend{list-style:none;padding:0;margin:8px 0 0;display:flex;flex-wrap:wrap;gap:6px 18px;font-size:.88rem}
.swatch{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:-1px;
 border:1px solid rgba(0,0,0,.25);-webkit-print-color-adjust:exact;print-color-adjust:exact}
.legend .num{color:#666;margin-left:4px}
table{border-collapse:collapse;width:100%;font-size:.8rem}
th,td{padding:4px 5px;border-bottom:1px solid #e4e4e4;text-align:left;white-space:nowrap}
th{white-space:normal}
thead th{border-bottom:2px solid #444;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.special th{font-style:italic;color:#555}
tfoot tr th,tfoot tr td{border-top:2px solid #444;font-weight:700}
.reconcile{font-size:.88rem;background:#f6f8fa;border-left:3px solid #59a14f;padding:6px 10px}
footer{margin-top:28px;font-size:.78rem;color:#666}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}
 section.chart,table{break-inside:avoid}svg rect,.swatch{-webkit-print-color-adjust:exact;
 print-color-adjust:exact}}
"""
