"""The ledger over HTTP, with OpenCost's `/allocation` parameters and JSON field names, so
tools and dashboards written for OpenCost (its UI, kubectl-cost, Grafana JSON datasources)
read our ledger without changes. The HTML report is served beside it for people.

Served by aiohttp (aioserver.py says why it replaced `http.server`): one event loop thread
takes the requests; each ledger query runs in a small thread pool behind a `Gate`, so a busy
server answers 503 with Retry-After at once instead of queueing, and a query whose client went
away is told to stop (`should_stop`, checked between steps) instead of running on.

Endpoints (GET, HEAD):
  /allocation, /allocation/compute   window (required), aggregate, step, accumulate,
                                     accumulateBy, shareIdle, idleByNode, includeIdle
                                     (or Kubecost's idle), filter, model; the grammar of
                                     window is window.py's, of aggregate and filter
                                     grammar.py's, both OpenCost's. Defaults are OpenCost's:
                                     aggregate cluster,node,namespace,pod,container,
                                     includeIdle false, accumulate false
  /report.html                       the same parameters, rendered as the HTML report
  /healthz                           liveness: the process answers; never needs a token
  /readyz                            readiness from the health provider (`is_ready`);
                                     never needs a token (kubelet probes carry none)
  /metrics                           the processor's own metrics, Prometheus text format
                                     (the health provider's `prometheus()` and the API's own)

Bounded work per request, each refusal a 400 naming the parameter: at most `max_steps` steps;
a window no longer than the ledger keeps rows of the grain the step reads (hourly rows for
steps under a day, daily rows for longer ones: `--retention-*-days`); a response of at most
`max_response_bytes`.

Errors are JSON `{"code": 400, "status": "error", "message": ...}` with the same HTTP status,
and a message that names the parameter and what it allows. With a token (`cost serve
--read-token-file`), every endpoint but /healthz and /readyz needs `Authorization: Bearer
<token>` (401 otherwise). The ingest token does not open this API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Protocol
from urllib.parse import parse_qs

from aiohttp import web

from otel_agent.cost import aioserver, grammar
from otel_agent.cost.aioserver import Busy, Gate, HttpServer, Limits
from otel_agent.cost.auth import bearer_ok
from otel_agent.cost.errors import QueryCancelled

from otel_agent.cost.report import (ACCUMULATE_PERIODS, ReportQuery, accumulate_by, currency_of,
                                    ledger_reconciliation, opencost_json, parse_aggregate,
                                    parse_enum, run_query, special_kind)
from otel_agent.cost.types import IDLE, OVERHEAD, Model, SharePolicy
from otel_agent.cost.window import parse_step, parse_window, split
from otel_agent.errors import ConfigError, OtelAgentError

log = logging.getLogger(__name__)

DEFAULT_PORT = 9003  # OpenCost's API port, so clients' defaults work
PARAMS = ("window", "aggregate", "step", "accumulate", "accumulateBy", "shareIdle", "idleByNode",
          "includeIdle", "idle", "filter", "model")
# OpenCost (and Kubecost) parameters we accept and ignore: tools send them, and they do not
# change our answer (no Prometheus resolution, no external or load-balancer costs, no
# proportional asset costs; properties always keep the labels all members share, which is
# what includeAggregatedMetadata=true asks of OpenCost).
IGNORED = ("resolution", "external", "shareTenancyCosts", "shareNamespaces", "shareLabels",
           "shareCost", "shareSplit", "reconcile", "splitIdle", "format", "sharelb",
           "includeAggregatedMetadata", "includeProportionalAssetResourceCosts",
           "metrics")  # the OpenCost UI's field selection: we send every field
# OpenCost's default aggregate when none is given (ParseAggregationProperties)
DEFAULT_AGGREGATE = "cluster,node,namespace,pod,container"
MAX_QUERY_BYTES = 4096
# One query's work: 90 days of hourly steps (the hourly rows' default retention) fits.
MAX_STEPS = 2200
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
BYTES_PER_ALLOCATION = 600  # an allocation's JSON is ~700 bytes: refuse early past 1.2x the cap
RETRY_AFTER_SECONDS = 2


@dataclass(frozen=True, slots=True)
class ApiQuery:
    query: ReportQuery
    accumulate: str | None  # None, "all", or a calendar period (report.ACCUMULATE_PERIODS)
    include_idle: bool


def _bool(name: str, value: str | None, default: bool) -> bool:
    """OpenCost's booleans (grammar.parse_bool); yes/no as well, which we took before."""
    v = (value or "").strip().lower()
    if v in ("yes", "no"):
        return v == "yes"
    return grammar.parse_bool(name, value, default)


def parse_params(raw_query: str, now: datetime) -> ApiQuery:
    """Query string -> ApiQuery, or a ConfigError naming the parameter and what it allows."""
    if len(raw_query) > MAX_QUERY_BYTES:
        raise ConfigError(f"query string longer than {MAX_QUERY_BYTES} bytes")
    try:
        qs = parse_qs(raw_query, keep_blank_values=True, strict_parsing=False,
                      max_num_fields=len(PARAMS) + len(IGNORED))
    except ValueError as e:
        raise ConfigError(f"bad query string: {e}") from e
    unknown = sorted(k for k in qs if k not in PARAMS and k not in IGNORED)
    if unknown:
        raise ConfigError(f"unknown parameter {unknown[0]!r}; allowed: {', '.join(PARAMS)}")
    repeated = sorted(k for k, v in qs.items() if len(v) > 1)
    if repeated:
        raise ConfigError(f"parameter {repeated[0]!r} given more than once")
    p = {k: v[0] for k, v in qs.items()}

    if not p.get("window"):
        raise ConfigError("window is required, e.g. window=7d or window=2026-11")
    # An unencoded "+02:00" offset arrives as " 02:00" (form encoding turns + into a space).
    text = re.sub(r"(\d) (\d{2}:\d{2})(?=\s*,|\s*$)", r"\1+\2", p["window"])
    try:
        window = parse_window(text, now)
    except ConfigError as e:
        raise ConfigError(f"window: {e}") from e
    try:
        step = parse_step(p["step"]) if p.get("step") else None
    except ConfigError as e:
        raise ConfigError(f"step: {e}") from e
    try:
        aggregate = parse_aggregate(p.get("aggregate") or DEFAULT_AGGREGATE)
    except ConfigError as e:
        raise ConfigError(f"aggregate: {e}") from e
    try:
        grammar.parse_filter(p.get("filter"))  # refused before any work; the query re-reads it
    except ConfigError as e:
        raise ConfigError(f"filter={p['filter']!r}: {e}") from e
    # accumulate: a boolean, or (newer OpenCost, its UI) a calendar period; accumulateBy: the
    # same periods or `all`. A period without a step steps by the hour (hour) or day (others).
    acc_raw = (p.get("accumulate") or "").strip()
    by_raw = (p.get("accumulateBy") or "").strip()
    if acc_raw and by_raw:
        raise ConfigError("give accumulate or accumulateBy, not both")
    name, value = ("accumulateBy", by_raw) if by_raw else ("accumulate", acc_raw)
    if value.lower() in ACCUMULATE_PERIODS or value.lower() == "all":
        accumulate_by: str | None = value.lower()
    elif name == "accumulateBy":
        raise ConfigError(f"accumulateBy={value!r}: allowed: all, {', '.join(ACCUMULATE_PERIODS)}")
    else:
        try:
            accumulate_by = "all" if _bool("accumulate", value, False) else None
        except ConfigError as e:
            raise ConfigError(f"{e}, or a period: {', '.join(ACCUMULATE_PERIODS)}") from e
    if accumulate_by in ACCUMULATE_PERIODS and step is None:
        step = timedelta(hours=1) if accumulate_by == "hour" else timedelta(days=1)
    if "idle" in p and "includeIdle" in p:
        raise ConfigError("give includeIdle or its Kubecost name idle, not both")
    try:
        model = parse_enum(Model, p.get("model") or Model.CHARGEBACK.value, "model")
    except ConfigError as e:
        raise ConfigError(f"model: {e}") from e
    share = (p.get("shareIdle") or "false").strip().lower()
    if share in ("true", "1", "t", "weighted"):
        policy = SharePolicy.PROPORTIONAL  # OpenCost's shareIdle=true shares by cost weight
    elif share in ("false", "0", "f"):
        policy = SharePolicy.NONE
    else:
        try:
            policy = parse_enum(SharePolicy, share, "shareIdle")
        except ConfigError as e:
            raise ConfigError(f"shareIdle={p['shareIdle']!r}: allowed: true, false, none, "
                              f"proportional or even") from e
    q = ReportQuery(window=window, aggregate=aggregate, step=step, model=model,
                    share_idle=policy, idle_by_node=_bool("idleByNode", p.get("idleByNode"), False),
                    filter=(p.get("filter") or None))
    idle_name = "idle" if "idle" in p else "includeIdle"
    return ApiQuery(q, accumulate=accumulate_by,
                    include_idle=_bool(idle_name, p.get(idle_name), False))


class Health(Protocol):
    """What `cost serve` hands the API: the processor's own health (cost/health.py)."""

    def snapshot(self) -> dict: ...

    def prometheus(self) -> str: ...


def check_work(q: ReportQuery, *, max_steps: int = MAX_STEPS, retention: Any = None) -> None:
    """Refuse, before any ledger read, a query whose work is out of bounds: too many steps, or
    a window longer than the ledger keeps rows of the grain its step reads."""
    span = q.window.end - q.window.start
    if q.step is not None:
        n = math.ceil(span / q.step)
        if n > max_steps:
            raise ConfigError(f"step: {n} steps of {_human(q.step)} in this window; at most "
                              f"{max_steps} per query: use a longer step or a shorter window")
    if retention is None:
        return
    if q.step is not None and q.step < timedelta(days=1):
        keep, grain, flag = retention.hourly_days, "hourly", "--retention-hourly-days"
    elif q.step is not None:
        keep, grain, flag = retention.daily_days, "daily", "--retention-daily-days"
    else:
        keep, grain, flag = retention.monthly_days, "monthly", "--retention-monthly-days"
    if keep is not None and span > timedelta(days=keep):
        hint = "a longer step or " if grain != "monthly" else ""
        raise ConfigError(f"window: {span.days} days is more than the ledger keeps at the "
                          f"{grain} grain this step reads ({keep} days, {flag}): use "
                          f"{hint}a window of at most {keep} days")


def is_ready(snapshot: dict) -> bool:
    """Ready unless the health snapshot says otherwise: its `ready`, or else whether its
    refresh loop is alive (cost/health.py's ProcessorHealth)."""
    if "ready" in snapshot:
        return bool(snapshot["ready"])
    return bool(snapshot.get("refresh_loop_alive", True))


def _human(step: timedelta) -> str:
    s = int(step.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


class ApiHandle:
    """A running API server: `.port`, `.url`, `.stop()` (idempotent)."""

    def __init__(self, server: HttpServer, gate: Gate) -> None:
        self._server, self.gate = server, gate
        self.host, self.port = server.host, server.port

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def open_connections(self) -> int:
        return self._server.open_connections

    def stop(self) -> None:
        self._server.stop()
        self.gate.close()


def parse_listen(listen: str, flag: str = "--http-listen") -> tuple[str, int]:
    return aioserver.parse_listen(listen, flag, DEFAULT_PORT)


RECONCILIATION_PATH = "/invoice/reconciliation"


def sa_errors() -> type[BaseException]:
    import sqlalchemy as sa

    return sa.exc.SQLAlchemyError


def serve(store: Any, pricing: Any, listen: str, auth_token: str | None = None, *,
          query_fn: Callable[..., Any] | None = None,
          clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
          health: Health | None = None, limits: Limits = Limits(), workers: int = 2,
          waiting: int = 2, max_steps: int = MAX_STEPS,
          max_response_bytes: int = MAX_RESPONSE_BYTES) -> ApiHandle:
    """Start the API on `listen` (HOST:PORT; port 0 picks a free one) on its own thread.
    `auth_token` is the read token (`--read-token-file`)."""
    currency = getattr(pricing, "currency", None) or "USD"
    retention = getattr(store, "retention", None)
    gate = Gate("cost-api", running=workers, waiting=waiting)

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return as_json(status, {"code": status, "status": "error", "message": message}, headers)

    def as_json(status: int, obj: Any, headers: dict[str, str] | None = None) -> web.Response:
        return send(status, (json.dumps(obj) + "\n").encode(), "application/json", headers)

    def send(status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
             ) -> web.Response:
        h = {"Cache-Control": "no-store", **(headers or {})}
        r = web.Response(status=status, body=body, headers=h)
        r.content_type, _, charset = ctype.partition("; charset=")
        if charset:
            r.charset = charset
        return r

    def compute(path: str, aq: ApiQuery, stop: threading.Event) -> web.Response:
        """In a worker thread: the ledger query and its rendering."""
        try:
            sets = run_query(store, aq.query, query_fn, should_stop=stop.is_set)
        except QueryCancelled:
            log.info("cost API query abandoned: its client went away")
            return error(499, "client went away")
        except ConfigError as e:
            return error(400, str(e))
        except OtelAgentError as e:
            log.warning("cost API query failed: %s", e)
            return error(500, str(e))
        if not aq.include_idle and path != "/report.html":
            # OpenCost's idle is ours plus overhead (capacity nobody used); the HTML page
            # always shows them: its reconciliation adds them up to the node
            sets = [[a for a in s if special_kind(a.name) not in (IDLE, OVERHEAD)] for s in sets]
        n = sum(len(s) for s in sets)
        if n * BYTES_PER_ALLOCATION > max_response_bytes:
            return error(400, too_big(f"about {n * BYTES_PER_ALLOCATION:,}"))
        if path == "/report.html":
            from otel_agent.cost.html_report import render_html
            rec = None
            if query_fn is None and aq.query.model == Model.CHARGEBACK:
                try:
                    rec = ledger_reconciliation(store, aq.query, currency_of(sets, currency))
                except OtelAgentError as e:
                    log.warning("reconciliation for the HTML report failed: %s", e)
            body = render_html(sets or [[]], aq.query, default_currency=currency,
                               reconciliation=rec).encode()
            ctype = "text/html; charset=utf-8"
        else:
            if aq.accumulate:
                sets = accumulate_by(sets, aq.accumulate, split(aq.query.window, aq.query.step))
            try:
                doc = opencost_json(sets)
            except OtelAgentError as e:
                return error(500, str(e))
            doc.setdefault("currency", currency)
            body = (json.dumps(doc) + "\n").encode()
            ctype = "application/json"
        if len(body) > max_response_bytes:
            return error(400, too_big(f"{len(body):,}"))
        return send(200, body, ctype)

    def invoice_reconciliation(params) -> web.Response:
        """In a worker thread: `cost reconcile --format json` (reconcile.py), optionally for
        one billing period (?period=YYYY-MM)."""
        from otel_agent.cost.invoice_cli import _period
        from otel_agent.cost.reconcile import reconcile_invoice, render_json

        unknown = sorted(set(params) - {"period"})
        if unknown:
            return error(400, f"unknown parameter {unknown[0][:40]!r}; allowed: period")
        try:
            recs = reconcile_invoice(store, period=_period(params.get("period"), "period"))
        except ConfigError as e:
            return error(400, str(e))
        except (OtelAgentError, sa_errors()) as e:
            log.warning("invoice reconciliation failed: %s", e)
            return error(500, "the ledger cannot answer; see the cost processor's log")
        return send(200, render_json(recs).encode(), "application/json")

    def too_big(size: str) -> str:
        return (f"response: {size} bytes, over the limit of {max_response_bytes:,}: use "
                f"accumulate=true, a longer step, a shorter window or a filter")

    def metrics_text() -> str:
        own = ("# HELP otel_agent_cost_api_busy_total Report queries refused because the API "
               "was busy (503).\n# TYPE otel_agent_cost_api_busy_total counter\n"
               f"otel_agent_cost_api_busy_total {gate.rejected}\n"
               "# HELP otel_agent_cost_api_abandoned_total Report queries stopped because "
               "their client went away.\n# TYPE otel_agent_cost_api_abandoned_total counter\n"
               f"otel_agent_cost_api_abandoned_total {gate.cancelled}\n"
               "# HELP otel_agent_cost_api_queries_in_progress Report queries running or "
               "queued.\n# TYPE otel_agent_cost_api_queries_in_progress gauge\n"
               f"otel_agent_cost_api_queries_in_progress {gate.in_use}\n")
        return (health.prometheus() if health is not None else "") + own

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await route(request)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the request boundary: a bug answers 500, we go on
            log.exception("cost API request failed: %s", request.path_qs)
            return error(500, "internal error; see the cost processor's log")

    async def route(request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return error(405, f"method {request.method} not allowed; use GET", {"Allow": "GET, HEAD"})
        path = request.path.rstrip("/") or "/"
        if path == "/healthz":
            return as_json(200, {"status": "ok"})
        if path == "/readyz":
            snap = health.snapshot() if health is not None else {"ready": True}
            return as_json(200 if is_ready(snap) else 503, snap)
        if path not in ("/allocation", "/allocation/compute", "/report.html", "/metrics",
                        RECONCILIATION_PATH):
            return error(404, f"no such endpoint {path!r}; try /allocation, "
                              f"/allocation/compute, /report.html or {RECONCILIATION_PATH}")
        if not bearer_ok(auth_token, request.headers.get("Authorization")):
            return error(401, "missing or wrong bearer token",
                         {"WWW-Authenticate": 'Bearer realm="otel-agent-cost"'})
        if path == "/metrics":
            text = await asyncio.get_running_loop().run_in_executor(None, metrics_text)
            return send(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
        if path == RECONCILIATION_PATH:
            return await gate.run(lambda stop: invoice_reconciliation(request.rel_url.query))
        try:
            aq = parse_params(request.rel_url.raw_query_string, clock())
            check_work(aq.query, max_steps=max_steps, retention=retention)
        except ConfigError as e:
            return error(400, str(e))
        try:
            return await gate.run(lambda stop: compute(path, aq, stop))
        except Busy:
            return error(503, f"busy: {gate.running} report queries running and {gate.waiting} "
                              f"waiting; retry later", {"Retry-After": str(RETRY_AFTER_SECONDS)})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    try:
        server = HttpServer(app, listen, flag="--http-listen", name="cost-http-api",
                            limits=limits, default_port=DEFAULT_PORT)
    except BaseException:
        gate.close()
        raise
    return ApiHandle(server, gate)
