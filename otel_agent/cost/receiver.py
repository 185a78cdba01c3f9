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
"""

from __future__ import annotations

import hmac
import logging
import ssl
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import grpc
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest, ExportMetricsServiceResponse)

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


@dataclass(frozen=True, slots=True)
class Tls:
    cert_file: str
    key_file: str
    client_ca_file: str | None = None  # set: clients must present a certificate signed by it


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


def _authorized(token: str | None, header: str | None) -> bool:
    if token is None:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode())


class Receiver:
    """OTLP/gRPC (and optionally OTLP/HTTP) in front of an Ingestor."""

    def __init__(self, store: Store, *, listen: str = "0.0.0.0:4317", http_listen: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_series_per_namespace: int = DEFAULT_MAX_SERIES_PER_NAMESPACE,
                 auth_token: str | None = None, tls: Tls | None = None,
                 now_ns: Callable[[], int] = time.time_ns, workers: int = 8):
        self.ingestor = Ingestor(store, max_series_per_namespace=max_series_per_namespace, now_ns=now_ns)
        self.auth_token = auth_token
        self.max_message_bytes = max_message_bytes
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otlp-grpc"),
            options=[("grpc.max_receive_message_length", max_message_bytes)])
        handler = grpc.unary_unary_rpc_method_handler(
            self._grpc_export, request_deserializer=None,
            response_serializer=ExportMetricsServiceResponse.SerializeToString)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))
        if tls:
            creds = grpc.ssl_server_credentials(
                [(_read(tls.key_file, "--tls-key"), _read(tls.cert_file, "--tls-cert"))],
                root_certificates=_read(tls.client_ca_file, "--client-ca") if tls.client_ca_file else None,
                require_client_auth=tls.client_ca_file is not None)
            port = self._server.add_secure_port(listen, creds)
        else:
            port = self._server.add_insecure_port(listen)
        if port == 0:
            raise ConfigError(f"--listen {listen}: cannot listen there (address in use or invalid)")
        self.port = port
        self._http: ThreadingHTTPServer | None = None
        self.http_port: int | None = None
        if http_listen:
            self._http = _http_server(self, http_listen, tls)
            self.http_port = self._http.server_address[1]

    def start(self) -> "Receiver":
        self._server.start()
        if self._http:
            threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True).start()
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        if self._http:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        self._server.stop(grace_s).wait()

    def wait(self) -> None:
        self._server.wait_for_termination()

    def _grpc_export(self, body: bytes, context: grpc.ServicerContext) -> ExportMetricsServiceResponse:
        md = dict(context.invocation_metadata() or ())
        if not _authorized(self.auth_token, md.get("authorization")):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        try:
            return self.ingestor.export(body)
        except Rejected as r:
            context.abort(r.code, r.message)
        except Exception:  # noqa: BLE001 - the thread boundary: log, answer retryable
            log.exception("export failed")
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the cost processor's log")
        raise AssertionError("unreachable")


_HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
                grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
                grpc.StatusCode.INTERNAL: 500}


def _http_server(receiver: Receiver, listen: str, tls: Tls | None) -> ThreadingHTTPServer:
    host, _, port = listen.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args) -> None:  # noqa: ANN002
            log.debug("otlp-http: " + fmt, *args)

        def _reply(self, code: int, body: bytes, ctype: str = "application/x-protobuf",
                   retry_after: bool = False) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if retry_after:
                self.send_header("Retry-After", "5")
            self.end_headers()
            self.wfile.write(body)

        def _error(self, code: grpc.StatusCode, message: str) -> None:
            st = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
            self._reply(_HTTP_STATUS.get(code, 500), st.SerializeToString(),
                        retry_after=code == grpc.StatusCode.UNAVAILABLE)

        def do_POST(self) -> None:  # noqa: N802
            if self.path.split("?")[0] != "/v1/metrics":
                self._reply(404, b"only POST /v1/metrics\n", "text/plain")
                return
            if not _authorized(receiver.auth_token, self.headers.get("Authorization")):
                self._error(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
                return
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype != "application/x-protobuf":
                self._reply(415, b"only application/x-protobuf\n", "text/plain")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                length = -1
            if length < 0:  # read(-1) would wait for the client to close: a hung handler
                self._reply(411, b"Content-Length required\n", "text/plain")
                self.close_connection = True
                return
            if length > receiver.max_message_bytes:
                self._reply(413, b"message larger than the receiver's limit\n", "text/plain")
                self.close_connection = True
                return
            body = self.rfile.read(length)
            if self.headers.get("Content-Encoding") == "gzip":
                body = _gunzip(body, receiver.max_message_bytes)
                if body is None:
                    self._error(grpc.StatusCode.INVALID_ARGUMENT,
                                "bad gzip body, or larger than the receiver's limit once unzipped")
                    return
            try:
                resp = receiver.ingestor.export(body)
            except Rejected as r:
                self._error(r.code, r.message)
                return
            except Exception:  # noqa: BLE001 - the thread boundary
                log.exception("export failed")
                self._error(grpc.StatusCode.INTERNAL, "internal error")
                return
            self._reply(200, resp.SerializeToString())

    try:
        server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--otlp-http-listen {listen}: cannot listen there: {e}") from e
    server.daemon_threads = True
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file:
            ctx.load_verify_locations(tls.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    return server


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
