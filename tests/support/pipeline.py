"""The whole path as real processes on loopback: agent → rotel → cost processor → ledger.

For tests that break one piece of the path (kill it, starve it, cut its API) and then compare
the ledger with the kernel's own numbers. Every process logs to a file under the test's
tmp_path (a pipe nobody reads would fill and stall it), is started on a port chosen here and
can be started again on the same port, and is stopped by pid, never by name.

Truth comes from the kernel (`cpu_usage_seconds`: a cgroup's own cpu.stat); the ledger side is
read from the hourly table with plain SQL after the cost processor has flushed it, so these
helpers share no code with what they check beyond the table's column names.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

ROOT = Path(__file__).resolve().parents[2]

# The README's pricing example, shared with the cost tests.
from tests.unit.cost.ledger_helpers import PRICING_YAML  # noqa: E402
# The pipeline's processes as the demo starts them: one definition (demo/processes.py).
from demo.processes import (ROTEL_ENV, cpu_usage_seconds, free_port, rotel_argv,  # noqa: E402,F401
                            rotel_binary)


def wait_port(port: int, timeout_seconds: float = 30.0, proc: subprocess.Popen | None = None) -> bool:
    """Poll until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def proc_status_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no {field}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds_of(pid: int) -> float:
    """utime + stime of a live process (from /proc/PID/stat), for CPU-cost figures."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Process:
    """A child process logging to a file; stop() / kill() by pid; idempotent."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else dict(os.environ)
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=ROOT)
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no clean-up, as the OOM killer or a node crash would."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self, timeout_seconds: float = 60.0) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not stop in time); returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def log(self, tail_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail_chars:]
        except FileNotFoundError:
            return ""


class Rotel(Process):
    """rotel (a Rust OpenTelemetry collector) receiving OTLP/gRPC, exporting OTLP/gRPC."""

    def __init__(self, tmp: Path, *, exporter_port: int, port: int | None = None) -> None:
        binary = rotel_binary()
        if binary is None:
            raise RuntimeError("the rotel wheel (with its rotel-agent binary) is not installed")
        self.port = port or free_port()
        http_port = free_port()
        self.http_port = http_port
        super().__init__(
            rotel_argv(binary, self.port, exporter_port, http_port=http_port, extra=(
                "--pid-file", str(tmp / "rotel.pid"), "--otlp-exporter-retry-initial-backoff",
                "200ms", "--otlp-exporter-retry-max-backoff", "1s")),
            tmp / "rotel.log", env={**os.environ, **ROTEL_ENV})

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Rotel:
        super().start()
        if not wait_port(self.port, 30, self.proc):
            raise RuntimeError(f"rotel did not listen on {self.port}: {self.log()}")
        return self


class CostProcessor(Process):
    """`otel-agent cost serve` on an SQLite ledger under `tmp` (or the ledger URL given), with
    any further `serve` flags."""

    def __init__(self, tmp: Path, *, port: int | None = None, ledger: str | None = None,
                 refresh_seconds: float = 1.0, args: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.db = tmp / "ledger.db"
        self.ledger = ledger or f"sqlite:///{self.db}"
        pricing = tmp / "pricing.yaml"
        pricing.write_text(PRICING_YAML)
        super().__init__(
            [sys.executable, "-m", "otel_agent.cost.cli", "serve", "--listen", f"127.0.0.1:{self.port}",
             "--ledger", self.ledger, "--pricing", str(pricing),
             "--refresh-seconds", str(refresh_seconds), *args],
            tmp / f"cost-{self.port}.log" if ledger or args else tmp / "cost.log")

    def start(self) -> CostProcessor:
        super().start()
        if not wait_port(self.port, 60, self.proc):
            raise RuntimeError(f"the cost processor did not listen on {self.port}: {self.log()}")
        return self

    def points(self) -> int:
        """Points stored so far (the receiver commits before it acknowledges)."""
        if not self.db.exists():
            return 0
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as c:
            try:
                return c.execute("SELECT count(*) FROM points").fetchone()[0]
            except sqlite3.OperationalError:
                return 0

    def wait_quiet(self, quiet_seconds: float = 3.0, timeout_seconds: float = 60.0) -> int:
        """Wait until no new point arrived for `quiet_seconds` (the path has drained)."""
        deadline = time.monotonic() + timeout_seconds
        n, since = self.points(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            m = self.points()
            if m != n:
                n, since = m, time.monotonic()
            elif time.monotonic() - since >= quiet_seconds:
                break
        return n


@dataclass
class PodBill:
    namespace: str
    pod: str
    cpu_seconds: float  # container rows + the pod-level remainder, summed over hours


def ledger_cpu(db: Path) -> tuple[dict[str, PodBill], float]:
    """Per pod uid: what the ledger bills in CPU seconds (and the namespace it bills it to);
    and the CPU seconds billed to __unallocated__. Read after the cost processor stopped (its
    final refresh rebuilt every hour it received points for)."""
    bills: dict[str, PodBill] = {}
    unallocated = 0.0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as c:
        rows = c.execute("SELECT kind, pod_uid, namespace, pod, usage_qty FROM ledger_hourly "
                         "WHERE resource = 'cpu'").fetchall()
    for kind, uid, ns, pod, qty in rows:
        if kind in ("container", "pod"):
            b = bills.setdefault(uid, PodBill(ns, pod, 0.0))
            b.cpu_seconds += qty * 3600
            if ns != b.namespace:  # latest metadata wins per pod: one namespace for all hours
                b.namespace = f"{b.namespace}|{ns}"
        elif kind == "unallocated":
            unallocated += qty * 3600
    return bills, unallocated


def ledger_container_cpu(db: Path) -> dict[tuple[str, str], float]:
    """Per (pod uid, container name): the CPU seconds the ledger bills to that container (its
    container rows, summed over hours). Read after the cost processor stopped."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as c:
        for uid, container, qty in c.execute("SELECT pod_uid, container, usage_qty FROM ledger_hourly "
                                             "WHERE resource = 'cpu' AND kind = 'container'"):
            out[(uid, container)] += qty * 3600
    return dict(out)


def ledger_counts(db: Path) -> dict[str, int]:
    """Stored points per metric name (for asserting which series made it)."""
    out: dict[str, int] = defaultdict(int)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as c:
        for metric, n in c.execute("SELECT s.metric, count(*) FROM points p JOIN series s "
                                   "ON p.series_id = s.series_id GROUP BY s.metric"):
            out[metric] = n
    return dict(out)


def write_kubeconfig(path: Path, server_url: str) -> Path:
    """A kubeconfig pointing at a plain-HTTP API server (the fake one), no credentials."""
    path.write_text(f"""\
apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server_url}
users:
- name: nobody
  user: {{}}
contexts:
- name: fake
  context: {{cluster: fake, user: nobody}}
current-context: fake
""")
    return path


def agent_process(tmp: Path, *, kubepods: str, endpoint: str, interval_ms: int = 1000,
                  metadata: Sequence[str] = (), bpf_profile: str = "off",
                  env_extra: Mapping[str, str] | None = None, log_name: str = "agent.log") -> Process:
    """`otel-agent run` on the synthetic node's kubepods, pushing OTLP/gRPC to `endpoint`."""
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true",
           "OTEL_METRIC_EXPORT_INTERVAL": str(interval_ms), "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
           "OTEL_RESOURCE_ATTRIBUTES": "k8s.cluster.name=faults", **(env_extra or {})}
    return Process([sys.executable, "-m", "otel_agent", "run", "--kubepods", kubepods,
                    "--health-listen", "off", "--node-name", "node-a", "--bpf-profile", bpf_profile,
                    *metadata], tmp / log_name, env=env)


def ledger_network_bytes(db: Path, direction_rows: str = "network:%") -> dict[str, float]:
    """Per pod uid: bytes sent that the ledger bills (every traffic class, container + pod rows)."""
    out: dict[str, float] = defaultdict(float)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as c:
        for uid, qty in c.execute("SELECT pod_uid, usage_qty FROM ledger_hourly WHERE resource LIKE ?",
                                  (direction_rows,)):
            out[uid] += qty
    return dict(out)


def series_starts(db: Path, pod_uid: str, metric_like: str) -> dict[int, int]:
    """start_ns → number of stored points, for one pod's series whose metric matches."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as c:
        return dict(c.execute(
            "SELECT p.start_ns, count(*) FROM points p JOIN series s ON p.series_id = s.series_id "
            "WHERE s.pod_uid = ? AND s.metric LIKE ? GROUP BY p.start_ns", (pod_uid, metric_like)).fetchall())


# --- BPF programs attached to a cgroup (what a killed agent may leave behind) -------------

_CGROUP_SKB_TYPES = (0, 1)  # BPF_CGROUP_INET_INGRESS, BPF_CGROUP_INET_EGRESS


def cgroup_prog_ids(cgroup: Path) -> set[int]:
    """Ids of the cgroup_skb programs attached to `cgroup` (libbpf's bpf_prog_query, both
    directions)."""
    import ctypes

    from otel_agent.ebpf.system import libbpf

    out: set[int] = set()
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for attach_type in _CGROUP_SKB_TYPES:
            ids = (ctypes.c_uint32 * 256)()
            count = ctypes.c_uint32(len(ids))
            flags = ctypes.c_uint32(0)
            res = libbpf().bpf_prog_query(fd, attach_type, 0, ctypes.byref(flags), ids, ctypes.byref(count))
            if res < 0:
                raise OSError(-res, f"bpf_prog_query on {cgroup}: {os.strerror(-res)}")
            out.update(ids[:count.value])
    finally:
        os.close(fd)
    return out


def prog_ids_held(pid: int) -> set[int]:
    """Ids of the BPF programs a process holds fds of (from /proc/PID/fdinfo)."""
    out: set[int] = set()
    for name in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{name}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                out.add(int(line.split()[1]))
    return out
