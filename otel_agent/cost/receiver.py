"""The cost processor's front door: OTLP MetricsService over gRPC (and OTLP/HTTP protobuf).

What the OTLP contract means here:
  * Acknowledged = durable. `Export` returns OK only after the batch is committed; a store
    that cannot write (disk full, database down) gets UNAVAILABLE, which every OTLP exporter
    retries, and nothing of the batch is kept half-way.
  * Partly bad = partial success. Bad points (NaN, negative, start after time, wrong type or
    unit, beyond what their node can hold, a pod's namespace changed: validate.py; over a
    tenant's series limit) are counted in `partial_success.rejected_data_points`
    with the reasons in `error_message`; the good points of the same request are kept. A
    request of which nothing could be accepted is INVALID_ARGUMENT (not retryable: resending
    it cannot help).
  * The request body is parsed here, not by grpcio's deserializer, so malformed protobuf gets
    INVALID_ARGUMENT naming what was wrong instead of grpcio's generic INTERNAL.
  * Bounded: message size (grpc.max_receive_message_length → RESOURCE_EXHAUSTED; HTTP 413),
    live series per tenant (namespace), so one runaway workload cannot grow the ledger unbounded.
  * A fault of ours is transient: an unexpected exception while storing answers UNAVAILABLE
    (HTTP 503 + Retry-After), never INTERNAL, which the Collector's OTLP exporter drops for
    good, even from a persistent queue.
  * Authentication before the body. OTLP/HTTP (aiohttp, see aioserver.py) checks the token
    on the headers and never reads the body of a refused request. On gRPC an interceptor sees
    the metadata first and refuses without asking for the message; what grpcio still takes in
    of such a body is bounded by HTTP/2 flow control, not by us: measured (tests/e2e/attacks/
    test_grpc_auth.py), see the README's "What we guarantee". The bearer scheme is
    case-insensitive on every port (auth.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent import futures
from typing import Callable

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest, ExportMetricsServiceResponse)

from otel_agent.cost.aioserver import Busy, Gate, HttpServer, Limits, Tls, parse_listen
from otel_agent.cost.auth import bearer_ok
from otel_agent.cost.errors import StoreUnavailable
from otel_agent.cost.expiring import ExpiringCache
from otel_agent.cost.health import ProcessorHealth
from otel_agent.cost.ingest import Batch, decode
from otel_agent.cost.store import LIVE_WINDOW_S, Store
from otel_agent.cost.validate import R_SERIES_LIMIT
from otel_agent.errors import ConfigError

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_SERIES_PER_NAMESPACE = 50_000
LIVE_RECOUNT_S = 60  # how often the live series per namespace are recounted from the ledger


class Rejected(Exception):
    """A request answered with an error status (code is a grpc.StatusCode)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Ingestor:
    """Protocol-independent: bytes in, response (or Rejected) out.

    The per-namespace bound counts *live* series (store.LIVE_WINDOW_S): series that received a
    point within the last hour, counted from the database (so a restart keeps the count) every
    LIVE_RECOUNT_S, plus the series accepted since. A CronJob namespace's dead pods stop
    counting within the hour, however many it made; a stored series is never refused. Which
    series are known is cached only while they are live: memory follows live series."""

    def __init__(self, store: Store, *, max_series_per_namespace: int = DEFAULT_MAX_SERIES_PER_NAMESPACE,
                 now_ns: Callable[[], int] = time.time_ns, health: ProcessorHealth | None = None):
        self.store = store
        self.max_series = max_series_per_namespace
        self.now_ns = now_ns
        self.health = health or store.health
        self._lock = threading.Lock()
        self._known: ExpiringCache[int, str] = ExpiringCache(LIVE_WINDOW_S)  # series → namespace
        self._live: dict[str, int] = {}  # namespace → live series (recounted, plus new ones)
        self._recounted_s: float | None = None

    def export(self, body: bytes) -> ExportMetricsServiceResponse:
        try:
            request = ExportMetricsServiceRequest.FromString(body)
        except (DecodeError, ValueError, RuntimeError) as e:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT,
                           f"request body is not an OTLP ExportMetricsServiceRequest: {e}") from e
        now = self.now_ns()
        from datetime import datetime, timezone

        oldest = self.store.oldest_accepted_ns(datetime.fromtimestamp(now / 1e9, timezone.utc))
        batch = decode(request, now_ns=now, oldest_ns=oldest)
        with self._lock:
            self._limit_series(batch, now)
            if batch.points:
                try:
                    self.store.write(batch, now_ns=now)
                except StoreUnavailable as e:
                    log.warning("batch not stored, client will retry: %s", e)
                    raise Rejected(grpc.StatusCode.UNAVAILABLE, f"{e}; retry later") from e
                for sid, s in batch.series.items():
                    if sid not in self._known:
                        self._known[sid] = s.namespace
                        self._live[s.namespace] = self._live.get(s.namespace, 0) + 1
        self.health.record_ingest(len(batch.points), batch.codes, batch.labels_dropped)
        if not batch.points and batch.rejected:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT,
                           f"all {batch.rejected} data points rejected: {batch.error_message()}")
        resp = ExportMetricsServiceResponse()
        if batch.rejected:
            resp.partial_success.rejected_data_points = batch.rejected
            resp.partial_success.error_message = batch.error_message()
        return resp

    def live_series(self) -> int:
        with self._lock:
            return sum(self._live.values())

    def _recount(self, now_s: float) -> None:
        if self._recounted_s is None or now_s - self._recounted_s >= LIVE_RECOUNT_S:
            self._live = self.store.live_series(int(now_s))
            self._recounted_s = now_s
            self.health.set_live_series(sum(self._live.values()))

    def _limit_series(self, batch: Batch, now_ns: int) -> None:
        if not batch.series:
            return
        now_s = now_ns / 1e9
        self._known.rotate(now_s)
        self._recount(now_s)
        unknown = [sid for sid in batch.series if sid not in self._known]
        if unknown:
            for sid, ns in self.store.existing_series(unknown).items():
                self._known[sid] = ns  # stored: never refused (it is live again)
        new_per_ns: dict[str, int] = {}
        refused: set[int] = set()
        for sid in sorted(batch.series):
            if sid in self._known:
                continue
            s = batch.series[sid]
            if not s.namespace:  # node-level series belong to no tenant
                continue
            n = self._live.get(s.namespace, 0) + new_per_ns.get(s.namespace, 0)
            if n >= self.max_series:
                refused.add(sid)
            else:
                new_per_ns[s.namespace] = new_per_ns.get(s.namespace, 0) + 1
        if not refused:
            return
        kept = []
        by_ns: dict[str, int] = {}
        for p in batch.points:
            if p[0] in refused:
                ns = batch.series[p[0]].namespace
                by_ns[ns] = by_ns.get(ns, 0) + 1
            else:
                kept.append(p)
        batch.points = kept
        for ns, n in by_ns.items():
            batch.reject(R_SERIES_LIMIT, f"namespace {ns}: over its limit of {self.max_series} "
                         f"live series", n)
        for sid in refused:
            del batch.series[sid]


# --- the front doors -------------------------------------------------------------------------

# What one gRPC client may hold. grpcio's C core speaks HTTP/2 on its own threads; a Python
# worker is taken only once a whole, authenticated message has arrived (unary Export), so slow
# or idle gRPC clients hold no Python thread. These bound what they hold in the core:
GRPC_MAX_CONCURRENT_STREAMS = 16        # per connection
GRPC_HANDSHAKE_TIMEOUT_MS = 10_000      # TLS + HTTP/2 preface, then the connection is closed
GRPC_MAX_CONNECTION_IDLE_MS = 5 * 60_000
GRPC_MAX_CONNECTION_AGE_MS = 30 * 60_000  # clients reconnect (and re-resolve) now and then
GRPC_MAX_CONNECTION_AGE_GRACE_MS = 60_000
GRPC_MAX_CONNECTIONS = 1024
GRPC_MAX_METADATA_BYTES = 16 * 1024
# OTLP/HTTP: at most this many bodies of max_message_bytes in memory at once, summed over
# requests; past it new requests get 503 + Retry-After before their body is read.
HTTP_BODY_BUDGET_MESSAGES = 4
RETRY_AFTER_SECONDS = 5


def grpc_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_concurrent_streams", GRPC_MAX_CONCURRENT_STREAMS),
            ("grpc.server_handshake_timeout_ms", GRPC_HANDSHAKE_TIMEOUT_MS),
            ("grpc.max_connection_idle_ms", GRPC_MAX_CONNECTION_IDLE_MS),
            ("grpc.max_connection_age_ms", GRPC_MAX_CONNECTION_AGE_MS),
            ("grpc.max_connection_age_grace_ms", GRPC_MAX_CONNECTION_AGE_GRACE_MS),
            ("grpc.max_allowed_incoming_connections", GRPC_MAX_CONNECTIONS),
            ("grpc.max_metadata_size", GRPC_MAX_METADATA_BYTES),
            # Without BDP probing a stream's window grows only when the handler asks for a
            # message; a refused call never asks. Measured, 8 unauthenticated 16 MiB calls:
            # peak RSS +30 MiB with probing, +1.4 MiB without (+166 MiB when the token was
            # checked after the body). In-cluster links have no bandwidth-delay to probe for.
            ("grpc.http2.bdp_probe", 0),
            # a client may ping to keep a quiet connection alive, but not flood us with pings
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 2)]


def _deny(_requests: object, context: grpc.ServicerContext) -> None:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")


class BearerInterceptor(grpc.ServerInterceptor):
    """Checks the token when the call's headers arrive, before its message is read.

    grpcio runs interceptors on its serving thread as soon as the metadata is in. A wrong or
    missing token gets a request-*streaming* handler that aborts without asking for the
    message, so grpcio never assembles the (up to 16 MiB) body of an unauthenticated call; an
    authenticated one continues to the unary Export handler. What grpcio still takes in of a
    refused call is what HTTP/2 flow control let the client send before the refusal (with BDP
    probing off, measured ~0.2 MiB a call: 8 refused 16 MiB calls, +1.4 MiB peak RSS); no
    Python API bounds it further."""

    _denied = grpc.stream_unary_rpc_method_handler(_deny)

    def __init__(self, token: str) -> None:
        self.token = token
        self.denied = 0

    def intercept_service(self, continuation, handler_call_details):  # noqa: ANN001, ANN201
        header = None
        for k, v in handler_call_details.invocation_metadata or ():
            if k == "authorization":
                header = v if isinstance(v, str) else None
                break
        if bearer_ok(self.token, header):
            return continuation(handler_call_details)
        self.denied += 1
        return self._denied


class Receiver:
    """OTLP/gRPC (and optionally OTLP/HTTP) in front of an Ingestor."""

    def __init__(self, store: Store, *, listen: str = "0.0.0.0:4317", http_listen: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_series_per_namespace: int = DEFAULT_MAX_SERIES_PER_NAMESPACE,
                 auth_token: str | None = None, tls: Tls | None = None,
                 now_ns: Callable[[], int] = time.time_ns, workers: int = 8,
                 http_limits: Limits = Limits()):
        self.ingestor = Ingestor(store, max_series_per_namespace=max_series_per_namespace, now_ns=now_ns)
        self.auth_token = auth_token
        self.max_message_bytes = max_message_bytes
        # Checked here: grpcio binds a random port for "HOST:99999" instead of failing.
        parse_listen(listen, "--listen")
        interceptors = [BearerInterceptor(auth_token)] if auth_token else []
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otlp-grpc"),
            interceptors=interceptors, options=grpc_options(max_message_bytes))
        handler = grpc.unary_unary_rpc_method_handler(
            self._grpc_export, request_deserializer=None,
            response_serializer=ExportMetricsServiceResponse.SerializeToString)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))
        creds = None
        if tls:
            creds = grpc.ssl_server_credentials(
                [(_read(tls.key_file, "--tls-key"), _read(tls.cert_file, "--tls-cert"))],
                root_certificates=_read(tls.client_ca_file, "--client-ca") if tls.client_ca_file else None,
                require_client_auth=tls.client_ca_file is not None)
        try:
            port = (self._server.add_secure_port(listen, creds) if tls
                    else self._server.add_insecure_port(listen))
        except RuntimeError:  # newer grpcio raises where older ones returned 0
            port = 0
        if port == 0:
            raise ConfigError(f"--listen {listen}: cannot listen there (address in use or invalid)")
        self.port = port
        self._http: HttpServer | None = None
        self.http_port: int | None = None
        self._http_listen, self._tls, self._http_limits = http_listen, tls, http_limits
        self._gate: Gate | None = None
        self._body_bytes = 0  # OTLP/HTTP bodies in memory now (touched on the loop only)

    def start(self) -> "Receiver":
        self._server.start()
        if self._http_listen:
            self._gate = Gate("otlp-http", running=2, waiting=32)
            try:
                self._http = HttpServer(self._http_app(), self._http_listen, flag="--otlp-http-listen",
                                        name="otlp-http", limits=self._http_limits, tls=self._tls)
            except BaseException:
                self._server.stop(0)
                raise
            self.http_port = self._http.port
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        if self._http:
            self._http.stop()
            self._http = None
        if self._gate:
            self._gate.close()
            self._gate = None
        self._server.stop(grace_s).wait()

    def wait(self) -> None:
        self._server.wait_for_termination()

    def _grpc_export(self, body: bytes, context: grpc.ServicerContext) -> ExportMetricsServiceResponse:
        # The token was checked by BearerInterceptor before the body was read.
        try:
            return self.ingestor.export(body)
        except Rejected as r:
            context.abort(r.code, r.message)
        except Exception:  # noqa: BLE001 - the thread boundary: log, answer retryable
            log.exception("export failed; answering UNAVAILABLE so the client retries")
            context.abort(grpc.StatusCode.UNAVAILABLE, _FAULT)
        raise AssertionError("unreachable")

    # --- OTLP/HTTP ---------------------------------------------------------------------------

    def _http_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_message_bytes)
        app.router.add_route("*", "/{tail:.*}", self._http_export)
        return app

    async def _http_export(self, request: web.Request) -> web.StreamResponse:
        if request.path != "/v1/metrics":
            return _plain(404, "only POST /v1/metrics\n")
        if request.method != "POST":
            return _plain(405, "only POST /v1/metrics\n", {"Allow": "POST"})
        if not bearer_ok(self.auth_token, request.headers.get("Authorization")):
            return _status(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype != "application/x-protobuf":
            return _plain(415, "only application/x-protobuf\n")
        length = request.content_length
        if length is None or "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            return _plain(411, "Content-Length required\n", close=True)
        if length > self.max_message_bytes:
            return _plain(413, "message larger than the receiver's limit\n", close=True)
        gz = request.headers.get("Content-Encoding", "").strip().lower() == "gzip"
        cost = length + (self.max_message_bytes if gz else 0)
        budget = HTTP_BODY_BUDGET_MESSAGES * self.max_message_bytes
        if self._body_bytes and self._body_bytes + cost > budget:
            return _status(grpc.StatusCode.UNAVAILABLE, "busy: too many bodies in flight; retry later",
                           close=True)
        assert self._gate is not None
        self._body_bytes += cost
        try:
            try:
                body = await asyncio.wait_for(request.read(), self._http_limits.body_timeout_seconds)
            except asyncio.TimeoutError:
                return _plain(408, "request body not received in time\n", close=True)
            except (web.HTTPException, ConnectionError, web.RequestPayloadError) as e:
                return _plain(400, f"request body not read: {e}\n", close=True)
            try:
                resp = await self._gate.run(lambda _stop: self._ingest_http(body, gz))
            except Busy:
                return _status(grpc.StatusCode.UNAVAILABLE, "busy; retry later")
        finally:
            self._body_bytes -= cost
        if isinstance(resp, Rejected):
            return _status(resp.code, resp.message)
        return web.Response(status=200, body=resp.SerializeToString(),
                            content_type="application/x-protobuf")

    def _ingest_http(self, body: bytes, gz: bool) -> ExportMetricsServiceResponse | Rejected:
        """In a worker thread: unzip (bounded), ingest; errors as a Rejected to answer with."""
        if gz:
            unzipped = _gunzip(body, self.max_message_bytes)
            if unzipped is None:
                return Rejected(grpc.StatusCode.INVALID_ARGUMENT,
                                "bad gzip body, or larger than the receiver's limit once unzipped")
            body = unzipped
        try:
            return self.ingestor.export(body)
        except Rejected as r:
            return r
        except Exception:  # noqa: BLE001 - the thread boundary: log, answer retryable
            log.exception("export failed; answering 503 so the client retries")
            return Rejected(grpc.StatusCode.UNAVAILABLE, _FAULT)


# OTLP: UNAVAILABLE (HTTP 503) is retried by every exporter; INTERNAL is not: the Collector's
# OTLP exporter drops such a batch for good, even from a persistent queue.
_FAULT = "transient fault in the cost processor (see its log); retry later"

_HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
                grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
                grpc.StatusCode.INTERNAL: 500}


def _plain(code: int, text: str, headers: dict[str, str] | None = None, *,
           close: bool = False) -> web.Response:
    h = dict(headers or {})
    if close:  # an unread body stays on the socket: do not reuse it
        h["Connection"] = "close"
    return web.Response(status=code, text=text, content_type="text/plain", headers=h)


def _status(code: grpc.StatusCode, message: str, *, close: bool = False) -> web.Response:
    """An OTLP/HTTP error: a google.rpc.Status body, Retry-After on the retryable ones."""
    st = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    h: dict[str, str] = {}
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
        h["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if close:
        h["Connection"] = "close"
    return web.Response(status=_HTTP_STATUS.get(code, 500), body=st.SerializeToString(),
                        content_type="application/x-protobuf", headers=h)


def _gunzip(body: bytes, limit: int) -> bytes | None:
    """The unzipped body, or None if it is not gzip or unzips beyond `limit` (a gzip bomb:
    16 MB of zeros compress to 16 KB). gzip.decompress raises EOFError and zlib.error, not
    only OSError, and has no limit."""
    import zlib

    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error:
        return None
    if len(out) > limit or not d.eof or d.unused_data:
        return None
    return out


def _read(path: str | None, flag: str) -> bytes:
    try:
        with open(path or "", "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot read: {e.strerror or e}") from e
