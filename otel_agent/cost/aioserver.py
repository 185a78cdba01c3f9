"""The cost processor's HTTP servers (OTLP/HTTP ingest, the report API) on aiohttp.

Why aiohttp and not the stdlib `http.server` we had: a thread per connection with no socket
timeouts let 250 half-sent requests hold 250 threads and descriptors and pin a core, and with
TLS the handshake ran inside `accept()`, so one idle TCP connection stopped every other export.
aiohttp is a maintained asyncio server (one event loop thread, no thread per connection), and
asyncio gives us what we need to bound every client:

  * TLS handshakes run in the event loop, off the accept path, each with
    `ssl_handshake_timeout`; an idle TLS client costs one socket until that timeout, no thread.
  * Headers: aiohttp's keep-alive timer starts when a connection is made and only closes a
    connection whose handler is idle, i.e. waiting for the next request's headers, so
    `header_timeout_seconds` bounds both the request line + headers of a request and the
    idle time between requests. Header lines and their count are bounded by the parser.
  * Bodies are read by the handlers, after authentication and after checking the declared
    length, under `body_timeout_seconds` for the whole body.
  * Connections are counted (TLS handshakes in progress included) and refused past
    `max_connections`.
  * `handler_cancellation`: a handler is cancelled when its client goes away, so a report
    query learns it and stops (`Gate.run` passes the cancellation to the worker thread).

uvicorn + starlette were the other candidate; uvicorn has no header-read timeout (a
half-sent request waits forever) and starlette learns of a disconnect only by polling.
Blocking work (the ledger, SQLAlchemy) never runs on the loop: `Gate` runs it in a small
thread pool with a bounded queue and answers "busy" at once past it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web

from otel_agent.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tls:
    cert_file: str
    key_file: str
    client_ca_file: str | None = None  # set: clients must present a certificate signed by it


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost a server. The defaults hold for both of ours."""

    max_connections: int = 256
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    tls_handshake_timeout_seconds: float = 10.0
    max_header_line_bytes: int = 8190
    max_headers: int = 64


def parse_listen(listen: str, flag: str = "listen address", default_port: int | None = None
                 ) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` → (host, port); a ConfigError naming `flag` otherwise.
    Port 0 picks a free port (tests, the demo); 65535 is the largest there is."""
    text = (listen or "").strip()
    if text.startswith("["):  # [::1]:9003
        host, _, port = text[1:].partition("]")
        port = port[1:] if port.startswith(":") else ("" if not port else "?")
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1:  # a bare IPv6 address without brackets is ambiguous
        host, port = "", "?"
    else:
        host, port = text, ""
    if not port and default_port is not None:
        port = str(default_port)
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{flag} {listen!r}: expected HOST:PORT with a port 0-65535, "
                          f"like 127.0.0.1:9003 or [::1]:9003")
    return host, int(port)


def server_ssl_context(tls: Tls) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file:
            ctx.load_verify_locations(tls.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"--tls-cert/--tls-key/--client-ca: cannot load: {e}") from e
    return ctx


def bind(host: str, port: int, flag: str, listen: str) -> socket.socket:
    """A listening socket now, so a bad address is a ConfigError naming the flag and the
    real port is known before the server thread starts."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"{flag} {listen!r}: cannot resolve host {host!r}: {e}") from e
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(512)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ConfigError(f"{flag} {listen!r}: cannot listen there: {e.strerror or e}") from e
    return sock


class _ClientErrors(logging.LoggerAdapter):
    """aiohttp logs every malformed request as an ERROR with a traceback: under attack that
    is a log flood. Those are the client's errors: one debug line each."""

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("exc_info", None)
        self.logger.debug("%s (client error)", msg)

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.exception(msg)


class _Counted(asyncio.Protocol):
    """Forwards to aiohttp's protocol and keeps the server's count of open connections."""

    __slots__ = ("_inner", "_owner", "_counted", "_made")

    def __init__(self, inner: asyncio.Protocol, owner: "HttpServer") -> None:
        self._inner, self._owner = inner, owner
        self._counted, self._made = True, False

    def release(self) -> None:
        if self._counted:
            self._counted = False
            self._owner.open_connections -= 1

    def expire(self) -> None:
        # asyncio never tells the application protocol of a TLS handshake that failed or
        # timed out: it was never "made". Stop counting it once the handshake limit is past.
        if not self._made:
            self.release()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._made = True
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class HttpServer:
    """An aiohttp application on its own event loop thread. `.port`, `.url`, `.stop()`."""

    def __init__(self, app: web.Application, listen: str, *, flag: str, name: str,
                 limits: Limits = Limits(), tls: Tls | None = None,
                 default_port: int | None = None) -> None:
        self.limits = limits
        self.name = name
        host, port = parse_listen(listen, flag, default_port)
        self._ssl = server_ssl_context(tls) if tls else None
        self._sock = bind(host, port, flag, listen)
        self.host, self.port = host, self._sock.getsockname()[1]
        self.open_connections = 0
        self.refused_connections = 0
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._stopped = False
        self._lock = threading.Lock()
        started: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(started,), name=name, daemon=True)
        self._thread.start()
        started.result(timeout=30)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._ssl else 'http'}://{host}:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _run(self, started: Future) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as e:  # noqa: BLE001 - handed to the constructor's thread
            started.set_exception(e)
            return
        started.set_result(None)
        self._loop.run_forever()
        self._loop.run_until_complete(self._shutdown())
        self._loop.close()

    async def _start(self) -> None:
        lim = self.limits
        self._runner = web.AppRunner(
            self._app, handle_signals=False, access_log=None, handler_cancellation=True,
            logger=_ClientErrors(log, {}),
            keepalive_timeout=lim.header_timeout_seconds, lingering_time=0,
            max_line_size=lim.max_header_line_bytes, max_field_size=lim.max_header_line_bytes,
            max_headers=lim.max_headers,
            # aiohttp would inflate gzip bodies itself, without a limit: the handlers do it,
            # bounded by the message size (a 16 KB gzip bomb is 16 MB of zeros).
            auto_decompress=False)
        await self._runner.setup()
        aio = self._runner.server
        assert aio is not None

        def factory() -> asyncio.Protocol:
            if self.open_connections >= lim.max_connections:
                self.refused_connections += 1
                return _Refuse()
            self.open_connections += 1
            p = _Counted(aio(), self)
            if self._ssl is not None:
                self._loop.call_later(lim.tls_handshake_timeout_seconds + 1.0, p.expire)
            return p

        kw: dict[str, Any] = {}
        if self._ssl is not None:
            kw = {"ssl": self._ssl, "ssl_handshake_timeout": lim.tls_handshake_timeout_seconds,
                  "ssl_shutdown_timeout": 5.0}
        self._server = await self._loop.create_server(factory, sock=self._sock, **kw)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=15)
        try:
            self._sock.close()
        except OSError:
            pass


class Busy(Exception):
    """The gate is full: answer 503 with Retry-After at once, queue nothing."""


class Gate:
    """Blocking work off the event loop: at most `running` jobs at once in threads, at most
    `waiting` more queued behind them; past that `Busy` at once. A job's slot is freed when
    its thread is done, not when its client gives up, so the count is the CPU really in use.

    `run(fn)` calls `fn(stop)`; `stop` is a threading.Event set when the awaiting handler is
    cancelled (its client went away), for `fn` to check between units of work."""

    def __init__(self, name: str, *, running: int, waiting: int) -> None:
        self.running, self.waiting = running, waiting
        self.in_use = 0
        self.rejected = 0
        self.cancelled = 0
        self._pool = ThreadPoolExecutor(max_workers=running, thread_name_prefix=name)

    async def run(self, fn: Callable[[threading.Event], Any]) -> Any:
        if self.in_use >= self.running + self.waiting:
            self.rejected += 1
            raise Busy(f"{self.in_use} requests in progress")
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        self.in_use += 1
        fut = loop.run_in_executor(self._pool, fn, stop)

        def _done(_f: asyncio.Future) -> None:
            self.in_use -= 1

        fut.add_done_callback(_done)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            stop.set()
            self.cancelled += 1
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

