"""`otel-agent cost report`: the ledger on a terminal, in a spreadsheet, in a FinOps tool or in a
browser. Users script this command, so its contract is strict: output goes to stdout or
`--output` and nowhere else; a mistake in the arguments prints one line naming the argument and
what is allowed, exits 2 and never shows a traceback; a ledger that cannot answer exits 1.

    otel-agent cost report --ledger sqlite:///ledger.db --window 2026-11 --by namespace \\
        --model chargeback --share-idle proportional --format table
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from otel_agent.cost.focus import (DEFAULT_FOCUS_VERSION, FOCUS_VERSION_HELP, FOCUS_VERSIONS,
                                   FocusOptions, render_focus)
from otel_agent.cost.report import (AGGREGATE_HELP, Reconciliation, ReportError, ReportQuery,
                                    currency_of, ledger_reconciliation, parse_aggregate,
                                    parse_enum, render_csv, render_json, render_table, run_query)
from otel_agent.cost.types import Allocation, Model, SharePolicy
from otel_agent.cost.window import parse_step, parse_window
from otel_agent.errors import ConfigError, OtelAgentError

FORMATS = ("table", "csv", "json", "focus", "html")


class _Parser(argparse.ArgumentParser):
    # argparse prints usage and calls sys.exit itself; we want one clear line and our exit code.
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="otel-agent cost report",
                description="Report the chargeback ledger per tenant.")
    p.add_argument("--ledger", required=True, metavar="URL",
                   help="sqlite:///path/ledger.db or postgresql://...")
    p.add_argument("--window", required=True, metavar="W",
                   help="today, yesterday, week, lastweek, month, lastmonth, 24h, 7d, 2026-11, "
                        "2026-11-24, or START,END in RFC 3339")
    p.add_argument("--by", default="namespace", metavar="KEY", help=AGGREGATE_HELP)
    p.add_argument("--model", default=Model.CHARGEBACK.value,
                   help="usage, request-or-usage, showback-ratio or chargeback")
    p.add_argument("--share-idle", default=SharePolicy.NONE.value,
                   help="none, proportional or even: how idle and overhead reach tenants")
    p.add_argument("--idle-by-node", action="store_true",
                   help="compute and share idle per node instead of per cluster")
    p.add_argument("--step", default=None, metavar="DUR", help="split the window: 1h, 1d, ...")
    p.add_argument("--filter", default=None, help='e.g. namespace:"shop"')
    p.add_argument("--format", default="table", help="table, csv, json, focus or html")
    p.add_argument("--focus-version", default=None, metavar="V", help=FOCUS_VERSION_HELP)
    p.add_argument("--output", default=None, metavar="FILE", help="write here instead of stdout")
    p.add_argument("--pricing", default=None, metavar="FILE",
                   help="the cost processor's pricing file; with it, hours not yet priced are "
                        "brought up to date before reporting (without it the ledger is read as is)")
    p.add_argument("--now", default=None, metavar="TIME",
                   help="evaluate relative windows (today, 24h, ...) as of this RFC 3339 time")
    return p


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, ReportQuery]:
    a = build_parser().parse_args(list(argv))
    if a.format not in FORMATS:
        raise ConfigError(f"unknown --format {a.format!r}; allowed: {', '.join(FORMATS)}")
    if a.focus_version is not None:
        if a.format != "focus":
            raise ConfigError("--focus-version: only with --format focus")
        if a.focus_version not in FOCUS_VERSIONS:
            raise ConfigError(f"--focus-version: unknown FOCUS version {a.focus_version!r}; "
                              f"allowed: {', '.join(FOCUS_VERSIONS)}")
    now = datetime.now(timezone.utc)
    if a.now:
        try:
            now = datetime.fromisoformat(a.now.replace("Z", "+00:00"))
        except ValueError as e:
            raise ConfigError(f"bad --now {a.now!r}: expected an RFC 3339 time") from e
        if now.tzinfo is None:
            raise ConfigError(f"bad --now {a.now!r}: the time needs an offset such as Z")
    try:
        window = parse_window(a.window, now)
        step = parse_step(a.step) if a.step else None
    except ConfigError as e:
        raise ConfigError(f"--window/--step: {e}") from e
    q = ReportQuery(
        window=window,
        aggregate=_opt("--by", parse_aggregate, a.by),
        step=step,
        model=_opt("--model", lambda t: parse_enum(Model, t, "model"), a.model),
        share_idle=_opt("--share-idle", lambda t: parse_enum(SharePolicy, t, "share policy"),
                        a.share_idle),
        idle_by_node=a.idle_by_node,
        filter=a.filter or None,
    )
    if not a.ledger.startswith(("sqlite:", "postgresql:", "postgresql+")):
        raise ConfigError(f"--ledger {a.ledger!r}: expected sqlite:///path/ledger.db or "
                          f"postgresql://...")
    return a, q


def _opt(name: str, fn: Callable[[str], Any], value: str) -> Any:
    try:
        return fn(value)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from e


def render(fmt: str, sets: list[list[Allocation]], q: ReportQuery,
           reconciliation: Reconciliation | None = None, focus_version: str | None = None) -> str:
    if fmt == "table":
        return render_table(sets, q, reconciliation=reconciliation)
    if fmt == "csv":
        return render_csv(sets)
    if fmt == "json":
        return render_json(sets)
    if fmt == "focus":
        return render_focus(sets, q, FocusOptions(version=focus_version or DEFAULT_FOCUS_VERSION))
    from otel_agent.cost.html_report import render_html
    return render_html(sets, q, reconciliation=reconciliation)


def open_store(url: str, pricing_file: str | None = None) -> Any:
    """The ledger's store for `url`. The seam to the ledger module: adapt here, nowhere else.

    A report must not create a ledger: a mistyped sqlite path would otherwise give an empty,
    plausible-looking report."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):].split("?", 1)[0]
        if path and path != ":memory:" and not os.path.exists(path):
            raise ConfigError(f"--ledger {url!r}: no ledger file at {path}")
    try:
        from otel_agent.cost.pricing import default_pricing, load_pricing
        from otel_agent.cost.store import Store
    except ImportError as e:
        raise ReportError(f"the ledger store module is not available: {e}") from e
    pricing = load_pricing(pricing_file) if pricing_file else default_pricing()
    return Store(url, pricing=pricing)


def main(argv: list[str], *, stdout: Any = None, stderr: Any = None,
         open_store_fn: Callable[[str, str | None], Any] | None = None,
         query_fn: Callable[..., Any] | None = None) -> int:
    """Run the command; returns the exit code. `open_store_fn`/`query_fn` replace the ledger
    (tests and embedding); with them, no refresh and no ledger reconciliation is attempted."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        a, q = parse_args(argv)
        store = (open_store_fn or open_store)(a.ledger, a.pricing)
        real = query_fn is None
        refresh = bool(a.pricing) if real else None
        try:
            # The table shows the whole window: let the ledger accumulate (correct for
            # shares and ratios, which do not add up across steps).
            sets = run_query(store, replace(q, step=None) if a.format == "table" else q,
                             query_fn, refresh=refresh)
            rec = None
            if a.format in ("table", "html") and q.model == Model.CHARGEBACK and real:
                rec = ledger_reconciliation(store, q, currency_of(sets))
            text = render(a.format, sets, q, rec, a.focus_version)
        finally:
            close = getattr(store, "close", None)
            if callable(close):
                close()
        if a.output:
            _write_atomically(a.output, text)
        else:
            out.write(text)
            out.flush()
        return 0
    except ConfigError as e:
        print(f"otel-agent cost report: error: {e}", file=err)
        return 2
    except OtelAgentError as e:
        print(f"otel-agent cost report: {e}", file=err)
        return 1
    except BrokenPipeError:
        return 0  # `| head` closed the pipe: not an error for a report


def _write_atomically(path: str, text: str) -> None:
    # A half-written report mailed to finance is worse than none: write aside, then rename.
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".report-", suffix=".tmp")
    except OSError as e:
        raise ConfigError(f"--output {path!r}: cannot write in {directory}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError(f"--output {path!r}: {e.strerror}") from e


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
