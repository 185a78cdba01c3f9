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
  * What a point may claim about its node and its pod is checked inside the write transaction,
    against facts kept in the database (validate.py): the node's first arrival, boot time and
    capacity (`node_facts`), and each pod uid's namespace (`pod_namespaces`: set once, never
    changed; unknown → known re-attributes the pod's past hours). The database holds them so
    several processes sharing one PostgreSQL ledger see the same facts; the process caches
    only what can never be wrong later (a known namespace) or is re-read on a miss.
  * One bad node-hour never stops the others: a rebuild that fails is quarantined (its mark
    is kept, with the reason, retried when new points arrive for it or after a back-off) and
    the refresh goes on. A database that cannot be reached or written stops the pass instead
    (StoreUnavailable): that is not the hour's fault.
  * Series have a life: a series is live while points for it keep arriving (`touched_s`, the
    wall-clock second of the last write that carried it, refreshed at most every TOUCH_S);
    series with no point for the points retention are pruned with their points, and pods and
    nodes left without series with them. A rebuild loads only the series that have points in
    its hour (and the node's own), never every series the node ever had. In-process caches
    forget what was not used within LIVE_WINDOW_S (expiring.py).

  * Several processes may share one PostgreSQL ledger (a fleet of stateless replicas behind a
    Service). What one process could keep in memory is then coordinated in the database, with
    advisory locks keyed by node (`_NodeLocks`): a write holds its nodes' write locks for its
    transaction, so what it reads of a node (the newest point, successors of a late point,
    the node's facts) includes every earlier write of that node, whichever replica made it,
    and the per-process caches of those are not trusted; a rebuild holds its node's rebuild
    lock (try-lock: a node another replica is rebuilding is skipped, not waited for), so no
    two replicas rebuild the same node-hour at once; retention runs in one replica at a time.
    Locks are session-bound: a replica that dies releases them with its connections, and its
    marks, never deleted, are rebuilt by another. SQLite stays the one-process default.

Dialect differences are confined to `_insert()` and `_NodeLocks`: SQLite's and PostgreSQL's
INSERT ... ON CONFLICT constructs have the same SQLAlchemy API.
"""

from __future__ import annotations

import bisect
import json
import logging
import random
import threading
import time
import zlib
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator, NamedTuple, Sequence

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from otel_agent.cost import validate as V
from otel_agent.cost.errors import LedgerUrlError, StoreUnavailable
from otel_agent.cost.expiring import ExpiringCache
from otel_agent.cost.health import ProcessorHealth
from otel_agent.cost.ingest import (CUMULATIVE, GAUGE, NANOS_PER_HOUR, NANOS_PER_SECOND, UNKNOWN,
                                    Batch, hour_of, node_key)
from otel_agent.cost.ledger import FIRST_EXPORT_SLACK_NS, MAX_GAP_NS, SeriesInfo, build_node_hour
from otel_agent.cost.pricing import Pricing
from otel_agent.cost.schema import (  # noqa: F401 - the tables, re-exported for callers of store
    metadata,
    _ID,
    series_t,
    points_t,
    PARTITION_DAYS_AHEAD,
    _UNNEST_POINTS,
    dirty_t,
    node_first_t,
    node_facts_t,
    pod_ns_t,
    quarantine_t,
    pods_t,
    pod_annotations_t,
    invoice_lines_t,
    invoice_node_hours_t,
    _ledger_table,
    hourly_t,
    daily_t,
    monthly_t,
    LEDGER_TABLES,
    _GROUP_COLS,
    _SUM_COLS,
    LEDGER_COLUMNS)

log = logging.getLogger(__name__)

_CHUNK = 500  # ids per IN (...) list: far below SQLite's and PostgreSQL's parameter limits

# A series is live while it received a point within this window (wall clock of arrival, not
# the point's own time: a backfill of old points cannot make new series look dead). Points of
# a running pod arrive every export (10-60 s); after an hour without any, the pod is gone (or
# its node's agent is down: its series then come back as known series, which the per-namespace
# bound never refuses). Short enough that a CronJob namespace's dead pods stop counting within
# the hour; an hour of a CronJob a minute is 60 pods.
LIVE_WINDOW_S = 3600
TOUCH_S = 600  # a live series' row is re-touched at most this often (one write per 10 min)
QUARANTINE_FIRST_RETRY_S = 60  # then doubling, up to QUARANTINE_MAX_RETRY_S
QUARANTINE_MAX_RETRY_S = 3600
REFRESH_BATCH = 200  # dirty marks read per round
_READ_SPAN_S = 12 * 3600  # a node's dirty hours within this span are read with one query


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


def _unavailable(e: BaseException) -> bool:
    """The database cannot be reached or written right now (disk full, connection lost, locked,
    serialization failure): retry later, nothing is wrong with the data. Anything else raised
    while storing is the data's fault (a value or string the database refuses)."""
    if isinstance(e, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)):
        return True
    return isinstance(e, sa.exc.DBAPIError) and bool(e.connection_invalidated)


def _meta_digest(meta: str) -> int:
    """Enough to tell whether a series' metadata changed (a collision only delays a rewrite
    to the next TOUCH_S); the metadata itself is not kept in memory."""
    return hash(meta)


@dataclass(slots=True)
class _HourInputs:
    series: dict[int, SeriesInfo]
    points: list[tuple[int, int, int, float]]
    prev_node_ns: dict[int, int | None]


# Advisory lock classes (the first of PostgreSQL's two int4 keys); the second is the node's.
_LOCK_WRITE = 0x0C05_7001  # a node's ingest: one writing transaction per node at a time
_LOCK_REBUILD = 0x0C05_7002  # a node's rebuild: one replica per node at a time
_LOCK_RETENTION = 0x0C05_7003  # retention: one replica at a time (second key 0)
_LOCK_MIGRATE = 0x0C05_7004  # schema creation and migration (second key 0)


def _node_lock_key(nk: str) -> int:
    """A node key as PostgreSQL's second int4 lock key. Stable across processes (Python's
    hash() is not); a collision only serializes two nodes' work, it never mixes their data."""
    return zlib.crc32(nk.encode()) - 2**31


class _NodeLocks:
    """PostgreSQL advisory locks of the fleet; with SQLite (one process, one writer) every
    lock is granted at once."""

    def __init__(self, engine: Engine):
        self.shared = engine.dialect.name == "postgresql"
        self.engine = engine

    def lock_writes(self, conn, node_keys) -> None:
        """Hold each node's write lock until `conn`'s transaction ends (sorted: one lock order
        across replicas, so no deadlock)."""
        if not self.shared:
            return
        keys = sorted({_node_lock_key(nk) for nk in node_keys})
        # one statement; PostgreSQL evaluates a volatile function in the select list after the
        # ORDER BY (since 9.6), so the locks are taken in key order
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:a, k) FROM unnest(CAST(:keys AS INT[])) "
                             "AS k ORDER BY k"), {"a": _LOCK_WRITE, "keys": keys})

    @contextmanager
    def claim(self, cls: int, key: int) -> Iterator[bool]:
        """Try to take a session lock for the block; yields whether it was taken (never waits).
        A process that dies holding it loses its connection, and PostgreSQL releases it."""
        if not self.shared:
            yield True
            return
        try:
            c = self.engine.connect()
            got = bool(c.execute(sa.text("SELECT pg_try_advisory_lock(:a, :b)"),
                                 {"a": cls, "b": key}).scalar())
            c.commit()
        except sa.exc.SQLAlchemyError as e:
            raise StoreUnavailable(f"ledger cannot take a lock: {_reason(e)}") from e
        with c:
            try:
                yield got
            finally:
                if got:
                    try:
                        c.execute(sa.text("SELECT pg_advisory_unlock(:a, :b)"), {"a": cls, "b": key})
                        c.commit()
                    except sa.exc.SQLAlchemyError:  # the session is gone, and its lock with it
                        c.invalidate()


class Store:
    """The ledger. Thread-safe: the receiver's threads call write(), a background thread and
    queries call refresh()."""

    def __init__(self, url: str, *, pricing: Pricing, retention: Retention | None = None,
                 health: ProcessorHealth | None = None):
        self.url = url
        self.pricing = pricing
        self.retention = retention or Retention()
        self.health = health or ProcessorHealth()
        self.engine = make_engine(url)
        try:
            with self._migration_lock():  # replicas starting together create tables once
                metadata.create_all(self.engine)
                self._migrate()
                self._backfill_node_first()
                self._ensure_partitions(datetime.now(timezone.utc))
        except sa.exc.SQLAlchemyError as e:
            raise LedgerUrlError(f"ledger {_safe(url)}: cannot open or create tables: "
                                 f"{_reason(e)}") from e
        self._locks = _NodeLocks(self.engine)
        # Shared with other processes: caches of what other writers move (newest points,
        # node facts) are not trusted; the database is read under the node's write lock.
        self.shared = self._locks.shared
        self._refresh_lock = threading.Lock()
        self._state_lock = threading.Lock()
        # Caches of what the database holds; a miss re-reads it, so each forgets entries not
        # used within LIVE_WINDOW_S and memory follows the live series (expiring.py).
        # (series_id, start_ns) → newest time stored; lets in-order batches skip a lookup
        self._newest: ExpiringCache[tuple[int, int], int] = ExpiringCache(LIVE_WINDOW_S)
        # series_id → (seen_ns, touched_s, digest of meta) as stored
        self._series_meta: ExpiringCache[int, tuple[int, int, int]] = ExpiringCache(LIVE_WINDOW_S)
        # node_key → first_ns as last read or written; the stored value is never above it
        self._node_first: ExpiringCache[str, int] = ExpiringCache(LIVE_WINDOW_S)
        # node_key → newest point time stored (a late point's next export needs a rebuild)
        self._node_newest: ExpiringCache[str, int] = ExpiringCache(LIVE_WINDOW_S)
        self._facts: ExpiringCache[str, V.NodeFacts] = ExpiringCache(LIVE_WINDOW_S)
        # (cluster, pod_uid) → namespace, only once known: it can never change after that
        self._pod_ns: ExpiringCache[tuple[str, str], str] = ExpiringCache(LIVE_WINDOW_S)
        self._upsert_series = self._build_series_upsert()
        self._insert_points = _insert(self.engine, points_t).on_conflict_do_nothing(
            index_elements=["series_id", "start_ns", "time_ns"])
        ins = _insert(self.engine, dirty_t)
        self._mark_dirty = ins.on_conflict_do_update(
            index_elements=["node_key", "hour"], set_={"version": dirty_t.c.version + 1})

    def _build_series_upsert(self):
        """Latest-seen metadata wins (ties by content); the newest point time and the arrival
        second only grow; a namespace once known stays (validated before)."""
        ins = _insert(self.engine, series_t)
        x, c = ins.excluded, series_t.c
        newer = sa.or_(x.seen_ns > c.seen_ns, sa.and_(x.seen_ns == c.seen_ns, x.meta > c.meta))
        return ins.on_conflict_do_update(
            index_elements=["series_id"],
            set_={"meta": sa.case((newer, x.meta), else_=c.meta),
                  "seen_ns": sa.case((x.seen_ns > c.seen_ns, x.seen_ns), else_=c.seen_ns),
                  "touched_s": sa.case((x.touched_s > c.touched_s, x.touched_s), else_=c.touched_s),
                  "namespace": sa.case((x.namespace != UNKNOWN, x.namespace), else_=c.namespace)})

    def _migrate(self) -> None:
        """Bring a ledger made by an earlier version up to this schema (new tables are made by
        create_all; a new column or index of an existing table is added here)."""
        self._partition_points()
        insp = sa.inspect(self.engine)
        cols = {c["name"] for c in insp.get_columns("series")}
        if "touched_s" not in cols:
            with self.engine.begin() as c:
                c.execute(sa.text("ALTER TABLE series ADD COLUMN touched_s BIGINT NOT NULL DEFAULT 0"))
        if "newest_ns" not in {c["name"] for c in insp.get_columns("node_first")}:
            with self.engine.begin() as c:  # unknown (NULL) until the next write of the node
                c.execute(sa.text("ALTER TABLE node_first ADD COLUMN newest_ns BIGINT"))
        for table in (series_t, hourly_t, daily_t, monthly_t):
            for idx in table.indexes:
                idx.create(self.engine, checkfirst=True)

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """PostgreSQL: one process at a time creates or migrates the schema (concurrent CREATE
        TABLEs of the same name fail); the others wait, then find it done."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        with self.engine.connect() as c:
            c.execute(sa.text("SELECT pg_advisory_lock(:a, 0)"), {"a": _LOCK_MIGRATE})
            c.commit()
            try:
                yield
            finally:
                c.execute(sa.text("SELECT pg_advisory_unlock(:a, 0)"), {"a": _LOCK_MIGRATE})
                c.commit()

    def _partitioned(self, c) -> bool:
        return c.execute(sa.text(
            "SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass('points')")).first() is not None

    def _partitions(self, c) -> list[tuple[str, int | None, int | None]]:
        """(name, from, to) of each partition of points; None for MINVALUE/MAXVALUE/DEFAULT."""
        import re

        out = []
        for name, bound in c.execute(sa.text(
                "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass('points')")):
            m = re.search(r"FROM \((.+?)\) TO \((.+?)\)", bound or "")
            if m is None:
                out.append((name, None, None))
                continue
            lo, hi = (v.strip("'") for v in m.groups())
            out.append((name, None if lo == "MINVALUE" else int(lo), None if hi == "MAXVALUE" else int(hi)))
        return out

    def _ensure_partitions(self, now: datetime) -> None:
        """PostgreSQL: a partition for each UTC day points are accepted for, up to
        PARTITION_DAYS_AHEAD days ahead, and the default partition for any other time. A
        day whose points already sit in the default partition is left there (still correct)."""
        if self.engine.dialect.name != "postgresql":
            return
        day = 86400 * NANOS_PER_SECOND
        today = int(now.timestamp()) * NANOS_PER_SECOND // day * day
        with self.engine.begin() as c:
            if not self._partitioned(c):
                return
            c.execute(sa.text("CREATE TABLE IF NOT EXISTS points_default PARTITION OF points DEFAULT"))
            have = self._partitions(c)
            taken = [(lo if lo is not None else -2**63, hi if hi is not None else 2**63)
                     for name, lo, hi in have if name != "points_default"]
            for k in range(-self.retention.points_days - 1, PARTITION_DAYS_AHEAD + 1):
                lo = today + k * day
                hi = lo + day
                if any(a < hi and lo < b for a, b in taken):
                    continue
                if c.execute(sa.text("SELECT 1 FROM points_default WHERE time_ns >= :lo AND "
                                     "time_ns < :hi LIMIT 1"), {"lo": lo, "hi": hi}).first():
                    continue
                name = "points_p" + datetime.fromtimestamp(lo // NANOS_PER_SECOND, timezone.utc).strftime("%Y%m%d")
                c.execute(sa.text(f"CREATE TABLE {name} PARTITION OF points "
                                  f"FOR VALUES FROM ({lo}) TO ({hi})"))

    def _drop_partitions(self, cut_ns: int) -> int:
        """PostgreSQL: drop each day partition wholly before `cut_ns`, keeping (moved to the
        default partition) each counter's newest point before the cut that lies in it: the
        predecessor the next delta is computed against. Returns the rows dropped."""
        if self.engine.dialect.name != "postgresql":
            return 0
        dropped = 0
        with self.engine.connect() as c:
            if not self._partitioned(c):
                return 0
            old = sorted((hi, name) for name, lo, hi in self._partitions(c)
                         if hi is not None and hi <= cut_ns and name != "points_default")
        for _hi, name in old:
            with self.engine.begin() as c:
                c.execute(sa.text(
                    f"CREATE TEMP TABLE carry ON COMMIT DROP AS SELECT r.* FROM (SELECT DISTINCT ON "
                    f"(series_id, start_ns) * FROM {name} ORDER BY series_id, start_ns, time_ns DESC) r "
                    f"WHERE NOT EXISTS (SELECT 1 FROM points p WHERE p.series_id = r.series_id AND "
                    f"p.start_ns = r.start_ns AND p.time_ns > r.time_ns AND p.time_ns < :cut)"),
                    {"cut": cut_ns})
                n = c.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()
                c.execute(sa.text(f"ALTER TABLE points DETACH PARTITION {name}"))
                c.execute(sa.text(f"DROP TABLE {name}"))
                kept = c.execute(sa.text("INSERT INTO points SELECT * FROM carry")).rowcount
                dropped += n - kept
        return dropped

    def _partition_points(self) -> None:
        """PostgreSQL: a points table made before partitioning becomes the partition of every
        time up to the end of its newest point's day (points_legacy: dropped whole by retention
        once that day is past the points retention); new days get partitions of their own.
        One full scan of the old table (ATTACH validates its bound), once."""
        if self.engine.dialect.name != "postgresql":
            return
        with self.engine.begin() as c:
            if self._partitioned(c):
                return
            newest = c.execute(sa.select(sa.func.max(points_t.c.time_ns))).scalar()
            c.execute(sa.text("ALTER TABLE points RENAME TO points_legacy"))
            for idx in ("points_pkey", "points_node_time"):
                c.execute(sa.text(f"ALTER INDEX IF EXISTS {idx} RENAME TO {idx.replace('points', 'points_legacy', 1)}"))
            points_t.create(c)
            if newest is None:
                c.execute(sa.text("DROP TABLE points_legacy"))
                return
            day = 86400 * NANOS_PER_SECOND
            bound = (newest // day + 1) * day
            c.execute(sa.text(f"ALTER TABLE points ATTACH PARTITION points_legacy "
                              f"FOR VALUES FROM (MINVALUE) TO ({bound})"))
        log.info("ledger: points table partitioned by day (the existing points are one partition "
                 "up to %s)", _iso(bound // NANOS_PER_SECOND))

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

    def _rotate(self, now_s: float) -> None:
        for cache in (self._newest, self._series_meta, self._node_first, self._node_newest,
                      self._facts, self._pod_ns):
            cache.rotate(now_s)

    def cached_entries(self) -> int:
        """Entries in the process's caches (the soak benchmark watches this stay flat)."""
        with self._state_lock:
            return sum(len(c) for c in (self._newest, self._series_meta, self._node_first,
                                        self._node_newest, self._facts, self._pod_ns))

    # --- ingest ----------------------------------------------------------------------------

    def existing_series(self, sids) -> dict[int, str]:
        """series_id → namespace of those of `sids` that are stored."""
        sids = sorted(sids)
        out: dict[int, str] = {}
        with self.engine.connect() as c:
            for i in range(0, len(sids), _CHUNK):
                q = sa.select(series_t.c.series_id, series_t.c.namespace).where(
                    series_t.c.series_id.in_(sids[i:i + _CHUNK]))
                out.update({sid: ns for sid, ns in c.execute(q)})
        return out

    def live_series(self, now_s: int) -> dict[str, int]:
        """namespace → series live at `now_s` (a point arrived within LIVE_WINDOW_S); node-wide
        series (namespace '') included under ''."""
        q = (sa.select(series_t.c.namespace, sa.func.count())
             .where(series_t.c.touched_s >= now_s - LIVE_WINDOW_S)
             .group_by(series_t.c.namespace))
        with self.engine.connect() as c:
            return {ns: n for ns, n in c.execute(q)}

    def write(self, batch: Batch, *, now_ns: int | None = None) -> None:
        """Store a batch durably (returns after COMMIT) or raise StoreUnavailable. Points the
        per-node and per-pod rules refuse are removed from `batch` and counted in it as
        rejected, with their reason (they are not stored)."""
        if not batch.points:
            return
        now_ns = time.time_ns() if now_ns is None else now_ns
        with self._state_lock:
            self._rotate(now_ns / NANOS_PER_SECOND)
        try:
            self._write(batch, now_ns)
        except Exception as e:  # noqa: BLE001 - sorted below: ours to retry, or the data's
            if _unavailable(e):
                raise StoreUnavailable(f"ledger cannot store the batch: {_reason(e)}") from e
            if isinstance(e, StoreUnavailable):
                raise
            self._write_isolating(batch, now_ns, e)

    def _write_isolating(self, batch: Batch, now_ns: int, first: BaseException) -> None:
        """The database refused the batch for its content, though it passed validation: store
        it series by series, so only the series the database refuses are rejected (with its
        reason) and the others are kept. Never reached by validated input; the backstop that
        keeps one bad string from sinking a whole batch into retries forever."""
        log.warning("ledger refused a batch (%s); storing it series by series", _reason(first))
        by_sid: dict[int, list] = defaultdict(list)
        for p in batch.points:
            by_sid[p[0]].append(p)
        kept: list = []
        for sid, pts in sorted(by_sid.items()):
            sub = Batch(series={sid: batch.series[sid]}, points=pts)
            try:
                self._write(sub, now_ns)
            except Exception as e:  # noqa: BLE001 - same sorting as write()
                if _unavailable(e):
                    raise StoreUnavailable(f"ledger cannot store the batch: {_reason(e)}") from e
                batch.reject(V.R_STORAGE, f"{batch.series[sid].metric}: the ledger cannot store "
                             f"this series: {_reason(e)}", len(pts))
                continue
            for code, n in sub.codes.items():
                batch.codes[code] = batch.codes.get(code, 0) + n
            for msg, n in sub.errors.items():
                batch.errors[msg] = batch.errors.get(msg, 0) + n
            batch.rejected += sub.rejected
            kept.extend(sub.points)
        batch.points = kept
        batch.series = {sid: s for sid, s in batch.series.items() if sid in {p[0] for p in kept}}

    def _write(self, batch: Batch, now_ns: int) -> None:
        now_s = now_ns // NANOS_PER_SECOND
        dirty: set[tuple[str, int]] = set()
        series_rows: list[dict] = []
        newest: dict = {}
        firsts: dict = {}
        node_newest: dict = {}
        with self.engine.begin() as conn:
            self._locks.lock_writes(conn, {p[4] for p in batch.points})
            facts = self._apply_node_rules(conn, batch)  # stored even if no point is left
            pod_ns = self._apply_pod_rules(conn, batch, dirty) if batch.points else {}
            if batch.points:
                series_rows, newest, firsts, node_newest = self._store(conn, batch, now_s, dirty)
        # committed: the caches may learn what the database now holds
        with self._state_lock:
            for nk, f in facts.items():
                self._facts[nk] = f
            for k, ns in pod_ns.items():
                self._pod_ns[k] = ns
            for r in series_rows:
                self._series_meta[r["series_id"]] = (r["seen_ns"], r["touched_s"],
                                                     _meta_digest(r["meta"]))
            for k, t in newest.items():
                if t > self._newest.get(k, -1):
                    self._newest[k] = t
            for nk, t in firsts.items():
                self._node_first[nk] = min(t, self._node_first.get(nk, t))
            for nk, t in node_newest.items():
                if t > self._node_newest.get(nk, -1):
                    self._node_newest[nk] = t

    # - per-node rules -

    def _apply_node_rules(self, conn, batch: Batch) -> dict[str, V.NodeFacts]:
        """First-seen window, boot and capacity (validate.check_against_node); returns the
        facts as they stand once this batch is committed."""
        by_node: dict[str, int] = {}
        for _sid, _start, t, _v, nk in batch.points:
            if t < by_node.get(nk, t + 1):
                by_node[nk] = t
        facts: dict[str, V.NodeFacts] = {}
        stored: dict[str, tuple] = {}
        # shared: another replica may have moved them; read as stored, all nodes in one query
        read = self._read_facts(conn, sorted(by_node)) if self.shared else {}
        for nk in sorted(by_node):
            with self._state_lock:
                f = read.get(nk) if self.shared else self._facts.get(nk)
            f = V.NodeFacts(f.anchor_ns, f.boot_ns, f.cpu_cores, f.memory_bytes) if f else None
            if f is None:
                f = self._load_facts(conn, nk, by_node[nk])
            facts[nk] = f
            stored[nk] = (f.boot_ns, f.cpu_cores, f.memory_bytes)
        series = batch.series
        # 1. the first-seen window, before anything from those points becomes a fact
        keep = batch.points
        if any(by_node[nk] < f.anchor_ns - V.FIRST_SEEN_WINDOW_NS for nk, f in facts.items()):
            keep = []
            for p in batch.points:
                try:
                    V.check_first_seen(facts[p[4]], series[p[0]].node, series[p[0]].metric, p[2])
                except V.Invalid as e:
                    batch.reject(e.code, e.message)
                    continue
                keep.append(p)
        # 2. what this batch says about its nodes: boot (node-wide cumulative counters start
        #    at boot), capacity
        node_sids = {sid for sid, s in series.items() if s.scope in V.BOOT_SCOPES}
        for sid, start, _t, v, nk in keep:
            if sid not in node_sids:
                continue
            s = series[sid]
            if s.temporality == CUMULATIVE:
                facts[nk].merge(boot_ns=start)
            elif s.scope == "node" and s.quantity == "cpu.capacity":
                facts[nk].merge(cpu_cores=v)
            elif s.scope == "node" and s.quantity == "memory.capacity":
                facts[nk].merge(memory_bytes=v)
        # 3. every point against its node (only series a rule applies to)
        checked = set()
        for sid, s in series.items():
            f = facts.get(node_key(s.cluster, s.node))
            if f is not None and V.node_rules_apply(f, s.quantity, s.scope, s.temporality != GAUGE):
                checked.add(sid)
        kept = []
        for p in keep:
            sid, start, t, v, nk = p
            if sid in checked:
                s = series[sid]
                try:
                    V.check_against_node(facts[nk], node=s.node, name=s.metric,
                                         quantity=s.quantity, scope=s.scope,
                                         counter=s.temporality != GAUGE, value=v,
                                         start_ns=start, time_ns=t)
                except V.Invalid as e:
                    batch.reject(e.code, e.message)
                    continue
            kept.append(p)
        batch.points = kept
        for nk, f in facts.items():
            if (f.boot_ns, f.cpu_cores, f.memory_bytes) != stored[nk]:
                self._save_facts(conn, nk, f)
        return facts

    def _read_facts(self, conn, nks: list[str]) -> dict[str, V.NodeFacts]:
        f = node_facts_t.c
        out: dict[str, V.NodeFacts] = {}
        for i in range(0, len(nks), _CHUNK):
            for r in conn.execute(sa.select(f.node_key, f.anchor_ns, f.boot_ns, f.cpu_cores,
                                            f.memory_bytes).where(f.node_key.in_(nks[i:i + _CHUNK]))):
                out[r.node_key] = V.NodeFacts(r.anchor_ns, r.boot_ns, r.cpu_cores, r.memory_bytes)
        return out

    def _load_facts(self, conn, nk: str, first_t: int) -> V.NodeFacts:
        f = node_facts_t.c
        row = conn.execute(sa.select(f.anchor_ns, f.boot_ns, f.cpu_cores, f.memory_bytes)
                           .where(f.node_key == nk)).first()
        if row is None:
            # A new node: its anchor is this first arrival, or the first point an earlier
            # version of the ledger stored for it.
            known_first = conn.execute(sa.select(node_first_t.c.first_ns)
                                       .where(node_first_t.c.node_key == nk)).scalar_one_or_none()
            anchor = first_t if known_first is None else min(first_t, known_first)
            conn.execute(_insert(self.engine, node_facts_t).on_conflict_do_nothing(
                index_elements=["node_key"]), {"node_key": nk, "anchor_ns": anchor})
            row = conn.execute(sa.select(f.anchor_ns, f.boot_ns, f.cpu_cores, f.memory_bytes)
                               .where(f.node_key == nk)).first()
        return V.NodeFacts(row.anchor_ns, row.boot_ns, row.cpu_cores, row.memory_bytes)

    def _save_facts(self, conn, nk: str, f: V.NodeFacts) -> None:
        """Merge into the stored facts (another writer may have moved them too)."""
        c = node_facts_t.c
        vals = {}
        if f.boot_ns is not None:
            vals["boot_ns"] = sa.case((sa.or_(c.boot_ns.is_(None), c.boot_ns > f.boot_ns), f.boot_ns),
                                      else_=c.boot_ns)
        if f.cpu_cores is not None:
            vals["cpu_cores"] = sa.case((sa.or_(c.cpu_cores.is_(None), c.cpu_cores < f.cpu_cores),
                                         f.cpu_cores), else_=c.cpu_cores)
        if f.memory_bytes is not None:
            vals["memory_bytes"] = sa.case(
                (sa.or_(c.memory_bytes.is_(None), c.memory_bytes < f.memory_bytes), f.memory_bytes),
                else_=c.memory_bytes)
        conn.execute(sa.update(node_facts_t).where(c.node_key == nk).values(**vals))

    # - per-pod rules -

    def _apply_pod_rules(self, conn, batch: Batch, dirty: set[tuple[str, int]]) -> dict[tuple[str, str], str]:
        """A pod uid's namespace, once known, never changes. Returns (cluster, uid) → namespace
        known after this batch; sets each pod series' namespace to it."""
        series = batch.series
        live = {p[0] for p in batch.points}
        pods: dict[tuple[str, str], list[int]] = defaultdict(list)
        for sid in live:
            s = series[sid]
            if s.pod_uid:
                pods[(s.cluster, s.pod_uid)].append(sid)
        if not pods:
            return {}
        known: dict[tuple[str, str], str] = {}
        with self._state_lock:
            for k in pods:
                ns = self._pod_ns.get(k)
                if ns is not None:
                    known[k] = ns
        missing = sorted(k for k in pods if k not in known)
        stored = self._read_pod_ns(conn, missing) if missing else {}
        first_t: dict[int, int] = {}
        if missing:  # only needed to choose between claims of a pod not known yet
            for sid, _start, t, _v, _nk in batch.points:
                if t < first_t.get(sid, t + 1):
                    first_t[sid] = t
        refused: set[int] = set()
        out: dict[tuple[str, str], str] = {}
        for k in sorted(pods):
            sids = pods[k]
            have = known.get(k, stored.get(k))
            if have is None or have == UNKNOWN:
                # The first known claim wins (earliest point, then name): the same uid under
                # two namespaces in one batch cannot both be true.
                claims = sorted((first_t[sid], series[sid].namespace) for sid in sids
                                if series[sid].namespace != UNKNOWN)
                claim = claims[0][1] if claims else UNKNOWN
                if have is None:
                    conn.execute(_insert(self.engine, pod_ns_t).on_conflict_do_nothing(
                        index_elements=["pod_uid", "cluster"]),
                        {"pod_uid": k[1], "cluster": k[0], "namespace": claim})
                elif claim != UNKNOWN:
                    done = conn.execute(sa.update(pod_ns_t).where(
                        pod_ns_t.c.pod_uid == k[1], pod_ns_t.c.cluster == k[0],
                        pod_ns_t.c.namespace == UNKNOWN).values(namespace=claim)).rowcount
                    if done:
                        self._reattribute(conn, k, claim, dirty)
                have = self._read_pod_ns(conn, [k]).get(k, claim)
            for sid in sids:
                s = series[sid]
                if s.namespace == UNKNOWN or s.namespace == have:
                    s.namespace = have
                else:
                    refused.add(sid)
            if have != UNKNOWN:
                out[k] = have
        if refused:
            kept = []
            for p in batch.points:
                if p[0] in refused:
                    s = series[p[0]]
                    batch.reject(V.R_NAMESPACE, f"{s.metric}: pod uid {s.pod_uid} belongs to "
                                 f"namespace {out.get((s.cluster, s.pod_uid), UNKNOWN)}, not "
                                 f"{s.namespace}: a pod's namespace never changes")
                else:
                    kept.append(p)
            batch.points = kept
        return out

    def _read_pod_ns(self, conn, keys) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        keys = sorted(keys)
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i:i + _CHUNK]
            q = sa.select(pod_ns_t.c.cluster, pod_ns_t.c.pod_uid, pod_ns_t.c.namespace).where(
                pod_ns_t.c.pod_uid.in_(sorted({uid for _c, uid in chunk})))
            want = set(chunk)
            for cluster, uid, ns in conn.execute(q):
                if (cluster, uid) in want:
                    out[(cluster, uid)] = ns
        return out

    def _reattribute(self, conn, pod: tuple[str, str], namespace: str,
                     dirty: set[tuple[str, int]]) -> None:
        """A pod first seen without its namespace (API server down) is now known: its series
        take the namespace and every hour they have points in is rebuilt."""
        cluster, uid = pod
        sids = [sid for (sid,) in conn.execute(sa.select(series_t.c.series_id).where(
            series_t.c.pod_uid == uid, series_t.c.cluster == cluster))]
        if not sids:
            return
        conn.execute(sa.update(series_t).where(series_t.c.series_id.in_(sids))
                     .values(namespace=namespace))
        for i in range(0, len(sids), _CHUNK):
            q = (sa.select(points_t.c.node_key, (points_t.c.time_ns // NANOS_PER_HOUR).label("h"))
                 .where(points_t.c.series_id.in_(sids[i:i + _CHUNK])).distinct())
            for nk, h in conn.execute(q):
                dirty.add((nk, int(h) * 3600))
        log.info("pod %s is now known to be in namespace %s: its past hours are re-attributed",
                 uid, namespace)

    # - storing -

    def _store(self, conn, batch: Batch, now_s: int, dirty: set[tuple[str, int]]):
        """Series, points, first points and dirty marks of the validated batch; returns what
        the caches learn once it is committed."""
        live = {p[0] for p in batch.points}
        batch.series = {sid: s for sid, s in batch.series.items() if sid in live}
        series_rows = []
        with self._state_lock:
            for s in batch.series.values():
                cached = self._series_meta.get(s.series_id)
                # Rewrite when the metadata changed, or every TOUCH_S to keep the newest point
                # time and the arrival second (liveness) current.
                if (cached is None or cached[2] != _meta_digest(s.meta)
                        or s.seen_ns > cached[0] + TOUCH_S * NANOS_PER_SECOND
                        or now_s >= cached[1] + TOUCH_S):
                    series_rows.append({
                        "series_id": s.series_id, "metric": s.metric, "quantity": s.quantity,
                        "scope": s.scope, "temporality": s.temporality, "cluster": s.cluster,
                        "node": s.node, "node_key": node_key(s.cluster, s.node),
                        "pod_uid": s.pod_uid, "container_key": s.container_key,
                        "net_class": s.net_class, "direction": s.direction,
                        "namespace": s.namespace, "meta": s.meta, "seen_ns": s.seen_ns,
                        "touched_s": now_s})
            newest = {k: self._newest.get(k) for k in {(sid, start) for sid, start, *_ in batch.points}}
            node_newest = {nk: self._node_newest.get(nk) for nk in {p[4] for p in batch.points}}
            known_first = {nk: self._node_first.get(nk) for nk in node_newest}
        if self.shared:
            # Another replica may have stored newer points than this process saw: the node's
            # bounds as stored, read under its write lock. A counter's newest point is never
            # after its node's, so the node's newest stands in for each of its counters'.
            bounds = self._node_bounds(conn, sorted(node_newest))
            known_first = {nk: bounds.get(nk, (None, None))[0] for nk in node_newest}
            node_newest = {nk: bounds.get(nk, (None, None))[1] for nk in node_newest}
            newest = {k: node_newest[nk] for k, nk in
                      {((sid, start), nk) for sid, start, _t, _v, nk in batch.points}}
        cumulative = {sid for sid, s in batch.series.items() if s.temporality == CUMULATIVE}
        gauges = {sid for sid, s in batch.series.items() if s.temporality == GAUGE}
        batch_min: dict[tuple[int, int], int] = {}
        batch_max: dict[tuple[int, int], int] = {}
        node_min: dict[str, int] = {}
        node_max: dict[str, int] = {}
        node_times: dict[str, set[int]] = defaultdict(set)
        point_rows = []
        for sid, start, t, v, nk in batch.points:
            point_rows.append({"series_id": sid, "start_ns": start, "time_ns": t, "value": v,
                               "node_key": nk})
            dirty.add((nk, hour_of(t)))
            node_times[nk].add(t)
            if t < node_min.get(nk, t + 1):
                node_min[nk] = t
            if t > node_max.get(nk, -1):
                node_max[nk] = t
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
        late = {k: t for k, t in batch_min.items() if newest.get(k) is None or t <= newest[k]}
        node_of = {s.series_id: node_key(s.cluster, s.node) for s in batch.series.values()}
        earlier = {nk: t for nk, t in node_min.items()
                   if known_first.get(nk) is None or t < known_first[nk]}
        firsts: dict[str, int] = {}
        if earlier:
            firsts = self._lower_node_first(conn, earlier, dirty)
        if series_rows:  # key order: concurrent writers lock rows in one order
            series_rows.sort(key=lambda r: r["series_id"])
            conn.execute(self._upsert_series, series_rows)
        point_rows.sort(key=lambda r: (r["series_id"], r["start_ns"], r["time_ns"]))
        self._write_points(conn, point_rows)
        if late:
            dirty |= self._successor_hours(conn, late, batch, node_of)
        dirty |= self._next_export_hours(conn, node_times, node_newest)
        if self.shared:
            c = node_first_t.c
            conn.execute(sa.update(node_first_t).where(c.node_key == sa.bindparam("nk")).values(
                newest_ns=sa.case((sa.or_(c.newest_ns.is_(None), c.newest_ns < sa.bindparam("t")),
                                   sa.bindparam("t")), else_=c.newest_ns)),
                [{"nk": nk, "t": t} for nk, t in sorted(node_max.items())])
        conn.execute(self._mark_dirty, [
            {"node_key": nk, "hour": h, "cluster": nk.rsplit("/", 1)[0],
             "node": nk.rsplit("/", 1)[1], "version": 1} for nk, h in sorted(dirty)])
        return series_rows, batch_max, firsts, node_max

    def _node_bounds(self, conn, nks: list[str]) -> dict[str, tuple[int, int | None]]:
        """node_key → (first point, newest point or None if not recorded) as stored."""
        c = node_first_t.c
        out: dict[str, tuple[int, int | None]] = {}
        for i in range(0, len(nks), _CHUNK):
            for nk, first, newest in conn.execute(sa.select(c.node_key, c.first_ns, c.newest_ns)
                                                  .where(c.node_key.in_(nks[i:i + _CHUNK]))):
                out[nk] = (first, newest)
        return out

    def _write_points(self, conn, rows: list[dict]) -> None:
        """PostgreSQL: the whole batch as one INSERT ... SELECT FROM unnest(arrays) ON CONFLICT
        DO NOTHING (one statement whatever the batch size, its text constant, so the server
        plans it once per connection); SQLite: executemany of the same insert."""
        if self.engine.dialect.name != "postgresql":
            conn.execute(self._insert_points, rows)
            return
        conn.execute(_UNNEST_POINTS, {
            "sid": [r["series_id"] for r in rows], "start": [r["start_ns"] for r in rows],
            "t": [r["time_ns"] for r in rows], "v": [r["value"] for r in rows],
            "nk": [r["node_key"] for r in rows]})

    def _next_export_hours(self, conn, node_times: dict[str, set[int]],
                           node_newest: dict[str, int | None]) -> set[tuple[str, int]]:
        """A point that lands before the node's newest one becomes the 'previous export' of the
        node's next export after it, which bounds that export's first points (ledger.py): if
        that export is in another hour, that hour is rebuilt too."""
        out: set[tuple[str, int]] = set()
        for nk, times in node_times.items():
            newest = node_newest.get(nk)
            if newest is None:  # not cached: the newest stored (this batch included)
                newest = conn.execute(sa.select(sa.func.max(points_t.c.time_ns)).where(
                    points_t.c.node_key == nk)).scalar()
            for t in sorted(times):
                if t >= newest:
                    continue
                nxt = conn.execute(sa.select(sa.func.min(points_t.c.time_ns)).where(
                    points_t.c.node_key == nk,
                    points_t.c.time_ns > t + FIRST_EXPORT_SLACK_NS)).scalar()
                if nxt is not None and hour_of(nxt) != hour_of(t):
                    out.add((nk, hour_of(nxt)))
        return out

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

    def refresh(self, *, max_hours: int | None = None, now_s: float | None = None) -> int:
        """Rebuild the dirty node-hours that are due (and their day and month roll-ups);
        returns how many were rebuilt or quarantined. A node-hour whose rebuild fails is
        quarantined and the others go on; StoreUnavailable if the database itself fails.

        Each node is rebuilt under its rebuild lock; a node another replica holds is left to
        it for this pass (its marks stay until that replica commits, or dies and they are
        due again here)."""
        now_s = int(time.time() if now_s is None else now_s)
        done = 0
        with self._state_lock:
            self._rotate(now_s)
        with self._refresh_lock:
            busy: set[str] = set()  # nodes other replicas were rebuilding during this pass
            try:
                while (max_hours is None or done < max_hours) and len(busy) <= _CHUNK:
                    limit = REFRESH_BATCH if max_hours is None else min(REFRESH_BATCH, max_hours - done)
                    marks = self._due_marks(now_s, limit, skip=busy)
                    if not marks:
                        break
                    by_node: dict[str, list] = defaultdict(list)
                    for m in marks:
                        by_node[m.node_key].append(m)
                    nodes = list(by_node)
                    if self.shared:  # replicas reading the same marks start at different nodes
                        random.shuffle(nodes)
                    for nk in nodes:
                        with self._locks.claim(_LOCK_REBUILD, _node_lock_key(nk)) as mine:
                            if not mine:
                                busy.add(nk)
                                continue
                            ms = by_node[nk]
                            if self.shared:  # as they stand now that the node is ours
                                ms = self._due_marks(now_s, len(ms), node=nk,
                                                     hours=[m.hour for m in ms])
                            if ms:
                                self._rebuild_node(nk, ms, now_s)
                            done += len(ms)
            except StoreUnavailable as e:
                self.health.record_refresh_failure(e)
                raise
            self._report_backlog(now_s)
        return done

    def _due_marks(self, now_s: int, limit: int, *, skip: set[str] = frozenset(),
                   node: str | None = None, hours: Sequence[int] | None = None):
        q = quarantine_t.c
        d = dirty_t.c
        where = [sa.or_(q.node_key.is_(None), q.version != d.version, q.retry_at_s <= now_s)]
        if skip:
            where.append(d.node_key.not_in(sorted(skip)))
        if node is not None:
            where.append(d.node_key == node)
        if hours is not None:
            where.append(d.hour.in_(sorted(hours)))
        sel = (sa.select(d.node_key, d.hour, d.cluster, d.node, d.version)
               .select_from(dirty_t.outerjoin(quarantine_t, sa.and_(q.node_key == d.node_key,
                                                                    q.hour == d.hour)))
               .where(*where).order_by(d.node_key, d.hour).limit(limit))
        try:
            with self.engine.connect() as c:
                return c.execute(sel).all()
        except sa.exc.SQLAlchemyError as e:
            raise StoreUnavailable(f"ledger cannot read its dirty hours: {_reason(e)}") from e

    def backlog(self, now_s: float | None = None, *, limit: int = 100) -> tuple[int, int, list[dict]]:
        """(dirty node-hours, quarantined node-hours, the quarantined ones: node, hour, reason,
        attempts, since, retry at), for health."""
        with self.engine.connect() as c:
            dirty = c.execute(sa.select(sa.func.count()).select_from(dirty_t)).scalar_one()
            n_q = c.execute(sa.select(sa.func.count()).select_from(quarantine_t)).scalar_one()
            rows = c.execute(sa.select(quarantine_t).order_by(quarantine_t.c.node_key,
                                                              quarantine_t.c.hour).limit(limit)).all()
        return dirty, n_q, [{"node": r.node_key, "hour": _iso(r.hour), "reason": r.reason,
                             "attempts": r.attempts, "since": _iso(r.since_s),
                             "retry_at": _iso(r.retry_at_s)} for r in rows]

    def _report_backlog(self, now_s: int) -> None:
        try:
            dirty, n_q, rows = self.backlog(now_s)
        except sa.exc.SQLAlchemyError as e:
            log.warning("cannot read the ledger's backlog: %s", _reason(e))
            return
        self.health.record_refresh(backlog=dirty, quarantined=rows, quarantined_count=n_q)

    def _rebuild_node(self, nk: str, marks: Sequence, now_s: int) -> None:
        cluster, node = marks[0].cluster, marks[0].node
        built: dict[int, tuple[list, dict[int, SeriesInfo]]] = {}
        failed: dict[int, str] = {}
        t0 = time.perf_counter()
        n_series = n_points = 0
        try:
            with self.engine.connect() as c:
                node_first = c.execute(sa.select(node_first_t.c.first_ns)
                                       .where(node_first_t.c.node_key == nk)).scalar_one_or_none()
                inputs = self._node_inputs(c, nk, [m.hour for m in marks])
                invoiced = self._invoice_micros(c, cluster, node, [m.hour for m in marks])
                for m in marks:
                    try:
                        inp = inputs[m.hour]
                        n_series += len(inp.series)
                        n_points += len(inp.points)
                        built[m.hour] = (build_node_hour(
                            hour_s=m.hour, cluster=cluster, node=node, series=inp.series,
                            points=inp.points, pricing=self.pricing.for_cluster(cluster),
                            node_first_ns=node_first,
                            prev_node_ns=inp.prev_node_ns,
                            invoice_micros=invoiced.get(m.hour)), inp.series)
                    except Exception as e:  # noqa: BLE001 - one hour's failure is that hour's
                        if _unavailable(e):
                            raise
                        failed[m.hour] = _describe(e)
        except Exception as e:  # noqa: BLE001
            if _unavailable(e):
                raise StoreUnavailable(f"ledger cannot rebuild node {nk}: {_reason(e)}") from e
            for m in marks:  # reading the node failed as a whole: each hour carries the reason
                failed.setdefault(m.hour, _describe(e))
                built.pop(m.hour, None)
        good = [m for m in marks if m.hour in built]
        if good:
            try:
                self._commit_hours(cluster, node, nk, good, built)
            except Exception as e:  # noqa: BLE001
                if _unavailable(e):
                    raise StoreUnavailable(f"ledger cannot rebuild node {nk}: {_reason(e)}") from e
                for m in good:  # find the hours the database refuses, keep the others
                    try:
                        self._commit_hours(cluster, node, nk, [m], built)
                    except Exception as e1:  # noqa: BLE001
                        if _unavailable(e1):
                            raise StoreUnavailable(f"ledger cannot rebuild node {nk}: "
                                                   f"{_reason(e1)}") from e1
                        failed[m.hour] = _describe(e1)
        for m in marks:
            if m.hour in failed:
                self._quarantine(m, failed[m.hour], now_s)
        self.health.record_rebuild(node_hours=len(marks) - len(failed), series=n_series,
                                   points=n_points, seconds=time.perf_counter() - t0)

    def _commit_hours(self, cluster: str, node: str, nk: str, marks: Sequence,
                      built: dict[int, tuple[list, dict[int, SeriesInfo]]]) -> None:
        hours = [m.hour for m in marks]
        days = sorted({h - h % 86400 for h in hours})
        months = sorted({_month_start(h) for h in hours})
        rows = [r for h in hours for r in built[h][0]]
        series: dict[int, SeriesInfo] = {}
        for h in hours:
            series.update(built[h][1])
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
            for m in marks:
                c.execute(sa.delete(dirty_t).where(
                    dirty_t.c.node_key == nk, dirty_t.c.hour == m.hour,
                    dirty_t.c.version == m.version))
            recovered = c.execute(sa.delete(quarantine_t).where(
                quarantine_t.c.node_key == nk, quarantine_t.c.hour.in_(hours))).rowcount
            self._store_labels(c, series)
        if recovered:
            log.info("node %s: %d quarantined hour(s) rebuilt", nk, recovered)

    def _quarantine(self, m, reason: str, now_s: int) -> None:
        q = quarantine_t.c
        with self.engine.begin() as c:
            prev = c.execute(sa.select(q.attempts, q.reason, q.since_s).where(
                q.node_key == m.node_key, q.hour == m.hour)).first()
            attempts = 1 if prev is None else prev.attempts + 1
            retry = min(QUARANTINE_MAX_RETRY_S, QUARANTINE_FIRST_RETRY_S * 2 ** min(attempts - 1, 16))
            row = {"node_key": m.node_key, "hour": m.hour, "version": m.version,
                   "reason": reason[:2000], "attempts": attempts,
                   "since_s": now_s if prev is None else prev.since_s, "retry_at_s": now_s + retry}
            ins = _insert(self.engine, quarantine_t)
            c.execute(ins.on_conflict_do_update(
                index_elements=["node_key", "hour"],
                set_={k: ins.excluded[k] for k in ("version", "reason", "attempts", "retry_at_s")}),
                row)
        self.health.record_quarantine()
        if prev is None or prev.reason != row["reason"]:  # logged once per hour and reason
            log.warning("node %s, hour %s: rebuild failed, quarantined (kept, retried when new "
                        "points arrive or in %d s): %s", m.node_key, _iso(m.hour), retry, reason)

    def _node_inputs(self, c, nk: str, hours: Sequence[int]) -> dict[int, _HourInputs]:
        """What each node-hour is built from: the node's points in [h0 − MAX_GAP, h1), each
        counter's predecessor, the series that have those points (and the node's own: its
        attributes choose the rates), and for each counter's first point the node's previous
        point. Hours close together are read with one range query; the work follows the series
        with points in those hours, never every series the node had."""
        out: dict[int, _HourInputs] = {}
        group: list[int] = []
        for h in sorted(hours):
            if group and h - group[0] >= _READ_SPAN_S:
                out.update(self._group_inputs(c, nk, group))
                group = []
            group.append(h)
        if group:
            out.update(self._group_inputs(c, nk, group))
        return out

    def _group_inputs(self, c, nk: str, hours: list[int]) -> dict[int, _HourInputs]:
        out: dict[int, _HourInputs] = {}
        lo = hours[0] * NANOS_PER_SECOND - MAX_GAP_NS
        hi = (hours[-1] + 3600) * NANOS_PER_SECOND
        allp = sorted((tuple(p) for p in c.execute(
            sa.select(points_t.c.time_ns, points_t.c.series_id, points_t.c.start_ns,
                      points_t.c.value)
            .where(points_t.c.node_key == nk, points_t.c.time_ns >= lo,
                   points_t.c.time_ns < hi))))
        times = [p[0] for p in allp]
        series = self._load_series(c, nk, {p[1] for p in allp})
        node_sids = {sid for sid, si in series.items() if si.scope == "node"}
        # each cumulative key's points in the range, by time
        by_key: dict[tuple[int, int], list[tuple[int, float]]] = defaultdict(list)
        for t, sid, start, v in allp:
            si = series.get(sid)
            if si is not None and si.temporality == CUMULATIVE:
                by_key[(sid, start)].append((t, v))
        per_hour: dict[int, tuple[list, dict, list]] = {}
        need_db: set[tuple[int, int]] = set()
        for h in hours:
            h0 = h * NANOS_PER_SECOND
            i, j = bisect.bisect_left(times, h0 - MAX_GAP_NS), bisect.bisect_left(times, h0 + NANOS_PER_HOUR)
            pts = [(sid, start, t, v) for t, sid, start, v in allp[i:j]]
            first_in_hour: dict[tuple[int, int], int] = {}
            have_before: set[tuple[int, int]] = set()
            for sid, start, t, _v in pts:
                si = series.get(sid)
                if si is None or si.temporality != CUMULATIVE:
                    continue
                if t >= h0:
                    if t < first_in_hour.get((sid, start), h0 + NANOS_PER_HOUR):
                        first_in_hour[(sid, start)] = t
                else:
                    have_before.add((sid, start))
            preds: dict[tuple[int, int], tuple[int, float] | None] = {}
            for k in first_in_hour:
                if k in have_before:
                    continue
                # the newest point before the look-back: in the range read, or before it
                ks = by_key[k]
                m = bisect.bisect_left(ks, (h0 - MAX_GAP_NS,))
                if m > 0:
                    preds[k] = ks[m - 1]
                else:
                    preds[k] = None
                    need_db.add(k)
            per_hour[h] = (pts, preds, sorted(first_in_hour.items()))
        found = self._predecessors(c, need_db, lo) if need_db else {}
        for h in hours:
            pts, preds, firsts_in_hour = per_hour[h]
            pts = list(pts)
            firsts: list[int] = []
            for k, t1 in firsts_in_hour:
                if k not in preds:
                    continue
                p = preds[k] or found.get(k)
                if p is None:
                    firsts.append(t1)  # the counter's first point ever
                else:
                    pts.append((k[0], k[1], p[0], p[1]))
            prev_node: dict[int, int | None] = {}
            for t1 in sorted(set(firsts)):
                j = bisect.bisect_left(times, t1 - FIRST_EXPORT_SLACK_NS)
                if j > 0:  # every point of the node from lo to t1 is in the range read
                    prev_node[t1] = times[j - 1]
                else:
                    prev_node[t1] = c.execute(sa.select(sa.func.max(points_t.c.time_ns)).where(
                        points_t.c.node_key == nk,
                        points_t.c.time_ns < t1 - FIRST_EXPORT_SLACK_NS)).scalar()
            sids = {p[0] for p in pts} | node_sids
            out[h] = _HourInputs({sid: si for sid, si in series.items() if sid in sids}, pts, prev_node)
        return out

    def _invoice_micros(self, c, cluster: str, node: str, hours: Sequence[int]) -> dict[int, int]:
        """hour → what the imported invoice says the node cost in it (absent: list rates)."""
        t = invoice_node_hours_t.c
        out: dict[int, int] = {}
        hs = sorted(set(hours))
        for i in range(0, len(hs), _CHUNK):
            q = (sa.select(t.hour, sa.func.sum(t.micros))
                 .where(t.cluster == cluster, t.node == node, t.hour.in_(hs[i:i + _CHUNK]))
                 .group_by(t.hour))
            out.update({h: int(m) for h, m in c.execute(q)})
        return out

    def mark_dirty(self, conn, node_hours) -> None:
        """Mark (cluster, node, hour)s for rebuild inside the caller's transaction (an invoice
        import re-prices the node-hours it covers)."""
        rows = [{"node_key": node_key(cl, n), "hour": h, "cluster": cl, "node": n, "version": 1}
                for cl, n, h in sorted(set(node_hours))]
        for i in range(0, len(rows), _CHUNK):
            conn.execute(self._mark_dirty, rows[i:i + _CHUNK])

    def _predecessors(self, c, keys: set[tuple[int, int]], before_ns: int) -> dict[tuple[int, int], tuple[int, float]]:
        """The newest point before `before_ns` of each (series, start) in `keys`, found through
        the primary key (series_id, start_ns, time_ns), then joined back for its value."""
        out: dict[tuple[int, int], tuple[int, float]] = {}
        sids = sorted({sid for sid, _start in keys})
        for i in range(0, len(sids), _CHUNK):
            last = (sa.select(points_t.c.series_id, points_t.c.start_ns,
                              sa.func.max(points_t.c.time_ns).label("t"))
                    .where(points_t.c.series_id.in_(sids[i:i + _CHUNK]),
                           points_t.c.time_ns < before_ns)
                    .group_by(points_t.c.series_id, points_t.c.start_ns).subquery())
            q = sa.select(points_t.c.series_id, points_t.c.start_ns, points_t.c.time_ns,
                          points_t.c.value).join(last, sa.and_(
                              points_t.c.series_id == last.c.series_id,
                              points_t.c.start_ns == last.c.start_ns,
                              points_t.c.time_ns == last.c.t))
            for sid, start, t, v in c.execute(q):
                if (sid, start) in keys:
                    out[(sid, start)] = (t, v)
        return out

    def _load_series(self, c, nk: str, sids: set[int]) -> dict[int, SeriesInfo]:
        cols = (series_t.c.series_id, series_t.c.quantity, series_t.c.scope,
                series_t.c.temporality, series_t.c.pod_uid, series_t.c.container_key,
                series_t.c.net_class, series_t.c.direction, series_t.c.meta, series_t.c.seen_ns,
                series_t.c.namespace)
        out: dict[int, SeriesInfo] = {}

        def add(rows) -> None:
            for r in rows:
                out[r.series_id] = SeriesInfo(r.series_id, r.quantity, r.scope, r.temporality,
                                              r.pod_uid, r.container_key, r.net_class,
                                              r.direction, r.meta, r.seen_ns, r.namespace)

        add(c.execute(sa.select(*cols).where(series_t.c.node_key == nk,
                                             series_t.c.scope == "node")))
        want = sorted(sids - set(out))
        for i in range(0, len(want), _CHUNK):
            add(c.execute(sa.select(*cols).where(series_t.c.series_id.in_(want[i:i + _CHUNK]))))
        return out

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
        ann = [{"pod_uid": uid, "seen_ns": seen, "annotations": json.dumps(a, sort_keys=True)}
               for uid, (seen, meta) in sorted(best.items())
               if (a := json.loads(meta).get("annotations"))]
        if ann:
            ins = _insert(self.engine, pod_annotations_t)
            c.execute(ins.on_conflict_do_update(
                index_elements=["pod_uid"],
                set_={"annotations": ins.excluded.annotations, "seen_ns": ins.excluded.seen_ns},
                where=ins.excluded.seen_ns > pod_annotations_t.c.seen_ns), ann)

    def pod_labels(self) -> dict[str, dict[str, str]]:
        with self.engine.connect() as c:
            q = sa.select(pods_t.c.pod_uid, pods_t.c.labels)
            return {uid: json.loads(labels) for uid, labels in c.execute(q)}

    def pod_annotations(self) -> dict[str, dict[str, str]]:
        """pod uid -> its annotations as last seen (only pods that had any)."""
        with self.engine.connect() as c:
            q = sa.select(pod_annotations_t.c.pod_uid, pod_annotations_t.c.annotations)
            return {uid: json.loads(a) for uid, a in c.execute(q)}

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
        return [LedgerGroup(*r[:11], float(r[11] or 0.0), int(r[12] or 0)) for r in rows]

    def compute_cost_by_kind(self, start: datetime, end: datetime, *,
                             request_or_usage: bool) -> list["KindCost"]:
        """Per node and row kind, the money of the hourly rows in [start, end), network egress
        and claims' volumes left out (billed on top of the node): what a reconciliation adds
        up."""
        t = LEDGER_TABLES["hour"]
        cost = t.c.cost_ror_micros if request_or_usage else t.c.cost_usage_micros
        q = (sa.select(t.c.cluster, t.c.node, t.c.kind, sa.func.sum(cost))
             .where(t.c.period_start >= int(start.timestamp()),
                    t.c.period_start < int(end.timestamp()),
                    sa.not_(t.c.resource.like("network:%")), sa.not_(t.c.resource.like("pv:%")))
             .group_by(t.c.cluster, t.c.node, t.c.kind))
        with self.engine.connect() as c:
            return [KindCost(cl, n, k, int(v or 0)) for cl, n, k, v in c.execute(q)]

    # --- retention ---------------------------------------------------------------------------

    def oldest_accepted_ns(self, now: datetime) -> int:
        return int((now - timedelta(days=self.retention.points_days)).timestamp()) * NANOS_PER_SECOND

    def apply_retention(self, now: datetime) -> dict[str, int]:
        """Drop what retention no longer keeps. Per (series, start) the newest point before the
        cut is kept: it is the predecessor the next delta is computed against. A series with no
        point at all within the points retention is pruned with its points; pods and nodes left
        without series go with it (a node that comes back is new: its pods then are a
        baseline). Dirty marks of hours older than the raw points are dropped: those hours can
        no longer be rebuilt faithfully, their rows stay as last built. Returns counts."""
        with self._locks.claim(_LOCK_RETENTION, 0) as mine:
            if not mine:  # another replica is applying it right now
                log.info("retention: another replica is applying it; skipped")
                return {"skipped": 1}
            return self._apply_retention(now)

    def _apply_retention(self, now: datetime) -> dict[str, int]:
        cut_points = self.oldest_accepted_ns(now)
        now_s = int(now.timestamp())
        out: dict[str, int] = {}
        try:
            self._ensure_partitions(now)
            out["partition_points"] = self._drop_partitions(cut_points)
            with self.engine.begin() as c:
                r = points_t.alias("r")
                newer_before_cut = (sa.select(sa.literal(1)).where(
                    r.c.series_id == points_t.c.series_id, r.c.start_ns == points_t.c.start_ns,
                    r.c.time_ns > points_t.c.time_ns, r.c.time_ns < cut_points).exists())
                out["points"] = c.execute(sa.delete(points_t).where(
                    points_t.c.time_ns < cut_points, newer_before_cut)).rowcount
                c.execute(sa.delete(hourly_t).where(
                    hourly_t.c.period_start < now_s - self.retention.hourly_days * 86400))
                c.execute(sa.delete(daily_t).where(
                    daily_t.c.period_start < now_s - self.retention.daily_days * 86400))
                if self.retention.monthly_days is not None:
                    c.execute(sa.delete(monthly_t).where(
                        monthly_t.c.period_start < now_s - self.retention.monthly_days * 86400))
            out.update(self._prune(cut_points))
        except sa.exc.SQLAlchemyError as e:
            raise StoreUnavailable(f"ledger retention failed: {_reason(e)}") from e
        self.health.record_pruned(out.get("series", 0))
        if out.get("series"):
            log.info("pruned %d series with no point for %d days (%d pods, %d nodes left "
                     "without series)", out["series"], self.retention.points_days,
                     out.get("pods", 0), out.get("nodes", 0))
        return out

    def _prune(self, cut_points: int) -> dict[str, int]:
        out: dict[str, int] = {}
        dead = sa.select(series_t.c.series_id).where(series_t.c.seen_ns < cut_points)
        with self.engine.begin() as c:
            out["dead_points"] = c.execute(sa.delete(points_t).where(
                points_t.c.series_id.in_(dead))).rowcount
            out["series"] = c.execute(sa.delete(series_t).where(
                series_t.c.seen_ns < cut_points)).rowcount
            if out["series"]:
                has_series = sa.select(sa.literal(1)).where(
                    series_t.c.pod_uid == pod_ns_t.c.pod_uid,
                    series_t.c.cluster == pod_ns_t.c.cluster).exists()
                out["pods"] = c.execute(sa.delete(pod_ns_t).where(~has_series)).rowcount
                c.execute(sa.delete(pods_t).where(~sa.select(sa.literal(1)).where(
                    series_t.c.pod_uid == pods_t.c.pod_uid).exists()))
                c.execute(sa.delete(pod_annotations_t).where(~sa.select(sa.literal(1)).where(
                    series_t.c.pod_uid == pod_annotations_t.c.pod_uid).exists()))
                nodes = {nk for (nk,) in c.execute(sa.select(node_facts_t.c.node_key))} | \
                    {nk for (nk,) in c.execute(sa.select(node_first_t.c.node_key))}
                gone = [nk for nk in sorted(nodes) if c.execute(
                    sa.select(series_t.c.series_id).where(series_t.c.node_key == nk).limit(1)).first() is None]
                for i in range(0, len(gone), _CHUNK):
                    chunk = gone[i:i + _CHUNK]
                    c.execute(sa.delete(node_facts_t).where(node_facts_t.c.node_key.in_(chunk)))
                    c.execute(sa.delete(node_first_t).where(node_first_t.c.node_key.in_(chunk)))
                out["nodes"] = len(gone)
            old_hour = cut_points // NANOS_PER_SECOND - 2 * 3600
            out["expired_marks"] = c.execute(sa.delete(dirty_t).where(dirty_t.c.hour < old_hour)).rowcount
            c.execute(sa.delete(quarantine_t).where(quarantine_t.c.hour < old_hour))
        if out.get("expired_marks"):
            log.warning("dropped %d dirty node-hours older than the raw points (kept as last "
                        "built)", out["expired_marks"])
        if out.get("nodes") or out.get("series"):
            with self._state_lock:  # forget what the database forgot
                for cache in (self._facts, self._node_first, self._node_newest):
                    cache.clear()
        return out


def _iso(t_s: int) -> str:
    return datetime.fromtimestamp(t_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {_reason(e)}"


class LedgerGroup(NamedTuple):
    """A sum of ledger rows for one tenant (or special row), kind and resource (ledger_groups).
    A named tuple: a year of hourly steps reads millions of them."""

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
