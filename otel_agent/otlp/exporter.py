"""OTLP export of ready-made request bytes (otlp/encode.py), over gRPC or OTLP/HTTP.

The agent encodes its requests itself (a resource's bytes are kept between cycles), so the
SDK's exporters, which take the SDK's data model and encode it again every time, would undo
that. What users rely on from them is kept, read the way every OpenTelemetry component reads
it: the `OTEL_EXPORTER_OTLP_*` variables (the `_METRICS_` one first, then the generic one) for
endpoint, headers, compression, CA certificate, client certificate and key, timeout and
insecure; gRPC or OTLP/HTTP protobuf. Every value is validated when the agent starts, and a bad
one is a ConfigError naming the variable (the CLI's one line and exit 2).

Failures return False, never raise into the loop; only transient answers are retried, with
capped, jittered exponential backoff within the export timeout (gRPC: UNAVAILABLE, CANCELLED,
DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, DATA_LOSS, and RESOURCE_EXHAUSTED only when the
server sends RetryInfo; HTTP: 429, 502, 503, 504 and a dropped connection), as the OTLP
specification asks. Requests are split between resources below the receiver's size limit
(encode.MAX_REQUEST_BYTES). `shutdown` is idempotent and cuts a backoff short.

`OTEL_EXPORTER_OTLP_TIMEOUT` is in seconds, as the Python SDK has always read it (the agent
read it through the SDK before).
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import random
import ssl
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol

from otel_agent import __version__
from otel_agent.config import EXPORT_TIMEOUT_SECONDS_RANGE, AgentConfig
from otel_agent.errors import ConfigError
from otel_agent.otlp.encode import MAX_REQUEST_BYTES, Encoded

log = logging.getLogger(__name__)

GRPC_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
USER_AGENT = f"otel-agent/{__version__}"
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 8.0
COMPRESSIONS = ("none", "gzip", "deflate")
_HTTP_RETRYABLE = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class ExportSettings:
    protocol: str  # grpc | http/protobuf
    target: str  # gRPC: host:port; HTTP: the full URL of the metrics path
    insecure: bool  # gRPC only: plaintext
    headers: tuple[tuple[str, str], ...] = ()
    compression: str = "none"
    certificate: bytes | None = None  # CA bundle (PEM)
    client_certificate: bytes | None = None
    client_key: bytes | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    # paths, for HTTP's ssl module (which loads files)
    certificate_path: str | None = None
    client_certificate_path: str | None = None
    client_key_path: str | None = None


class Exporter(Protocol):
    def export(self, encoded: Encoded) -> bool: ...
    def shutdown(self) -> None: ...


# --- settings -----------------------------------------------------------------------------

def _env(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """(variable, value) of OTEL_EXPORTER_OTLP_METRICS_<name> or OTEL_EXPORTER_OTLP_<name>."""
    for var in (f"OTEL_EXPORTER_OTLP_METRICS_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        v = env.get(var, "").strip()
        if v:
            return var, v
    return None


def _headers(var: str, raw: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in raw.split(","):
        if not part.strip():
            continue
        k, sep, v = part.partition("=")
        k = urllib.parse.unquote(k).strip().lower()
        v = urllib.parse.unquote(v).strip()
        if not sep or not k or any(c in k for c in " \t\r\n:") or any(c in v for c in "\r\n"):
            raise ConfigError(f"environment {var}: {part.strip()[:60]!r} is not key=value "
                              "(W3C baggage format, values URL-encoded)")
        out.append((k, v))
    return tuple(out)


def _read_pem(var: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"environment {var}: cannot read {path} ({e.strerror})") from e
    if b"-----BEGIN" not in data:
        raise ConfigError(f"environment {var}: {path} is not a PEM file")
    return data


def settings(cfg: AgentConfig, env: Mapping[str, str] | None = None) -> ExportSettings:
    """The exporter's settings from the agent's configuration and OTEL_EXPORTER_OTLP_*."""
    env = os.environ if env is None else env
    http_proto = cfg.protocol == "http/protobuf"
    endpoint = cfg.endpoint
    signal_url = False
    if endpoint is None:
        found = _env(env, "ENDPOINT")
        if found:
            endpoint, signal_url = found[1], found[0].startswith("OTEL_EXPORTER_OTLP_METRICS_")
    if http_proto:
        endpoint = endpoint or "http://localhost:4318"
        u = urllib.parse.urlsplit(endpoint)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ConfigError(f"OTLP/HTTP endpoint {endpoint!r} must be an http:// or https:// URL")
        if not signal_url and not u.path.rstrip("/").endswith("/v1/metrics"):
            # OTEL_EXPORTER_OTLP_ENDPOINT is a base URL for OTLP/HTTP; the signal path is appended.
            endpoint = endpoint.rstrip("/") + "/v1/metrics"
        target, insecure = endpoint, u.scheme == "http"
    else:
        endpoint = endpoint or "http://localhost:4317"
        u = urllib.parse.urlsplit(endpoint if "//" in endpoint else "//" + endpoint)
        if not u.hostname:
            raise ConfigError(f"OTLP/gRPC endpoint {endpoint!r} has no host")
        try:
            port = u.port or 4317
        except ValueError as e:
            raise ConfigError(f"OTLP/gRPC endpoint {endpoint!r}: bad port") from e
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        target = f"{host}:{port}"
        if u.scheme == "https":
            insecure = False
        elif cfg.insecure is not None:
            insecure = cfg.insecure
        else:
            insecure = u.scheme == "http"

    headers: tuple[tuple[str, str], ...] = ()
    if found := _env(env, "HEADERS"):
        headers = _headers(*found)
    compression = "none"
    if found := _env(env, "COMPRESSION"):
        compression = found[1].lower()
        if compression not in COMPRESSIONS or (compression == "deflate" and not http_proto):
            allowed = "gzip or none" if not http_proto else "gzip, deflate or none"
            raise ConfigError(f"environment {found[0]}: {found[1]!r} must be {allowed}")
    timeout = cfg.export_timeout_seconds
    if timeout is None:
        found = _env(env, "TIMEOUT")
        timeout = DEFAULT_TIMEOUT_SECONDS
        if found:
            lo, hi = EXPORT_TIMEOUT_SECONDS_RANGE
            try:
                timeout = float(found[1])
            except ValueError:
                timeout = -1.0
            if not lo <= timeout <= hi:
                raise ConfigError(f"environment {found[0]}: {found[1]!r} must be seconds between "
                                  f"{lo:g} and {hi:g}")
    pem: dict[str, tuple[str, bytes] | None] = {}
    for name in ("CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"):
        found = _env(env, name)
        pem[name] = (found[1], _read_pem(*found)) if found else None
    if (pem["CLIENT_CERTIFICATE"] is None) != (pem["CLIENT_KEY"] is None):
        raise ConfigError("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY "
                          "go together (mutual TLS): set both or neither")
    return ExportSettings(
        protocol=cfg.protocol, target=target, insecure=insecure, headers=headers,
        compression=compression, timeout_seconds=timeout,
        certificate=pem["CERTIFICATE"][1] if pem["CERTIFICATE"] else None,
        client_certificate=pem["CLIENT_CERTIFICATE"][1] if pem["CLIENT_CERTIFICATE"] else None,
        client_key=pem["CLIENT_KEY"][1] if pem["CLIENT_KEY"] else None,
        certificate_path=pem["CERTIFICATE"][0] if pem["CERTIFICATE"] else None,
        client_certificate_path=pem["CLIENT_CERTIFICATE"][0] if pem["CLIENT_CERTIFICATE"] else None,
        client_key_path=pem["CLIENT_KEY"][0] if pem["CLIENT_KEY"] else None,
    )


def make_exporter(cfg: AgentConfig, env: Mapping[str, str] | None = None) -> Exporter:
    s = settings(cfg, env)
    return HttpExporter(s) if s.protocol == "http/protobuf" else GrpcExporter(s)


# --- the retry loop, shared -------------------------------------------------------------------

class _Retrying:
    """Sends each request of an export with retries; subclasses do one attempt."""

    def __init__(self, s: ExportSettings) -> None:
        self.settings = s
        self._closed = threading.Event()
        self.max_request_bytes = MAX_REQUEST_BYTES

    def export(self, encoded: Encoded) -> bool:
        if self._closed.is_set():
            return False
        deadline = time.monotonic() + self.settings.timeout_seconds
        for body in encoded.requests(self.max_request_bytes):
            if not self._send_with_retries(body, deadline):
                return False  # cumulative values: the next export carries what this one lacked
        return True

    def _send_with_retries(self, body: bytes, deadline: float) -> bool:
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.error("OTLP export to %s timed out after %.3g s", self.settings.target,
                          self.settings.timeout_seconds)
                return False
            try:
                error, retry_after = self._attempt(body, remaining)
            except Exception as e:  # the thread boundary: a transport bug must not kill the loop
                log.exception("OTLP export to %s raised", self.settings.target)
                error, retry_after = f"{type(e).__name__}: {e}", None
            if error is None:
                return True
            if retry_after is None or self._closed.is_set():
                log.error("OTLP export to %s failed: %s", self.settings.target, error)
                return False
            backoff = retry_after if retry_after > 0 else \
                min(MAX_BACKOFF_SECONDS, 2 ** attempt) * random.uniform(0.8, 1.2)
            if backoff >= deadline - time.monotonic():
                log.error("OTLP export to %s failed: %s (no time left to retry)",
                          self.settings.target, error)
                return False
            log.warning("OTLP export to %s: %s; retrying in %.2f s", self.settings.target,
                        error, backoff)
            if self._closed.wait(backoff):
                return False
            attempt += 1

    def _attempt(self, body: bytes, timeout: float) -> tuple[str | None, float | None]:
        """One try: (None, None) on success; (error, None) if permanent; (error, seconds to
        wait, 0 for the default backoff) if transient."""
        raise NotImplementedError

    def shutdown(self) -> None:
        self._closed.set()


# --- gRPC -----------------------------------------------------------------------------------

class GrpcExporter(_Retrying):
    def __init__(self, s: ExportSettings) -> None:
        super().__init__(s)
        import grpc

        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceResponse,
        )

        self._grpc = grpc
        self._response = ExportMetricsServiceResponse
        self._transient = frozenset({
            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.ABORTED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DATA_LOSS})
        self._compression = grpc.Compression.Gzip if s.compression == "gzip" else grpc.Compression.NoCompression
        self._credentials = None
        if not s.insecure:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=s.certificate, private_key=s.client_key,
                certificate_chain=s.client_certificate)
        self._channel = None
        self._call = None
        self._lock = threading.Lock()
        self._connect()

    def _connect(self) -> None:
        grpc = self._grpc
        options = [("grpc.primary_user_agent", USER_AGENT),
                   ("grpc.max_send_message_length", 2 * MAX_REQUEST_BYTES)]
        if self._credentials is None:
            ch = grpc.insecure_channel(self.settings.target, options=options,
                                       compression=self._compression)
        else:
            ch = grpc.secure_channel(self.settings.target, self._credentials, options=options,
                                     compression=self._compression)
        old, self._channel = self._channel, ch
        # request_serializer None: the request is already protobuf bytes.
        self._call = ch.unary_unary(GRPC_METHOD, request_serializer=None,
                                    response_deserializer=self._response.FromString)
        if old is not None:
            old.close()

    def _attempt(self, body: bytes, timeout: float) -> tuple[str | None, float | None]:
        grpc = self._grpc
        try:
            resp = self._call(body, metadata=self.settings.headers or None, timeout=timeout)
        except grpc.RpcError as e:
            code = e.code()
            delay = _retry_info_seconds(e)
            msg = f"{code.name} {e.details() or ''}".strip()
            if code is grpc.StatusCode.UNAVAILABLE:
                # A fresh channel reconnects at once; the old one would wait out gRPC's own
                # reconnect backoff (up to 2 minutes) after a long outage.
                self._connect()
            if code in self._transient:
                return msg, delay if delay is not None else 0.0
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None:
                return msg, delay  # throttled with a delay: retryable (OTLP spec)
            return msg, None
        _partial(resp, self.settings.target)
        return None, None

    def shutdown(self) -> None:
        super().shutdown()
        ch, self._channel = self._channel, None
        if ch is not None:
            ch.close()


def _retry_info_seconds(e) -> float | None:
    try:
        md = dict(e.trailing_metadata() or ())
    except Exception:
        return None
    raw = md.get("google.rpc.retryinfo-bin")
    if not raw:
        return None
    try:
        from google.rpc.error_details_pb2 import RetryInfo

        ri = RetryInfo.FromString(raw)
        return ri.retry_delay.seconds + ri.retry_delay.nanos / 1e9
    except Exception:
        return None


def _partial(resp, target: str) -> None:
    ps = getattr(resp, "partial_success", None)
    if ps is not None and (ps.rejected_data_points or ps.error_message):
        log.warning("OTLP receiver %s rejected %d data points: %s", target,
                    ps.rejected_data_points, ps.error_message[:200])


# --- OTLP/HTTP ------------------------------------------------------------------------------

class HttpExporter(_Retrying):
    def __init__(self, s: ExportSettings) -> None:
        super().__init__(s)
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceResponse,
        )

        self._response = ExportMetricsServiceResponse
        u = urllib.parse.urlsplit(s.target)
        self._https = u.scheme == "https"
        self._host = u.hostname or "localhost"
        self._port = u.port or (443 if self._https else 80)
        self._path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self._ctx: ssl.SSLContext | None = None
        if self._https:
            self._ctx = ssl.create_default_context(cafile=s.certificate_path)
            if s.client_certificate_path:
                self._ctx.load_cert_chain(s.client_certificate_path, s.client_key_path)
        self._conn: http.client.HTTPConnection | None = None
        self._headers = {"Content-Type": "application/x-protobuf", "User-Agent": USER_AGENT,
                         **dict(s.headers)}
        if s.compression != "none":
            self._headers["Content-Encoding"] = s.compression

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                         context=self._ctx)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        self._conn.timeout = timeout
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn

    def _attempt(self, body: bytes, timeout: float) -> tuple[str | None, float | None]:
        if self.settings.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        elif self.settings.compression == "deflate":
            body = zlib.compress(body)
        try:
            conn = self._connection(timeout)
            conn.request("POST", self._path, body=body, headers=self._headers)
            resp = conn.getresponse()
            data = resp.read(1 << 20)
        except (OSError, http.client.HTTPException) as e:
            self._close()
            if isinstance(e, ssl.SSLError) and "CERTIFICATE" in str(e).upper():
                return f"TLS: {e}", None
            return f"{type(e).__name__}: {e}", 0.0  # refused, reset, timed out: transient
        if resp.getheader("Connection", "").lower() == "close":
            self._close()
        if 200 <= resp.status < 300:
            try:
                _partial(self._response.FromString(data), self.settings.target)
            except Exception:
                pass  # an empty or non-protobuf 200 body: accepted all the same
            return None, None
        msg = f"HTTP {resp.status} {data[:200].decode('utf-8', 'replace').strip()}".strip()
        if resp.status in _HTTP_RETRYABLE:
            return msg, _retry_after(resp.getheader("Retry-After"))
        return msg, None

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def shutdown(self) -> None:
        super().shutdown()
        self._close()


def _retry_after(v: str | None) -> float:
    if v and v.strip().isdigit():
        return min(float(v.strip()), MAX_BACKOFF_SECONDS * 4)
    return 0.0
