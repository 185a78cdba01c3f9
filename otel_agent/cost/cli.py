"""`otel-agent cost ...`: run the cost processor, or hand over to the report CLI.

Why a long-running `serve` owns three loops: the OTLP receiver (acknowledges only committed
batches), a ledger refresher (rebuilds the node-hours new points touched, every few seconds,
so reports are current without the receiver waiting for it) and retention (hourly). With
`--cost-otlp-endpoint` a fourth pushes month-to-date cost back out as OTLP (cost/otlp_out.py),
so the Grafana that charts usage charts money too, without reading our ledger. User errors (bad
flags, pricing file, ledger URL) print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import signal
import sys
import threading
from datetime import datetime, timezone

from otel_agent.errors import ConfigError, OtelAgentError

log = logging.getLogger("otel_agent.cost")

REFRESH_PASS_HOURS = 500  # node-hours per pass: the loop beats between passes
RETENTION_EVERY_S = 3600


class RefreshLoop:
    """One turn every `interval_s`: rebuild the dirty node-hours in passes (beating between
    them, so a long backlog never looks like a dead loop), apply retention and pruning hourly,
    and report to the processor's health. Nothing one input does can stop it: the store
    quarantines a node-hour that fails; a database that is down is logged and retried next
    turn; anything else is caught here, at the loop's boundary, logged once per kind."""

    def __init__(self, store, interval_s: float, *, live_series=None,
                 clock=None, now=None):
        import time

        self.store = store
        self.health = store.health
        self.interval_s = interval_s
        self.health.loop_deadline_s = max(60.0, 10 * interval_s)
        self._live_series = live_series
        self._clock = clock or time.monotonic
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._last_retention: float | None = None
        self._logged: set[str] = set()
        self.health.beat()  # alive from its start; the first turn is one interval away

    def turn(self) -> None:
        import time

        self.health.beat()
        try:
            t0 = time.perf_counter()
            before = self.health.snapshot()["rebuild"]
            done = 0
            while True:
                n = self.store.refresh(max_hours=REFRESH_PASS_HOURS)
                done += n
                self.health.beat()
                if n < REFRESH_PASS_HOURS:
                    break
            if done:
                snap = self.health.snapshot()
                log.info("refresh: %d node-hours (%d series, %d points) in %.2f s; backlog %d, "
                         "quarantined %d", done, snap["rebuild"]["series"] - before["series"],
                         snap["rebuild"]["points"] - before["points"], time.perf_counter() - t0,
                         snap["backlog_node_hours"], snap["quarantined_node_hours"])
            if self._last_retention is None or self._clock() - self._last_retention >= RETENTION_EVERY_S:
                self.store.apply_retention(self._now())
                self._last_retention = self._clock()
            if self._live_series is not None:
                self.health.set_live_series(self._live_series())
        except OtelAgentError as e:  # the ledger is down (the store counted it): retry next turn
            log.warning("ledger refresh failed, will retry: %s", e)
        except Exception as e:  # noqa: BLE001 - the loop's boundary: never die of one input
            self.health.record_refresh_failure(e)
            kind = f"{type(e).__name__}: {e}"[:200]
            if kind not in self._logged:
                self._logged.add(kind)
                log.exception("ledger refresh failed (logged once), the loop goes on")
        self.health.beat()

DEFAULT_LEDGER = "sqlite:///ledger.db"
DEFAULT_REPORT_PORT = 9003  # OpenCost's


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="otel-agent cost", description="Cost processor: OTLP in, chargeback ledger out.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="receive OTLP metrics and keep the ledger")
    s.add_argument("--listen", default="0.0.0.0:4317", help="OTLP/gRPC HOST:PORT (default 0.0.0.0:4317)")
    s.add_argument("--otlp-http-listen", default=None, help="also accept OTLP/HTTP protobuf on HOST:PORT")
    s.add_argument("--no-otlp", action="store_true",
                   help="a report-only replica: no OTLP listener (needs --http-listen); it still "
                        "helps rebuild the ledger. Scales reads apart from writes on a shared "
                        "PostgreSQL ledger")
    s.add_argument("--ledger", default=DEFAULT_LEDGER, help="sqlite:///path/ledger.db or postgresql://...")
    s.add_argument("--pricing", default=None, help="pricing YAML (default: the shipped OpenCost defaults)")
    s.add_argument("--http-listen", default=None,
                   help=f"report HTTP API on HOST:PORT (OpenCost's port is {DEFAULT_REPORT_PORT})")
    s.add_argument("--auth-token-file", default=None,
                   help="ingest (write) token: the OTLP ports require 'authorization: Bearer "
                        "<token>'. Does not open the report API")
    s.add_argument("--read-token-file", default=None,
                   help="report API (read-only) token: /allocation, /report.html and /metrics "
                        "require it. With --http-listen, give both tokens or neither")
    s.add_argument("--tls-cert", default=None)
    s.add_argument("--tls-key", default=None)
    s.add_argument("--client-ca", default=None, help="require client certificates signed by this CA (mTLS)")
    s.add_argument("--max-message-bytes", type=int, default=16 * 1024 * 1024)
    s.add_argument("--max-series-per-namespace", type=int, default=50_000)
    s.add_argument("--refresh-seconds", type=float, default=5.0)
    s.add_argument("--retention-points-days", type=int, default=14)
    s.add_argument("--retention-hourly-days", type=int, default=90)
    s.add_argument("--retention-daily-days", type=int, default=800)
    s.add_argument("--retention-monthly-days", type=int, default=None, help="default: forever")
    s.add_argument("--http-max-connections", type=int, default=256,
                   help="per HTTP listener (OTLP/HTTP, report API); more are closed at once")
    s.add_argument("--cost-otlp-endpoint", default=None, metavar="URL",
                   help="also push month-to-date cost per tenant as OTLP/gRPC metrics to this "
                        "endpoint (host:port or http://host:port; https:// uses TLS)")
    s.add_argument("--cost-otlp-interval-seconds", type=float, default=60.0,
                   help="how often to push cost (default 60)")
    s.add_argument("--cost-otlp-by", default="namespace", metavar="KEY",
                   help="tenant attribute of the pushed cost: namespace, workload, pod, "
                        "label:<key>, ... (default namespace)")
    s.add_argument("--log-level", default="INFO")
    sub.add_parser("report", help="render allocations from the ledger (see its --help)", add_help=False)
    sub.add_parser("import-invoice", help="import a FOCUS cost export: the invoice's prices "
                   "replace the list rates (see its --help)", add_help=False)
    sub.add_parser("reconcile", help="invoice total = allocated + idle + overhead + shared + "
                   "unmatched, per billing period (see its --help)", add_help=False)
    return p


def main(argv: list[str]) -> int:
    if argv and argv[0] == "report":
        return _report(argv[1:])
    if argv and argv[0] in ("import-invoice", "reconcile"):
        from otel_agent.cost import invoice_cli

        return invoice_cli.main(argv[0], argv[1:])
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse has printed the usage error
        return int(e.code or 0)
    try:
        if args.cmd == "serve":
            return serve(args)
    except ConfigError as e:
        print(f"otel-agent cost: {e}", file=sys.stderr)
        return 2
    except OtelAgentError as e:
        print(f"otel-agent cost: {e}", file=sys.stderr)
        return 1
    return 2


def _report(argv: list[str]) -> int:
    if importlib.util.find_spec("otel_agent.cost.report_cli") is None:
        print("otel-agent cost: the report command is not installed in this build", file=sys.stderr)
        return 2
    return int(importlib.import_module("otel_agent.cost.report_cli").main(argv))


def _read_token(path: str | None, flag: str = "--auth-token-file") -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{flag} {path}: cannot read: {getattr(e, 'strerror', None) or e}") from e
    if not token:
        raise ConfigError(f"{flag} {path}: the file is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(f"{flag} {path}: the token has spaces or control characters")
    return token


# (flag, lowest, highest): every numeric flag of `serve`, checked before anything starts.
# Finite only: a NaN or 0 refresh interval spun a core; inf never refreshed.
RANGES = (
    ("--max-message-bytes", 1024, 256 * 1024 * 1024),
    ("--max-series-per-namespace", 1, 10_000_000),
    ("--refresh-seconds", 0.1, 3600),
    ("--retention-points-days", 1, 3660),
    ("--retention-hourly-days", 1, 3660),
    ("--retention-daily-days", 1, 36600),
    ("--retention-monthly-days", 1, 36600),
    ("--cost-otlp-interval-seconds", 0.1, 86400),
    ("--http-max-connections", 1, 65536),
)


def check_ranges(args: argparse.Namespace) -> None:
    import math

    for flag, lo, hi in RANGES:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is None:
            continue
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ConfigError(f"{flag} {value}: must be a number from {lo:g} to {hi:g}")


def check_listen(args: argparse.Namespace) -> None:
    """Every listen flag is HOST:PORT with a port 0-65535 (grpcio binds a random port for
    HOST:99999 instead of failing), and no two of them share a port."""
    import socket

    from otel_agent.cost.aioserver import parse_listen

    seen: dict[tuple[str, int], str] = {}
    flags = ("--listen", "--otlp-http-listen", "--http-listen")
    if getattr(args, "no_otlp", False):
        if not args.http_listen:
            raise ConfigError("--no-otlp serves reports only: it needs --http-listen")
        if args.otlp_http_listen:
            raise ConfigError("--no-otlp and --otlp-http-listen contradict each other")
        flags = ("--http-listen",)
    for flag in flags:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is None:
            continue
        host, port = parse_listen(value, flag)
        try:  # here, not in grpcio, whose failure is a C log line and a RuntimeError
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            raise ConfigError(f"{flag} {value}: cannot resolve host {host!r}: {e}") from None
        if port and (host, port) in seen:
            raise ConfigError(f"{flag} {value}: the same address as {seen[(host, port)]}")
        seen[(host, port)] = flag


def tokens(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(ingest token, read token). Fail closed: with a report API, either both tokens or
    neither (an open processor, said out loud by giving none); one alone would leave the other
    side silently open. The two must differ: the read token must not be able to write."""
    if getattr(args, "no_otlp", False) and args.auth_token_file:
        raise ConfigError("--auth-token-file is the OTLP ingest token: a --no-otlp replica "
                          "takes no OTLP, so it must not hold it")
    write = _read_token(args.auth_token_file, "--auth-token-file")
    read = _read_token(args.read_token_file, "--read-token-file")
    if getattr(args, "no_otlp", False):
        return None, read  # only the report API: its token, or none (open, said by omission)
    if read is not None and not args.http_listen:
        raise ConfigError("--read-token-file is the report API's token: it needs --http-listen")
    if args.http_listen and (write is None) != (read is None):
        given, missing = (("--auth-token-file", "--read-token-file") if read is None
                          else ("--read-token-file", "--auth-token-file"))
        raise ConfigError(f"{given} without {missing}: with --http-listen give both tokens (the "
                          f"ingest and the report API have separate credentials) or neither")
    if read is not None and read == write:
        raise ConfigError("--read-token-file and --auth-token-file hold the same token: the "
                          "read-only token must not be able to write")
    return write, read


def _pusher_args(args: argparse.Namespace) -> dict | None:
    """Validate the --cost-otlp-* flags up front (a user error, not a traceback later)."""
    endpoint = getattr(args, "cost_otlp_endpoint", None)
    if not endpoint:
        return None
    from otel_agent.cost.allocation import parse_aggregate
    from otel_agent.cost.errors import QueryError

    interval = args.cost_otlp_interval_seconds  # range-checked in check_ranges
    try:
        aggregate = parse_aggregate(args.cost_otlp_by)
    except QueryError as e:
        raise ConfigError(f"--cost-otlp-by: {e}") from e
    insecure = not endpoint.startswith("https://")
    hostport = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--cost-otlp-endpoint {endpoint!r}: expected host:port or "
                          f"http(s)://host:port")
    return {"endpoint": hostport, "insecure": insecure, "interval_s": float(interval),
            "aggregate": aggregate}


class _NoReceiver:
    """What `serve` needs of a receiver, for a report-only replica (--no-otlp)."""

    port = http_port = 0
    ingestor = None

    def stop(self, grace=None) -> None:  # noqa: ANN001
        pass


def serve(args: argparse.Namespace, *, ready: threading.Event | None = None,
          stop: threading.Event | None = None) -> int:
    from otel_agent.cost.aioserver import Limits
    from otel_agent.cost.pricing import default_pricing, load_pricing
    from otel_agent.cost.receiver import Receiver, Tls
    from otel_agent.cost.store import Retention, Store

    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_listen(args)
    check_ranges(args)
    pricing = load_pricing(args.pricing) if args.pricing else default_pricing()
    token, read_token = tokens(args)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        raise ConfigError("--client-ca needs --tls-cert and --tls-key")
    tls = Tls(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    retention = Retention(points_days=args.retention_points_days, hourly_days=args.retention_hourly_days,
                          daily_days=args.retention_daily_days, monthly_days=args.retention_monthly_days)
    pusher_args = _pusher_args(args)
    store = Store(args.ledger, pricing=pricing, retention=retention)
    limits = Limits(max_connections=args.http_max_connections)
    health = store.health
    if args.no_otlp:
        if args.ledger.startswith("sqlite:"):
            log.warning("--no-otlp on a SQLite ledger: another process must write it, and "
                        "SQLite is meant for one process")
        receiver = _NoReceiver()
    else:
        receiver = Receiver(store, listen=args.listen, http_listen=args.otlp_http_listen,
                            max_message_bytes=args.max_message_bytes,
                            max_series_per_namespace=args.max_series_per_namespace,
                            auth_token=token, tls=tls, http_limits=limits).start()
    api = None
    if args.http_listen:
        if importlib.util.find_spec("otel_agent.cost.http_api") is None:
            receiver.stop(0)
            raise ConfigError("--http-listen: the report HTTP API is not installed in this build")
        http_api = importlib.import_module("otel_agent.cost.http_api")
        try:
            api = http_api.serve(store, pricing, args.http_listen, read_token, health=health,
                                 limits=limits)
        except BaseException:
            receiver.stop(0)
            raise
    pusher = None
    if pusher_args is not None:
        from otel_agent.cost.otlp_out import start_pusher
        pusher = start_pusher(store, **pusher_args)
        log.info("pushing cost by %s as OTLP to %s every %g s", pusher_args["aggregate"],
                 pusher_args["endpoint"], pusher_args["interval_s"])
    stop = stop or threading.Event()

    def _on_signal(signum, _frame) -> None:  # noqa: ANN001
        log.info("signal %d: stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    log.info("cost processor: %s%s%s, ledger %s, pricing %s",
             f"OTLP/gRPC on port {receiver.port}" if receiver.port else "no OTLP (report-only)",
             f", OTLP/HTTP on port {receiver.http_port}" if receiver.http_port else "",
             f", report API on port {api.port}" if api is not None else "",
             args.ledger.split("@")[-1], pricing.source)
    if ready:
        ready.set()
    loop = RefreshLoop(store, args.refresh_seconds,
                       live_series=receiver.ingestor.live_series if receiver.ingestor else None)
    try:
        while not stop.wait(loop.interval_s):
            loop.turn()
    finally:
        receiver.stop()
        if pusher is not None:
            pusher.stop()
        if api is not None:
            api.stop()
        try:
            store.refresh()
        except Exception as e:  # noqa: BLE001 - marks stay dirty: the next start redoes them
            log.warning("final refresh failed (the next start redoes it): %s", e)
        store.close()
    return 0


if __name__ == "__main__":  # `python -m otel_agent.cost.cli serve ...` (tests run it this way)
    sys.exit(main(sys.argv[1:]))
