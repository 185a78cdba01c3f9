"""The cost processor's own health: what it accepted and refused, how far behind its ledger is,
which node-hours it had to set aside, and whether its refresh loop still turns.

Why an object and not log lines only: a ledger that silently stops rebuilding one node, or
refuses a tenant's points for a week, looks healthy from outside (OTLP exports succeed).
`ProcessorHealth` is filled by the parts that know (the Ingestor counts points, the Store
counts rebuilds, quarantine and pruning, the refresh loop beats) and read by whoever
publishes it: `snapshot()` is JSON for a health endpoint, `prometheus()` the text exposition
for a scrape. Reading never touches the database: the figures are those of the last refresh,
so a health check cannot be slowed down or broken by the ledger it reports on.

Thread-safe; every name is declared once in `_METRICS`.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

from otel_agent.cost.validate import REASONS

PREFIX = "otel_agent_cost_"

# name (without prefix) → (type, help). One table: prometheus() writes exactly these.
_METRICS = {
    "ready": ("gauge", "1 when the processor is ready: its refresh loop alive and refreshes not failing past its deadline."),
    "points_accepted_total": ("counter", "Data points stored in the ledger."),
    "points_rejected_total": ("counter", "Data points refused, by reason (also in OTLP partial_success)."),
    "labels_dropped_total": ("counter", "Pod or node labels dropped over the per-resource bound."),
    "live_series": ("gauge", "Series that received a point within the live window."),
    "backlog_node_hours": ("gauge", "Node-hours waiting to be rebuilt (quarantined ones included)."),
    "quarantined_node_hours": ("gauge", "Node-hours whose rebuild failed, kept and retried."),
    "quarantine_events_total": ("counter", "Node-hour rebuilds that failed and were quarantined."),
    "rebuilt_node_hours_total": ("counter", "Node-hours rebuilt."),
    "rebuild_series_total": ("counter", "Series loaded by rebuilds (follows series with points in the hour)."),
    "rebuild_points_total": ("counter", "Points loaded by rebuilds."),
    "rebuild_seconds_total": ("counter", "Time spent rebuilding node-hours."),
    "pruned_series_total": ("counter", "Series pruned after the points retention with no point."),
    "last_refresh_timestamp_seconds": ("gauge", "When the last refresh completed (Unix time), 0 if never."),
    "refresh_loop_alive": ("gauge", "1 if the refresh loop turned within its deadline."),
    "refresh_failures_total": ("counter", "Refresh passes that failed as a whole (ledger unavailable)."),
}


class ProcessorHealth:
    def __init__(self, *, clock: Callable[[], float] = time.time, loop_deadline_s: float = 60.0):
        self._clock = clock
        self._lock = threading.Lock()
        self.loop_deadline_s = loop_deadline_s
        self._accepted = 0
        self._rejected: dict[str, int] = {r: 0 for r in REASONS}
        self._labels_dropped = 0
        self._live_series: int | None = None
        self._backlog = 0
        self._quarantined: list[dict] = []
        self._quarantined_count = 0
        self._quarantine_events = 0
        self._rebuilt = 0
        self._rebuild_series = 0
        self._rebuild_points = 0
        self._rebuild_seconds = 0.0
        self._pruned_series = 0
        self._last_refresh: float | None = None
        self._loop_beat: float | None = None
        self._refresh_failures = 0
        self._failing_since: float | None = None
        self._last_error = ""

    # --- writers -------------------------------------------------------------------------

    def record_ingest(self, accepted: int, rejected: dict[str, int], labels_dropped: int = 0) -> None:
        with self._lock:
            self._accepted += accepted
            for code, n in rejected.items():
                self._rejected[code] = self._rejected.get(code, 0) + n
            self._labels_dropped += labels_dropped

    def record_rebuild(self, *, node_hours: int, series: int, points: int, seconds: float) -> None:
        with self._lock:
            self._rebuilt += node_hours
            self._rebuild_series += series
            self._rebuild_points += points
            self._rebuild_seconds += seconds

    def record_quarantine(self, n: int = 1) -> None:
        with self._lock:
            self._quarantine_events += n

    def record_refresh(self, *, backlog: int, quarantined: list[dict], quarantined_count: int,
                       ok: bool = True) -> None:
        """After a refresh pass: the ledger's backlog and quarantine as the store reads them."""
        with self._lock:
            self._backlog = backlog
            self._quarantined = quarantined
            self._quarantined_count = quarantined_count
            if ok:
                self._last_refresh = self._clock()
                self._failing_since, self._last_error = None, ""

    def record_refresh_failure(self, error: BaseException | None = None) -> None:
        """A refresh turn failed as a whole (the ledger is down, or a fault of ours the loop
        caught). Failing longer than the loop's deadline makes the processor not ready."""
        with self._lock:
            self._refresh_failures += 1
            self._failing_since = self._failing_since or self._clock()
            if error is not None:
                self._last_error = f"{type(error).__name__}: {error}"[:200]

    def record_pruned(self, series: int) -> None:
        with self._lock:
            self._pruned_series += series

    def set_live_series(self, n: int) -> None:
        with self._lock:
            self._live_series = n

    def beat(self) -> None:
        """The refresh loop is turning."""
        with self._lock:
            self._loop_beat = self._clock()

    # --- readers -------------------------------------------------------------------------

    def loop_alive(self) -> bool:
        with self._lock:
            return self._loop_beat is not None and self._clock() - self._loop_beat <= self.loop_deadline_s

    def snapshot(self) -> dict:
        alive = self.loop_alive()
        with self._lock:
            failing = (self._failing_since is not None
                       and self._clock() - self._failing_since > self.loop_deadline_s)
            return {
                "ready": alive and not failing,
                "refresh_loop_alive": alive,
                "last_error": self._last_error,
                "last_refresh_time": self._last_refresh,
                "backlog_node_hours": self._backlog,
                "quarantined_node_hours": self._quarantined_count,
                "quarantined": list(self._quarantined),
                "quarantine_events": self._quarantine_events,
                "live_series": self._live_series,
                "points": {"accepted": self._accepted,
                           "rejected": {k: v for k, v in sorted(self._rejected.items()) if v}},
                "labels_dropped": self._labels_dropped,
                "rebuild": {"node_hours": self._rebuilt, "series": self._rebuild_series,
                            "points": self._rebuild_points,
                            "seconds": round(self._rebuild_seconds, 6)},
                "pruned_series": self._pruned_series,
                "refresh_failures": self._refresh_failures,
            }

    def prometheus(self) -> str:
        s = self.snapshot()
        values: dict[str, list[tuple[str, float]]] = {
            "ready": [("", 1 if s["ready"] else 0)],
            "points_accepted_total": [("", s["points"]["accepted"])],
            "points_rejected_total": [(f'reason="{r}"', self._rejected_value(r)) for r in sorted(self._rejected)],
            "labels_dropped_total": [("", s["labels_dropped"])],
            "live_series": [("", s["live_series"])] if s["live_series"] is not None else [],
            "backlog_node_hours": [("", s["backlog_node_hours"])],
            "quarantined_node_hours": [("", s["quarantined_node_hours"])],
            "quarantine_events_total": [("", s["quarantine_events"])],
            "rebuilt_node_hours_total": [("", s["rebuild"]["node_hours"])],
            "rebuild_series_total": [("", s["rebuild"]["series"])],
            "rebuild_points_total": [("", s["rebuild"]["points"])],
            "rebuild_seconds_total": [("", s["rebuild"]["seconds"])],
            "pruned_series_total": [("", s["pruned_series"])],
            "last_refresh_timestamp_seconds": [("", s["last_refresh_time"] or 0)],
            "refresh_loop_alive": [("", 1 if s["refresh_loop_alive"] else 0)],
            "refresh_failures_total": [("", s["refresh_failures"])],
        }
        lines = []
        for name, (kind, help_) in _METRICS.items():
            full = PREFIX + name
            lines.append(f"# HELP {full} {help_}")
            lines.append(f"# TYPE {full} {kind}")
            for labels, v in values[name]:
                lines.append(f"{full}{{{labels}}} {_num(v)}" if labels else f"{full} {_num(v)}")
        return "\n".join(lines) + "\n"

    def _rejected_value(self, reason: str) -> int:
        with self._lock:
            return self._rejected.get(reason, 0)


def _num(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    return repr(float(v))
