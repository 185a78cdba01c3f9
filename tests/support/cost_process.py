"""Talking to a real `otel-agent cost serve` (tests/support/pipeline.CostProcessor) in the
attack tests: OTLP/gRPC exports on loopback, waiting until its ledger has settled, and reading
the ledger (SQLite or PostgreSQL) it keeps."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import grpc
import sqlalchemy as sa
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from otel_agent.cost.receiver import SERVICE
from tests.support.pipeline import CostProcessor

H = 3600 * 1_000_000_000


class Serving:
    """A started processor and an OTLP/gRPC client for it."""

    def __init__(self, proc: CostProcessor):
        self.proc = proc
        self.ledger = proc.ledger
        self._channel = grpc.insecure_channel(f"127.0.0.1:{proc.port}")
        self._call = self._channel.unary_unary(
            f"/{SERVICE}/Export", request_serializer=None,
            response_deserializer=ExportMetricsServiceResponse.FromString)
        grpc.channel_ready_future(self._channel).result(timeout=60)

    def export(self, req) -> ExportMetricsServiceResponse:
        """One OTLP export; raises grpc.RpcError on a non-OK status."""
        return self._call(req.SerializeToString(), timeout=60)

    def alive(self) -> bool:
        return self.proc.alive()

    def log(self) -> str:
        return self.proc.log(tail_chars=200_000)

    def settle(self, timeout_s: float = 60.0) -> None:
        """Wait until every dirty node-hour is rebuilt or quarantined, and one more turn."""
        q = ("SELECT count(*) FROM dirty_hours d LEFT JOIN quarantine q "
             "ON q.node_key = d.node_key AND q.hour = d.hour "
             "WHERE q.node_key IS NULL OR q.version != d.version")
        deadline = time.monotonic() + timeout_s
        while query(self.ledger, q)[0][0]:
            assert self.alive(), self.log()[-3000:]
            assert time.monotonic() < deadline, "the ledger did not settle"
            time.sleep(0.1)
        time.sleep(1.0)  # a refresh turn after it: its log line and health are written


@contextmanager
def serving(tmp: Path, ledger: str | None = None, args: Sequence[str] = ()) -> Iterator[Serving]:
    """`cost serve` for the duration; on the way out it must stop on SIGTERM with exit code 0
    and no traceback in its log, whatever the test sent it."""
    proc = CostProcessor(tmp, ledger=ledger, refresh_seconds=0.3, args=args).start()
    s = None
    try:
        s = Serving(proc)
        yield s
    finally:
        if s is not None:
            s._channel.close()
        rc = proc.stop()
        log = proc.log(tail_chars=200_000)
    assert rc == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def _engine(url: str):
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return sa.create_engine(url)


def query(url: str, sql: str, **params) -> list:
    engine = _engine(url)
    try:
        with engine.connect() as c:
            return c.execute(sa.text(sql), params).all()
    finally:
        engine.dispose()


def core_hours(url: str, **where: str) -> float:
    """CPU core-hours in the hourly ledger whose columns equal `where` (kind, namespace, ...)."""
    cond = " AND ".join(f"{k} = :{k}" for k in where)
    rows = query(url, "SELECT coalesce(sum(usage_qty), 0) FROM ledger_hourly WHERE resource = 'cpu'"
                 + (f" AND {cond}" if cond else ""), **where)
    return float(rows[0][0])


def now_hour_ns() -> int:
    """The start of the current UTC hour (tests place their points before the present)."""
    return time.time_ns() // H * H


def node_export(t: int, *, node: str = "n1", boot: int, cores: float = 4.0,
                pods: Sequence[tuple[str, str, float, int]] = ()):
    """What the agent sends for `node` at `t`: its CPU counter since `boot`, its capacity, and
    per pod (uid, namespace, cores, created) a container CPU counter (start = boot, as cgroup
    files give it) holding cores × the time since the pod was created."""
    from tests.unit.cost.builders import S, Res, container_attrs, node_attrs, request

    used = sum(c * max(0, t - created) / S for _u, _ns, c, created in pods)
    res = [Res(node_attrs(node))
           .sum("k8s.node.cpu.time", [(boot, t, used + 0.25 * (t - boot) / S)], unit="s")
           .gauge("otel_agent.node.cpu.capacity", [(t, cores)])
           .gauge("k8s.node.cpu.allocatable", [(t, cores - 0.5)])]
    for uid, ns, c, created in pods:
        if t >= created:
            res.append(Res(container_attrs(uid, "app", node=node, namespace=ns)).sum(
                "container.cpu.time", [(boot, t, c * (t - created) / S)], unit="s"))
    return request(*res)
