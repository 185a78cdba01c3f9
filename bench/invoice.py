"""`cost import-invoice` at a month's scale: 100 nodes × 720 hourly FOCUS lines (AWS's shape,
Parquet) into a SQLite ledger, then the same file again (which must write nothing). Reports the
import's own CPU seconds and the process's peak RSS (the file, its lines and the rows to insert
are held in memory; invoice.MAX_LINES bounds them).

    python -m bench.invoice [NODES] [HOURS]
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from otel_agent.cost.invoice_import import import_invoice
from otel_agent.cost.pricing import default_pricing
from otel_agent.cost.store import Store, series_t
from otel_agent.otlp.resources import PROVIDER_ID_ATTR


def main(argv: list[str] | None = None) -> int:
    from tests.unit.cost.invoice_fixtures import Line, write

    args = list(argv or [])
    nodes = int(args[0]) if args else 100
    hours = int(args[1]) if len(args) > 1 else 720
    with tempfile.TemporaryDirectory() as d:
        store = Store(f"sqlite:///{d}/ledger.db", pricing=default_pricing())
        with store.engine.begin() as c:  # the nodes, as their node series name them
            c.execute(sa.insert(series_t), [dict(
                series_id=i + 1, metric="k8s.node.cpu.allocatable", quantity="cpu.allocatable",
                scope="node", temporality="gauge", cluster="c", node=f"n{i}", node_key=f"c/n{i}",
                pod_uid="", container_key="", net_class="", direction="", namespace="", seen_ns=1,
                meta=json.dumps({"node_attrs": {PROVIDER_ID_ATTR: f"aws:///z/i-{i:017x}"}}))
                for i in range(nodes)])
        t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
        lines = [Line(t0 + timedelta(hours=h), t0 + timedelta(hours=h + 1), "0.0812345678",
                      f"i-{i:017x}") for i in range(nodes) for h in range(hours)]
        path = write(Path(d) / "focus.parquet", "aws", lines, period=(t0, t0 + timedelta(days=30)))
        del lines
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        c0, w0 = time.process_time(), time.monotonic()
        r = import_invoice(store, [path])
        cpu, wall = time.process_time() - c0, time.monotonic() - w0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"import: {r.lines:,} lines, {nodes} nodes, {r.node_hours:,} node-hours: {cpu:.1f} s CPU "
              f"({cpu / r.lines * 1e6:.0f} µs a line), {wall:.1f} s wall; peak RSS {rss / 1024:.0f} MiB "
              f"(before the import {rss0 / 1024:.0f} MiB)")
        c0 = time.process_time()
        again = import_invoice(store, [path])
        print(f"re-import of the same file: {time.process_time() - c0:.1f} s CPU, "
              f"{'nothing written' if again.unchanged else 'WROTE (a bug)'}")
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
