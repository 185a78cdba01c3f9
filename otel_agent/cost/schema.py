"""The ledger's schema: every table the cost processor keeps, in one place (SQLAlchemy Core).

Why a module of its own: the store (store.py) is the only code that reads and writes these
tables, but the schema is what operators, migrations and the Citus notes in the README talk
about; keeping it apart from the store's logic makes it one page to read. What each table is
for is said beside it; how the store uses them is store.py's docstring.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only

series_t = sa.Table(
    "series", metadata,
    sa.Column("series_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("metric", sa.String(255), nullable=False),
    sa.Column("quantity", sa.String(64), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("temporality", sa.String(16), nullable=False),
    sa.Column("cluster", sa.String(255), nullable=False),
    sa.Column("node", sa.String(255), nullable=False),
    sa.Column("node_key", sa.String(512), nullable=False, index=True),
    sa.Column("pod_uid", sa.String(64), nullable=False),
    sa.Column("container_key", sa.String(255), nullable=False),
    sa.Column("net_class", sa.String(64), nullable=False),
    sa.Column("direction", sa.String(16), nullable=False),
    sa.Column("namespace", sa.String(255), nullable=False),
    sa.Column("meta", sa.Text, nullable=False),
    sa.Column("seen_ns", sa.BigInteger, nullable=False),
    # wall-clock second of the last write that carried a point of the series (LIVE_WINDOW_S)
    sa.Column("touched_s", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index("series_pod", "pod_uid"),
    sa.Index("series_node_scope", "node_key", "scope"),
)

points_t = sa.Table(
    "points", metadata,
    sa.Column("series_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("start_ns", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("time_ns", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("value", sa.Float(53), nullable=False),
    sa.Column("node_key", sa.String(512), nullable=False),
    sa.Index("points_node_time", "node_key", "time_ns"),
    # PostgreSQL: one partition per UTC day of time_ns, made ahead by `_ensure_partitions`
    # (points outside them land in points_default); retention drops whole days.
    postgresql_partition_by="RANGE (time_ns)",
)
PARTITION_DAYS_AHEAD = 2
_UNNEST_POINTS = sa.text(
    "INSERT INTO points (series_id, start_ns, time_ns, value, node_key) SELECT * FROM unnest("
    "CAST(:sid AS BIGINT[]), CAST(:start AS BIGINT[]), CAST(:t AS BIGINT[]), "
    "CAST(:v AS DOUBLE PRECISION[]), CAST(:nk AS TEXT[])) "
    "ON CONFLICT (series_id, start_ns, time_ns) DO NOTHING")

dirty_t = sa.Table(
    "dirty_hours", metadata,
    sa.Column("node_key", sa.String(512), primary_key=True),
    sa.Column("hour", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("cluster", sa.String(255), nullable=False),
    sa.Column("node", sa.String(255), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

node_first_t = sa.Table(  # per node, the time of its first point ever stored (a minimum)
    "node_first", metadata,
    sa.Column("node_key", sa.String(512), primary_key=True),
    sa.Column("first_ns", sa.BigInteger, nullable=False),
    # the newest point time stored for the node (PostgreSQL, written under the node's write
    # lock; never below the truth): a batch entirely after it is in order, no lookup needed
    sa.Column("newest_ns", sa.BigInteger, nullable=True),
)

node_facts_t = sa.Table(  # what the ledger knows of each node (validate.NodeFacts)
    "node_facts", metadata,
    sa.Column("node_key", sa.String(512), primary_key=True),
    sa.Column("anchor_ns", sa.BigInteger, nullable=False),  # its first arrival, fixed
    sa.Column("boot_ns", sa.BigInteger, nullable=True),  # only falls
    sa.Column("cpu_cores", sa.Float(53), nullable=True),  # only rises
    sa.Column("memory_bytes", sa.Float(53), nullable=True),  # only rises
)

pod_ns_t = sa.Table(  # a pod uid's namespace: set once known, never changed
    "pod_namespaces", metadata,
    sa.Column("pod_uid", sa.String(64), primary_key=True),
    sa.Column("cluster", sa.String(255), primary_key=True),
    sa.Column("namespace", sa.String(255), nullable=False),
)

quarantine_t = sa.Table(  # node-hours whose rebuild failed; their dirty mark stays
    "quarantine", metadata,
    sa.Column("node_key", sa.String(512), primary_key=True),
    sa.Column("hour", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),  # of the dirty mark that failed
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("since_s", sa.BigInteger, nullable=False),
    sa.Column("retry_at_s", sa.BigInteger, nullable=False),
)

pods_t = sa.Table(  # labels for label:<key> aggregation, latest-seen wins
    "pod_labels", metadata,
    sa.Column("pod_uid", sa.String(64), primary_key=True),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("seen_ns", sa.BigInteger, nullable=False),
)

pod_annotations_t = sa.Table(  # annotations for annotation:<key> aggregation, latest-seen wins
    "pod_annotations", metadata,
    sa.Column("pod_uid", sa.String(64), primary_key=True),
    sa.Column("annotations", sa.Text, nullable=False),
    sa.Column("seen_ns", sa.BigInteger, nullable=False),
)


# Cloud invoice lines (FOCUS) as imported (otel_agent/cost/invoice_import.py): one row per
# line, keyed by its content; a corrected file replaces the lines of its (account, period).
invoice_lines_t = sa.Table(
    "invoice_lines", metadata,
    sa.Column("line_key", sa.String(64), primary_key=True),
    sa.Column("billing_account", sa.String(255), nullable=False),
    sa.Column("billing_period_start", sa.BigInteger, nullable=False),  # UTC seconds
    sa.Column("billing_period_end", sa.BigInteger, nullable=False),
    sa.Column("charge_period_start", sa.BigInteger, nullable=False),
    sa.Column("charge_period_end", sa.BigInteger, nullable=False),
    sa.Column("charge_category", sa.String(32), nullable=False),
    sa.Column("service_name", sa.String(2048), nullable=False),
    sa.Column("resource_id", sa.String(2048), nullable=False),
    sa.Column("sku_id", sa.String(2048), nullable=False),
    sa.Column("currency", sa.String(8), nullable=False),
    sa.Column("effective_cost", sa.String(64), nullable=False),  # exact, as a decimal string
    sa.Column("billed_cost", sa.String(64), nullable=False),
    sa.Column("micros", sa.BigInteger, nullable=False),  # EffectiveCost in micro-units
    sa.Column("match_kind", sa.String(16), nullable=False),  # node | shared | unmatched
    sa.Column("cluster", sa.String(255), nullable=False),
    sa.Column("node", sa.String(255), nullable=False),
    sa.Column("label", sa.String(255), nullable=False),  # shared: what; unmatched: why
    sa.Column("source", sa.String(1024), nullable=False),
    sa.Column("source_row", sa.BigInteger, nullable=False),
    sa.Index("invoice_lines_scope", "billing_account", "billing_period_start"),
)

# What the invoice says each node cost in each hour: the node lines spread over their hours.
# A rebuild of the node-hour prices it at this sum instead of the list rates (ledger.py).
invoice_node_hours_t = sa.Table(
    "invoice_node_hours", metadata,
    sa.Column("cluster", sa.String(255), primary_key=True),
    sa.Column("node", sa.String(255), primary_key=True),
    sa.Column("hour", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("billing_account", sa.String(255), primary_key=True),
    sa.Column("billing_period_start", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("micros", sa.BigInteger, nullable=False),
    sa.Index("invoice_node_hours_scope", "billing_account", "billing_period_start"),
)


def _ledger_table(name: str) -> sa.Table:
    return sa.Table(
        name, metadata,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("period_start", sa.BigInteger, nullable=False),  # UTC seconds
        sa.Column("cluster", sa.String(255), nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("workload_kind", sa.String(32), nullable=False),
        sa.Column("workload", sa.String(255), nullable=False),
        sa.Column("pod_uid", sa.String(64), nullable=False),
        sa.Column("pod", sa.String(255), nullable=False),
        sa.Column("container", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("resource", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("usage_qty", sa.Float(53), nullable=False),
        sa.Column("request_qty", sa.Float(53), nullable=False),
        sa.Column("ror_qty", sa.Float(53), nullable=False),
        sa.Column("cost_usage_micros", sa.BigInteger, nullable=False),
        sa.Column("cost_ror_micros", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Index(f"{name}_period_node", "period_start", "cluster", "node"),
        # a rebuild's delete and roll-up read one node's periods: without this they scanned
        # every node's rows of the period (O(nodes) per node-hour)
        sa.Index(f"{name}_node_period", "cluster", "node", "period_start"),
    )


hourly_t = _ledger_table("ledger_hourly")
daily_t = _ledger_table("ledger_daily")
monthly_t = _ledger_table("ledger_monthly")
LEDGER_TABLES = {"hour": hourly_t, "day": daily_t, "month": monthly_t}
_GROUP_COLS = ("cluster", "node", "namespace", "workload_kind", "workload", "pod_uid", "pod",
               "container", "kind", "resource", "unit", "currency")
_SUM_COLS = ("usage_qty", "request_qty", "ror_qty", "cost_usage_micros", "cost_ror_micros")
LEDGER_COLUMNS = ("period_start",) + _GROUP_COLS[:-1] + _SUM_COLS + ("currency",)
