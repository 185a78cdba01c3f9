"""`otel-agent cost import-invoice` and `otel-agent cost reconcile`: the cloud invoice in, and the
proof that the ledger adds up to it out. Same contract as `cost report`: a mistake (bad file,
bad argument) is one line naming it, exit 2, no traceback; a ledger that cannot answer, or a
reconciliation that does not balance, exits 1.

    otel-agent cost import-invoice focus-2026-11.parquet --ledger sqlite:///ledger.db
    otel-agent cost reconcile --ledger sqlite:///ledger.db --period 2026-11
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any, Sequence

from otel_agent.errors import ConfigError, OtelAgentError

DEFAULT_LEDGER = "sqlite:///ledger.db"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message} (see --help)")


def _import_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="otel-agent cost import-invoice",
                description="Import a FOCUS 1.0-1.3 cost export (CSV or Parquet; AWS Data "
                            "Exports, Azure Cost Management, the GCP FOCUS BigQuery view): its "
                            "EffectiveCost replaces the list rates of the nodes it names. Give "
                            "every file of a billing period's export in one command.")
    p.add_argument("files", nargs="+", metavar="FILE", help=".csv, .csv.gz or .parquet")
    p.add_argument("--ledger", default=DEFAULT_LEDGER, metavar="URL",
                   help="sqlite:///path/ledger.db or postgresql://... (must exist)")
    p.add_argument("--pricing", default=None, metavar="FILE",
                   help="the cost processor's pricing file; with it the re-priced hours are "
                        "rebuilt now (otherwise the serving process does it on its next refresh)")
    return p


def _reconcile_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="otel-agent cost reconcile",
                description="Per billing period: invoice total = allocated + idle + overhead + "
                            "shared + unmatched, to the cent.")
    p.add_argument("--ledger", default=DEFAULT_LEDGER, metavar="URL")
    p.add_argument("--period", default=None, metavar="YYYY-MM[-DD]",
                   help="the billing period starting on this date (default: every one imported)")
    p.add_argument("--format", default="table", help="table or json")
    p.add_argument("--pricing", default=None, metavar="FILE",
                   help="bring pending hours up to date first (as cost report --pricing)")
    return p


def _period(text: str | None, name: str = "--period") -> int | None:
    if text is None:
        return None
    for fmt in ("%Y-%m", "%Y-%m-%d"):
        try:
            return int(datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp())
        except ValueError:
            continue
    raise ConfigError(f"{name} {text[:40]!r}: expected YYYY-MM or YYYY-MM-DD")


def main(cmd: str, argv: Sequence[str], *, stdout: Any = None, stderr: Any = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    prog = f"otel-agent cost {cmd}"
    try:
        from otel_agent.cost.report_cli import open_store

        if cmd == "import-invoice":
            from otel_agent.cost.invoice_import import import_invoice

            a = _import_parser().parse_args(list(argv))
            store = open_store(a.ledger, a.pricing)
            try:
                result = import_invoice(store, a.files)
                if a.pricing:
                    store.refresh()
            finally:
                store.close()
            out.write(result.summary() + "\n")
            return 0
        if cmd == "reconcile":
            from otel_agent.cost.reconcile import reconcile_invoice, render_json, render_text

            a = _reconcile_parser().parse_args(list(argv))
            if a.format not in ("table", "json"):
                raise ConfigError(f"unknown --format {a.format!r}; allowed: table, json")
            period = _period(a.period)
            store = open_store(a.ledger, a.pricing)
            try:
                if a.pricing:
                    store.refresh()
                recs = reconcile_invoice(store, period=period)
            finally:
                store.close()
            out.write(render_json(recs) if a.format == "json" else render_text(recs))
            out.flush()
            return 0 if all(r.balanced for r in recs) else 1
        raise ConfigError(f"unknown command {cmd!r}")
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=err)
        return 2
    except OtelAgentError as e:
        print(f"{prog}: {e}", file=err)
        return 1
    except BrokenPipeError:
        return 0


__all__ = ["main"]
