"""The ledger over HTTP, with OpenCost's `/allocation` parameters and JSON field names, so
tools and dashboards written for OpenCost (its UI, kubectl-cost, Grafana JSON datasources)
read our ledger without changes. The HTML report is served beside it for people.

Stdlib `http.server` in a thread: a handful of requests a minute from dashboards needs no
framework, and the cost processor stays one dependency lighter.

Endpoints (GET):
  /allocation, /allocation/compute   window (required), aggregate, step, accumulate,
                                     shareIdle, idleByNode, includeIdle, filter, model
  /report.html                       the same parameters, rendered as the HTML report
  /healthz                           liveness, never needs the token

Errors are JSON `{"code": 400, "status": "error", "message": ...}` with the same HTTP status,
and a message that names the parameter and what it allows. With `auth_token` set, every
endpoint but /healthz needs `Authorization: Bearer <token>` (401 otherwise).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from otel_agent.cost.report import (ReportQuery, accumulate_sets, currency_of,
                                    ledger_reconciliation, opencost_json, parse_aggregate,
                                    parse_enum, run_query)
from otel_agent.cost.types import IDLE, Model, SharePolicy
from otel_agent.cost.window import parse_step, parse_window
from otel_agent.errors import ConfigError, OtelAgentError

log = logging.getLogger(__name__)

DEFAULT_PORT = 9003  # OpenCost's API port, so clients' defaults work
PARAMS = ("window", "aggregate", "step", "accumulate", "shareIdle", "idleByNode", "includeIdle",
          "filter", "model")
# OpenCost parameters we accept and ignore: tools send them, and they do not change our answer
# (we have no Prometheus resolution, no external costs, one cluster per ledger query).
IGNORED = ("resolution", "external", "shareTenancyCosts", "shareNamespaces", "shareLabels",
           "shareCost", "shareSplit", "reconcile", "splitIdle", "format")
MAX_QUERY_BYTES = 4096


@dataclass(frozen=True, slots=True)
class ApiQuery:
    query: ReportQuery
    accumulate: bool
    include_idle: bool


def _bool(name: str, value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise ConfigError(f"{name}={value!r}: allowed: true or false")


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
        aggregate = parse_aggregate(p.get("aggregate") or "namespace")
    except ConfigError as e:
        raise ConfigError(f"aggregate: {e}") from e
    try:
        model = parse_enum(Model, p.get("model") or Model.CHARGEBACK.value, "model")
    except ConfigError as e:
        raise ConfigError(f"model: {e}") from e
    share = (p.get("shareIdle") or "false").strip().lower()
    if share in ("true", "1", "weighted"):
        policy = SharePolicy.PROPORTIONAL  # OpenCost's shareIdle=true shares by cost weight
    elif share in ("false", "0"):
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
    return ApiQuery(q, accumulate=_bool("accumulate", p.get("accumulate"), False),
                    include_idle=_bool("includeIdle", p.get("includeIdle"), True))


class ApiHandle:
    """A running API server: `.port`, `.url`, `.stop()` (idempotent)."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread
        self._stopped = False
        self._lock = threading.Lock()
        self.host, self.port = server.server_address[:2]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def parse_listen(listen: str) -> tuple[str, int]:
    text = (listen or "").strip()
    if text.startswith("["):  # [::1]:9003
        host, _, port = text[1:].partition("]")
        port = port.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    try:
        n = int(port) if port else DEFAULT_PORT
    except ValueError as e:
        raise ConfigError(f"listen address {listen!r}: port {port!r} is not a number; "
                          f"expected HOST:PORT like 127.0.0.1:9003") from e
    if not 0 <= n <= 65535 or not host:
        raise ConfigError(f"listen address {listen!r}: expected HOST:PORT like 127.0.0.1:9003")
    return host, n


def serve(store: Any, pricing: Any, listen: str, auth_token: str | None = None, *,
          query_fn: Callable[..., Any] | None = None,
          clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> ApiHandle:
    """Start the API on `listen` (HOST:PORT; port 0 picks a free one) in a daemon thread."""
    host, port = parse_listen(listen)
    token = auth_token.encode() if auth_token else None
    currency = getattr(pricing, "currency", None) or "USD"

    class Handler(BaseHTTPRequestHandler):
        server_version = "otel-agent-cost"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # route through logging
            log.debug("%s " + fmt, self.address_string(), *args)

        def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
            self._send(status, (json.dumps(obj) + "\n").encode(), "application/json", extra)

        def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
            self._json(status, {"code": status, "status": "error", "message": message}, extra)

        def _authorized(self) -> bool:
            if token is None:
                return True
            got = self.headers.get("Authorization", "")
            scheme, _, cred = got.partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(cred.strip().encode(), token)

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802
            try:
                self._route()
            except Exception:  # the thread boundary: a bug answers 500, the server lives on
                log.exception("cost API request failed: %s", self.path)
                try:
                    self._error(500, "internal error; see the cost processor's log")
                except OSError:
                    pass

        def _other(self) -> None:
            self._error(405, f"method {self.command} not allowed; use GET", {"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = _other  # noqa: N815

        def _route(self) -> None:
            parts = urlsplit(self.path)
            path = parts.path.rstrip("/") or "/"
            if path == "/healthz":
                return self._json(200, {"status": "ok"})
            if path not in ("/allocation", "/allocation/compute", "/report.html"):
                return self._error(404, f"no such endpoint {path!r}; try /allocation, "
                                        f"/allocation/compute or /report.html")
            if not self._authorized():
                return self._error(401, "missing or wrong bearer token",
                                   {"WWW-Authenticate": 'Bearer realm="otel-agent-cost"'})
            try:
                aq = parse_params(parts.query, clock())
                sets = run_query(store, aq.query, query_fn)
            except ConfigError as e:
                return self._error(400, str(e))
            except OtelAgentError as e:
                log.warning("cost API query failed: %s", e)
                return self._error(500, str(e))
            if not aq.include_idle:
                sets = [[a for a in s if a.name != IDLE] for s in sets]
            if path == "/report.html":
                from otel_agent.cost.html_report import render_html
                rec = None
                if query_fn is None and aq.query.model == Model.CHARGEBACK:
                    try:
                        rec = ledger_reconciliation(store, aq.query,
                                                    currency_of(sets, currency))
                    except OtelAgentError as e:
                        log.warning("reconciliation for the HTML report failed: %s", e)
                body = render_html(sets or [[]], aq.query, default_currency=currency,
                                   reconciliation=rec)
                return self._send(200, body.encode(), "text/html; charset=utf-8")
            if aq.accumulate:
                sets = accumulate_sets(sets)
            try:
                body = opencost_json(sets)
            except OtelAgentError as e:
                return self._error(500, str(e))
            body.setdefault("currency", currency)
            return self._json(200, body)

    server_cls = ThreadingHTTPServer
    if ":" in host:
        server_cls = type("ThreadingHTTPServer6", (ThreadingHTTPServer,),
                          {"address_family": socket.AF_INET6})
    try:
        server = server_cls((host, port), Handler)
    except OSError as e:
        raise ConfigError(f"cannot listen on {listen!r}: {e.strerror}") from e
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="cost-http-api", daemon=True)
    t.start()
    return ApiHandle(server, t)
