"""A throwaway Prometheus (Debian's 2.42, from scripts/install-system.sh --dev) for tests.

It listens on 127.0.0.1 on a free port, keeps its TSDB under the test's tmp_path, scrapes
nothing, and takes remote write (`--web.enable-remote-write-receiver`: POST /api/v1/write,
snappy-compressed protobuf). Queries go through its HTTP API, so what a test checks is what
Grafana's Prometheus data source would get. Stopped by pid.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from tests.support.pipeline import free_port


class PrometheusError(AssertionError):
    pass


class Prometheus:
    def __init__(self, workdir: Path, *, binary: str = "prometheus") -> None:
        exe = shutil.which(binary)
        if exe is None:
            raise PrometheusError(f"{binary} not found: run scripts/install-system.sh --dev")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text("global:\n  evaluation_interval: 1m\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self._logf = self.log.open("wb")
        self.proc = subprocess.Popen(
            [exe, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--web.enable-remote-write-receiver", "--log.level=warn"],
            stdout=self._logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise PrometheusError("prometheus not ready after 30 s")

    def write(self, body: bytes, headers: Mapping[str, str]) -> None:
        req = urllib.request.Request(self.url + "/api/v1/write", data=body, method="POST",
                                     headers=dict(headers))
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                if r.status // 100 != 2:
                    raise PrometheusError(f"remote write: HTTP {r.status}")
        except urllib.error.HTTPError as e:
            raise PrometheusError(f"remote write: HTTP {e.code}: {e.read()[:500]!r}") from e

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                doc = json.load(r)
        except urllib.error.HTTPError as e:
            doc = json.loads(e.read() or b"{}")
            raise PrometheusError(f"{path} {params}: HTTP {e.code}: {doc.get('error', doc)}") from e
        if doc.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {doc}")
        return doc["data"]

    def query(self, expr: str, at: float) -> list[dict]:
        data = self.api("query", query=expr, time=f"{at:.3f}")
        if data["resultType"] not in ("vector", "matrix"):
            raise PrometheusError(f"{expr}: result type {data['resultType']}, not a vector")
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}",
                        step=f"{step:g}")["result"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._logf.close()
