"""The ledger's storage: raw points in, hourly/daily/monthly ledger rows out, on SQLite or
PostgreSQL through one SQLAlchemy Core code path.

Why this shape:
  * `write()` stores a decoded batch in one transaction and returns only after the commit:
    the receiver acknowledges a batch after `write()` returned, so whatever was acknowledged
    is on disk (SQLite runs in WAL mode with synchronous=FULL). A failed write raises
    StoreUnavailable and leaves nothing behind: the client retries the whole batch, and
    ON CONFLICT DO NOTHING makes the retry harmless.
  * Ledger rows are derived, never incremented: `write()` marks the (node, hour)s it touched
    dirty and `refresh()` recomputes those hours from the stored points (otel_agent.cost.ledger).
    Rebuilding instead of adding is what makes duplicates, late and out-of-order batches change
    nothing. Dirty marks carry a version, so a mark set while its hour was being rebuilt is not
    lost.
  * Each node's first point ever stored is kept beside the points (`node_first`, a minimum,
    so the order batches arrive in does not matter, and retention does not move it): a pod
    counter that came in the node's first export is a baseline (otel_agent.cost.ledger). When
    a batch lowers it, the hours around the old and the new first point are rebuilt.
  * Daily and monthly roll-ups are re-aggregated from the hourly rows of the days and months a
    refresh touched, so a monthly report reads ~1/720 of the rows (bench/cost.py).

Dialect differences are confined to `_insert()`: SQLite's and PostgreSQL's INSERT ... ON
CONFLICT constructs have the same SQLAlchemy API.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from otel_agent.cost.errors import LedgerUrlError, StoreUnavailable
from otel_agent.cost.ingest import CUMULATIVE, NANOS_PER_SECOND, Batch, hour_of, node_key
from otel_agent.cost.ledger import FIRST_EXPORT_SLACK_NS, MAX_GAP_NS, SeriesInfo, build_node_hour
from otel_agent.cost.pricing import Pricing

log = logging.getLogger(__name__)

_CHUNK = 500  # ids per IN (...) list: far below SQLite's and PostgreSQL's parameter limits

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
)

points_t = sa.Table(
    "points", metadata,
    sa.Column("series_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("start_ns", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("time_ns", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("value", sa.Float(53), nullable=False),
    sa.Column("node_key", sa.String(512), nullable=False),
    sa.Index("points_node_time", "node_key", "time_ns"),
)

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
)

pods_t = sa.Table(  # labels for label:<key> aggregation, latest-seen wins
    "pod_labels", metadata,
    sa.Column("pod_uid", sa.String(64), primary_key=True),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("seen_ns", sa.BigInteger, nullable=False),
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
    )


hourly_t = _ledger_table("ledger_hourly")
daily_t = _ledger_table("ledger_daily")
monthly_t = _ledger_table("ledger_monthly")
LEDGER_TABLES = {"hour": hourly_t, "day": daily_t, "month": monthly_t}
_GROUP_COLS = ("cluster", "node", "namespace", "workload_kind", "workload", "pod_uid", "pod",
               "container", "kind", "resource", "unit", "currency")
_SUM_COLS = ("usage_qty", "request_qty", "ror_qty", "cost_usage_micros", "cost_ror_micros")
LEDGER_COLUMNS = ("period_start",) + _GROUP_COLS[:-1] + _SUM_COLS + ("currency",)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each level is kept. Points older than `points_days` are rejected at ingest, so
    an hour is never rebuilt from a partly deleted history."""

    points_days: int = 14
    hourly_days: int = 90
    daily_days: int = 800
    monthly_days: int | None = None  # forever

    def __post_init__(self) -> None:
        from otel_agent.errors import ConfigError

        if self.points_days < 1:
            raise ConfigError("retention: points must be kept at least 1 day")
        if self.hourly_days < self.points_days + 2:
            raise ConfigError(f"retention: hourly rows ({self.hourly_days} d) must outlive raw "
                              f"points ({self.points_days} d) by 2 days")
        if self.daily_days < self.hourly_days + 62:
            raise ConfigError(f"retention: daily rows ({self.daily_days} d) must outlive hourly "
                              f"rows ({self.hourly_days} d) by 62 days")
        if self.monthly_days is not None and self.monthly_days < self.daily_days + 62:
            raise ConfigError("retention: monthly rows must outlive daily rows by 62 days")


def make_engine(url: str) -> Engine:
    """An engine for `sqlite:///path` or `postgresql://...` (psycopg 3)."""
    if url.startswith("sqlite:"):
        from pathlib import Path

        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise LedgerUrlError(f"ledger URL {_safe(url)!r}: use sqlite:///path/ledger.db (a file: the "
                                 "ledger must survive a restart)")
        parent = Path(path).parent
        if not parent.is_dir():
            raise LedgerUrlError(f"ledger URL {_safe(url)!r}: directory {parent} does not exist")
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed (acknowledged) batch survives a power cut, not only a crash.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        pg = "postgresql+psycopg://" + url.split("://", 1)[1]
        try:
            return sa.create_engine(pg, pool_pre_ping=True)
        except (sa.exc.ArgumentError, ValueError) as e:  # their text quotes the URL, password too
            raise LedgerUrlError(f"ledger URL {_safe(url)!r}: not a valid postgresql:// URL "
                                 f"({type(e).__name__})") from None
    raise LedgerUrlError(f"ledger URL {_safe(url)!r}: must start with sqlite:/// or postgresql://")


def _insert(engine: Engine, table: sa.Table):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


class Store:
    """The ledger. Thread-safe: the receiver's threads call write(), a background thread and
    queries call refresh()."""

    def __init__(self, url: str, *, pricing: Pricing, retention: Retention | None = None):
        self.url = url
        self.pricing = pricing
        self.retention = retention or Retention()
        self.engine = make_engine(url)
        try:
            metadata.create_all(self.engine)
            self._backfill_node_first()
        except sa.exc.SQLAlchemyError as e:
            raise LedgerUrlError(f"ledger {_safe(url)}: cannot open or create tables: "
                                 f"{_reason(e)}") from e
        self._refresh_lock = threading.Lock()
        self._state_lock = threading.Lock()
        # (series_id, start_ns) → newest time stored; lets in-order batches skip a lookup
        self._newest: dict[tuple[int, int], int] = {}
        # series_id → (seen_ns, meta) as stored; metadata is rewritten only when it changes
        self._series_meta: dict[int, tuple[int, str]] = {}
        # node_key → first_ns as last read or written; the stored value is never above it
        self._node_first: dict[str, int] = {}
        self._upsert_series = self._build_series_upsert()
        self._insert_points = _insert(self.engine, points_t).on_conflict_do_nothing(
            index_elements=["series_id", "start_ns", "time_ns"])
        ins = _insert(self.engine, dirty_t)
        self._mark_dirty = ins.on_conflict_do_update(
            index_elements=["node_key", "hour"], set_={"version": dirty_t.c.version + 1})

    def _build_series_upsert(self):
        ins = _insert(self.engine, series_t)
        newer = sa.or_(ins.excluded.seen_ns > series_t.c.seen_ns,
                       sa.and_(ins.excluded.seen_ns == series_t.c.seen_ns,
                               ins.excluded.meta > series_t.c.meta))
        return ins.on_conflict_do_update(
            index_elements=["series_id"],
            set_={"meta": ins.excluded.meta, "seen_ns": ins.excluded.seen_ns,
                  "namespace": ins.excluded.namespace},
            where=newer)

    def _backfill_node_first(self) -> None:
        """A ledger created before node_first existed: its nodes' first points, once."""
        with self.engine.begin() as c:
            if c.execute(sa.select(node_first_t.c.node_key).limit(1)).first() is not None:
                return
            if c.execute(sa.select(points_t.c.node_key).limit(1)).first() is None:
                return
            c.execute(sa.insert(node_first_t).from_select(
                ["node_key", "first_ns"],
                sa.select(points_t.c.node_key, sa.func.min(points_t.c.time_ns))
                .group_by(points_t.c.node_key)))

    def close(self) -> None:
        self.engine.dispose()

    # --- ingest ----------------------------------------------------------------------------

    def known_series(self) -> dict[int, str]:
        """series_id → namespace of every stored series (for the per-tenant series limit)."""
        with self.engine.connect() as c:
            return {sid: ns for sid, ns in c.execute(sa.select(series_t.c.series_id, series_t.c.namespace))}

    def write(self, batch: Batch) -> None:
        """Store a batch durably (returns after COMMIT) or raise StoreUnavailable."""
        if not batch.points:
            return
        series_rows = []
        with self._state_lock:
            for s in batch.series.values():
                cached = self._series_meta.get(s.series_id)
                # Rewrite metadata when it changed, or hourly to keep 'latest seen' current.
                if cached is None or cached[1] != s.meta or s.seen_ns > cached[0] + 3600 * NANOS_PER_SECOND:
                    series_rows.append({
                        "series_id": s.series_id, "metric": s.metric, "quantity": s.quantity,
                        "scope": s.scope, "temporality": s.temporality, "cluster": s.cluster,
                        "node": s.node, "node_key": node_key(s.cluster, s.node),
                        "pod_uid": s.pod_uid, "container_key": s.container_key,
                        "net_class": s.net_class, "direction": s.direction,
                        "namespace": s.namespace, "meta": s.meta, "seen_ns": s.seen_ns})
            newest = dict(self._newest)
        cumulative = {sid for sid, s in batch.series.items() if s.temporality == CUMULATIVE}
        gauges = {sid for sid, s in batch.series.items() if s.temporality == "gauge"}
        dirty: set[tuple[str, int]] = set()
        batch_min: dict[tuple[int, int], int] = {}
        batch_max: dict[tuple[int, int], int] = {}
        node_min: dict[str, int] = {}
        point_rows = []
        for sid, start, t, v, nk in batch.points:
            point_rows.append({"series_id": sid, "start_ns": start, "time_ns": t, "value": v,
                               "node_key": nk})
            dirty.add((nk, hour_of(t)))
            if t < node_min.get(nk, t + 1):
                node_min[nk] = t
            if sid in gauges:
                dirty.add((nk, hour_of(t + MAX_GAP_NS)))
            elif sid in cumulative:
                k = (sid, start)
                if k not in batch_min or t < batch_min[k]:
                    batch_min[k] = t
                if t > batch_max.get(k, -1):
                    batch_max[k] = t
        # A cumulative point that lands before points already stored changes its successor's
        # delta: find those successors and rebuild their hours too.
        late = {k: t for k, t in batch_min.items() if k not in newest or t <= newest[k]}
        node_of = {s.series_id: node_key(s.cluster, s.node) for s in batch.series.values()}
        with self._state_lock:
            earlier = {nk: t for nk, t in node_min.items()
                       if nk not in self._node_first or t < self._node_first[nk]}
        firsts: dict[str, int] = {}
        try:
            with self.engine.begin() as conn:
                if earlier:
                    firsts = self._lower_node_first(conn, earlier, dirty)
                if series_rows:
                    conn.execute(self._upsert_series, series_rows)
                conn.execute(self._insert_points, point_rows)
                if late:
                    dirty |= self._successor_hours(conn, late, batch, node_of)
                conn.execute(self._mark_dirty, [
                    {"node_key": nk, "hour": h, "cluster": nk.rsplit("/", 1)[0],
                     "node": nk.rsplit("/", 1)[1], "version": 1} for nk, h in sorted(dirty)])
        except sa.exc.SQLAlchemyError as e:
            raise StoreUnavailable(f"ledger cannot store the batch: {_reason(e)}") from e
        with self._state_lock:
            for r in series_rows:
                self._series_meta[r["series_id"]] = (r["seen_ns"], r["meta"])
            for k, t in batch_max.items():
                if t > self._newest.get(k, -1):
                    self._newest[k] = t
            for nk, t in firsts.items():
                self._node_first[nk] = min(t, self._node_first.get(nk, t))

    def _lower_node_first(self, conn, earlier: dict[str, int],
                          dirty: set[tuple[str, int]]) -> dict[str, int]:
        """Lower each node's stored first point to the batch's earliest where that is earlier,
        and mark dirty the hours whose pod baselines that can change: around the old first
        point (they lose it) and the new one (they gain it). Returns the first points now.

        The row is created if missing, then locked (FOR UPDATE on PostgreSQL; SQLite's writer
        lock is already held) before it is read, so concurrent writers lowering the same node
        see each other's value and every intermediate first point gets its hours marked."""
        out: dict[str, int] = {}
        ins = _insert(self.engine, node_first_t).on_conflict_do_nothing(index_elements=["node_key"])
        for nk in sorted(earlier):  # one lock order across writers: no deadlock
            t = earlier[nk]
            conn.execute(ins, {"node_key": nk, "first_ns": t})
            stored = conn.execute(sa.select(node_first_t.c.first_ns)
                                  .where(node_first_t.c.node_key == nk)
                                  .with_for_update()).scalar_one()
            if t < stored:
                conn.execute(sa.update(node_first_t).where(node_first_t.c.node_key == nk)
                             .values(first_ns=t))
                for x in (stored, t):
                    dirty.add((nk, hour_of(x)))
                    dirty.add((nk, hour_of(x + FIRST_EXPORT_SLACK_NS)))
            out[nk] = min(t, stored)
        return out

    def _successor_hours(self, conn, late: dict[tuple[int, int], int], batch: Batch,
                         node_of: dict[int, str]) -> set[tuple[str, int]]:
        out: set[tuple[str, int]] = set()
        batch_times: dict[tuple[int, int], list[int]] = defaultdict(list)
        for sid, start, t, _v, _nk in batch.points:
            if (sid, start) in late:
                batch_times[(sid, start)].append(t)
        sids = sorted({sid for sid, _ in late})
        tmin = min(late.values())
        stored: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i in range(0, len(sids), _CHUNK):
            chunk = sids[i:i + _CHUNK]
            q = sa.select(points_t.c.series_id, points_t.c.start_ns, points_t.c.time_ns).where(
                points_t.c.series_id.in_(chunk), points_t.c.time_ns > tmin)
            for sid, start, t in conn.execute(q):
                if (sid, start) in late:
                    stored[(sid, start)].append(t)
        for k, times in batch_times.items():
            after = sorted(stored.get(k, ()))
            for t in times:
                j = bisect.bisect_right(after, t)
                if j < len(after):
                    out.add((node_of[k[0]], hour_of(after[j])))
        return out

    # --- ledger ----------------------------------------------------------------------------

    def pending(self) -> int:
        with self.engine.connect() as c:
            return c.execute(sa.select(sa.func.count()).select_from(dirty_t)).scalar_one()

    def refresh(self, *, max_hours: int | None = None) -> int:
        """Rebuild every dirty node-hour (and its day and month roll-ups); returns how many."""
        done = 0
        with self._refresh_lock:
            while max_hours is None or done < max_hours:
                with self.engine.connect() as c:
                    marks = c.execute(
                        sa.select(dirty_t.c.node_key, dirty_t.c.hour, dirty_t.c.cluster,
                                  dirty_t.c.node, dirty_t.c.version)
                        .order_by(dirty_t.c.node_key, dirty_t.c.hour).limit(200)).all()
                if not marks:
                    break
                by_node: dict[str, list] = defaultdict(list)
                for m in marks:
                    by_node[m.node_key].append(m)
                for nk, ms in by_node.items():
                    self._rebuild_node(nk, ms)
                    done += len(ms)
        return done

    def _rebuild_node(self, nk: str, marks: Sequence) -> None:
        cluster, node = marks[0].cluster, marks[0].node
        try:
            with self.engine.connect() as c:
                series = {r.series_id: SeriesInfo(r.series_id, r.quantity, r.scope, r.temporality,
                                                  r.pod_uid, r.container_key, r.net_class,
                                                  r.direction, r.meta, r.seen_ns)
                          for r in c.execute(sa.select(series_t).where(series_t.c.node_key == nk))}
                node_first = c.execute(sa.select(node_first_t.c.first_ns)
                                       .where(node_first_t.c.node_key == nk)).scalar_one_or_none()
                rows = []
                for m in marks:
                    pts = self._hour_points(c, nk, m.hour, series)
                    rows.extend(build_node_hour(hour_s=m.hour, cluster=cluster, node=node,
                                                series=series, points=pts, pricing=self.pricing,
                                                node_first_ns=node_first))
            hours = [m.hour for m in marks]
            days = sorted({h - h % 86400 for h in hours})
            months = sorted({_month_start(h) for h in hours})
            with self.engine.begin() as c:
                c.execute(sa.delete(hourly_t).where(
                    hourly_t.c.cluster == cluster, hourly_t.c.node == node,
                    hourly_t.c.period_start.in_(hours)))
                if rows:
                    c.execute(sa.insert(hourly_t), [_row_dict(r) for r in rows])
                for d in days:
                    self._rollup(c, daily_t, hourly_t, cluster, node, d, d + 86400)
                for mo in months:
                    self._rollup(c, monthly_t, daily_t, cluster, node, mo, _next_month(mo))
                self._store_labels(c, series)
                for m in marks:
                    c.execute(sa.delete(dirty_t).where(
                        dirty_t.c.node_key == nk, dirty_t.c.hour == m.hour,
                        dirty_t.c.version == m.version))
        except sa.exc.SQLAlchemyError as e:
            raise StoreUnavailable(f"ledger cannot rebuild node {nk}: {_reason(e)}") from e

    def _hour_points(self, c, nk: str, hour_s: int, series: dict[int, SeriesInfo]):
        h0 = hour_s * NANOS_PER_SECOND
        h1 = h0 + 3600 * NANOS_PER_SECOND
        pts = c.execute(sa.select(points_t.c.series_id, points_t.c.start_ns, points_t.c.time_ns,
                                  points_t.c.value)
                        .where(points_t.c.node_key == nk, points_t.c.time_ns >= h0 - MAX_GAP_NS,
                               points_t.c.time_ns < h1)).all()
        pts = [tuple(p) for p in pts]
        # Cumulative keys with a point in the hour but none in the look-back need their exact
        # predecessor, however old: else the first point of the hour would count from zero.
        have_before: set[tuple[int, int]] = set()
        in_hour: set[tuple[int, int]] = set()
        for sid, start, t, _v in pts:
            s = series.get(sid)
            if s is None or s.temporality != CUMULATIVE:
                continue
            (in_hour if t >= h0 else have_before).add((sid, start))
        need = sorted(in_hour - have_before)
        if need:
            r = points_t.alias("r")
            for i in range(0, len(need), _CHUNK):
                chunk = need[i:i + _CHUNK]
                prev_t = (sa.select(sa.func.max(r.c.time_ns))
                          .where(r.c.series_id == points_t.c.series_id,
                                 r.c.start_ns == points_t.c.start_ns,
                                 r.c.time_ns < h0 - MAX_GAP_NS)
                          .scalar_subquery())
                q = sa.select(points_t.c.series_id, points_t.c.start_ns, points_t.c.time_ns,
                              points_t.c.value).where(
                    sa.tuple_(points_t.c.series_id, points_t.c.start_ns).in_(chunk),
                    points_t.c.time_ns == prev_t)
                pts.extend(tuple(p) for p in c.execute(q))
        return pts

    def _rollup(self, c, dst: sa.Table, src: sa.Table, cluster: str, node: str, lo: int, hi: int) -> None:
        c.execute(sa.delete(dst).where(dst.c.cluster == cluster, dst.c.node == node,
                                       dst.c.period_start == lo))
        cols = [sa.literal(lo, sa.BigInteger).label("period_start")]
        cols += [src.c[n] for n in _GROUP_COLS]
        cols += [sa.func.sum(src.c[n]).label(n) for n in _SUM_COLS]
        sel = (sa.select(*cols)
               .where(src.c.cluster == cluster, src.c.node == node,
                      src.c.period_start >= lo, src.c.period_start < hi)
               .group_by(*[src.c[n] for n in _GROUP_COLS]))
        c.execute(sa.insert(dst).from_select(["period_start", *_GROUP_COLS, *_SUM_COLS], sel))

    def _store_labels(self, c, series: dict[int, SeriesInfo]) -> None:
        best: dict[str, tuple[int, str]] = {}
        for s in series.values():
            if s.pod_uid and (s.pod_uid not in best or (s.seen_ns, s.meta) > best[s.pod_uid]):
                best[s.pod_uid] = (s.seen_ns, s.meta)
        if not best:
            return
        rows = [{"pod_uid": uid, "seen_ns": seen,
                 "labels": json.dumps(json.loads(meta).get("labels", {}), sort_keys=True)}
                for uid, (seen, meta) in sorted(best.items())]
        ins = _insert(self.engine, pods_t)
        c.execute(ins.on_conflict_do_update(
            index_elements=["pod_uid"],
            set_={"labels": ins.excluded.labels, "seen_ns": ins.excluded.seen_ns},
            where=ins.excluded.seen_ns > pods_t.c.seen_ns), rows)

    def pod_labels(self) -> dict[str, dict[str, str]]:
        with self.engine.connect() as c:
            q = sa.select(pods_t.c.pod_uid, pods_t.c.labels)
            return {uid: json.loads(labels) for uid, labels in c.execute(q)}

    # --- typed reads for reports (otel_agent.cost.allocation) ---------------------------------

    def ledger_groups(self, start: datetime, end: datetime, *, grain: str,
                      request_or_usage: bool) -> list["LedgerGroup"]:
        """Ledger rows of the periods starting in [start, end), summed per tenant, kind and
        resource, from the `grain` roll-up ("hour", "day" or "month"); the quantity and money
        of the chosen model (usage, or max(request, usage))."""
        t = LEDGER_TABLES[grain]
        qty = t.c.ror_qty if request_or_usage else t.c.usage_qty
        cost = t.c.cost_ror_micros if request_or_usage else t.c.cost_usage_micros
        group = [t.c.cluster, t.c.node, t.c.namespace, t.c.workload_kind, t.c.workload,
                 t.c.pod_uid, t.c.pod, t.c.container, t.c.kind, t.c.resource, t.c.currency]
        q = (sa.select(*group, sa.func.sum(qty), sa.func.sum(cost))
             .where(t.c.period_start >= int(start.timestamp()),
                    t.c.period_start < int(end.timestamp()))
             .group_by(*group))
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        return [LedgerGroup(*r[:11], quantity=float(r[11] or 0.0), cost_micros=int(r[12] or 0))
                for r in rows]

    def compute_cost_by_kind(self, start: datetime, end: datetime, *,
                             request_or_usage: bool) -> list["KindCost"]:
        """Per node and row kind, the money of the hourly rows in [start, end), network egress
        left out (it is billed on top of the node): what a reconciliation adds up."""
        t = LEDGER_TABLES["hour"]
        cost = t.c.cost_ror_micros if request_or_usage else t.c.cost_usage_micros
        q = (sa.select(t.c.cluster, t.c.node, t.c.kind, sa.func.sum(cost))
             .where(t.c.period_start >= int(start.timestamp()),
                    t.c.period_start < int(end.timestamp()),
                    sa.not_(t.c.resource.like("network:%")))
             .group_by(t.c.cluster, t.c.node, t.c.kind))
        with self.engine.connect() as c:
            return [KindCost(cl, n, k, int(v or 0)) for cl, n, k, v in c.execute(q)]

    # --- retention ---------------------------------------------------------------------------

    def oldest_accepted_ns(self, now: datetime) -> int:
        return int((now - timedelta(days=self.retention.points_days)).timestamp()) * NANOS_PER_SECOND

    def apply_retention(self, now: datetime) -> None:
        """Drop what retention no longer keeps. Per (series, start) the newest point before the
        cut is kept: it is the predecessor the next delta is computed against."""
        cut_points = self.oldest_accepted_ns(now)
        now_s = int(now.timestamp())
        try:
            with self.engine.begin() as c:
                r = points_t.alias("r")
                newer_before_cut = (sa.select(sa.literal(1)).where(
                    r.c.series_id == points_t.c.series_id, r.c.start_ns == points_t.c.start_ns,
                    r.c.time_ns > points_t.c.time_ns, r.c.time_ns < cut_points).exists())
                c.execute(sa.delete(points_t).where(points_t.c.time_ns < cut_points, newer_before_cut))
                c.execute(sa.delete(hourly_t).where(
                    hourly_t.c.period_start < now_s - self.retention.hourly_days * 86400))
                c.execute(sa.delete(daily_t).where(
                    daily_t.c.period_start < now_s - self.retention.daily_days * 86400))
                if self.retention.monthly_days is not None:
                    c.execute(sa.delete(monthly_t).where(
                        monthly_t.c.period_start < now_s - self.retention.monthly_days * 86400))
        except sa.exc.SQLAlchemyError as e:
            raise StoreUnavailable(f"ledger retention failed: {_reason(e)}") from e


@dataclass(frozen=True, slots=True)
class LedgerGroup:
    """A sum of ledger rows for one tenant (or special row), kind and resource (ledger_groups)."""

    cluster: str
    node: str
    namespace: str
    workload_kind: str
    workload: str
    pod_uid: str
    pod: str
    container: str
    kind: str
    resource: str
    currency: str
    quantity: float
    cost_micros: int


@dataclass(frozen=True, slots=True)
class KindCost:
    """A node's money of one row kind over a window (compute_cost_by_kind)."""

    cluster: str
    node: str
    kind: str
    cost_micros: int


def _row_dict(r) -> dict:
    return {"period_start": r.period_start, "cluster": r.cluster, "node": r.node,
            "namespace": r.namespace, "workload_kind": r.workload_kind, "workload": r.workload,
            "pod_uid": r.pod_uid, "pod": r.pod, "container": r.container, "kind": r.kind,
            "resource": r.resource, "unit": r.unit, "usage_qty": r.usage_qty,
            "request_qty": r.request_qty, "ror_qty": r.ror_qty,
            "cost_usage_micros": r.cost_usage_micros, "cost_ror_micros": r.cost_ror_micros,
            "currency": r.currency}


def _month_start(t_s: int) -> int:
    d = datetime.fromtimestamp(t_s, timezone.utc)
    return int(datetime(d.year, d.month, 1, tzinfo=timezone.utc).timestamp())


def _next_month(t_s: int) -> int:
    d = datetime.fromtimestamp(t_s, timezone.utc)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return int(datetime(y, m, 1, tzinfo=timezone.utc).timestamp())


def _reason(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    return str(orig or e).strip().splitlines()[0] if str(orig or e).strip() else type(e).__name__


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for a message
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}***@{rest.rsplit('@', 1)[-1]}" if "@" in rest else url
