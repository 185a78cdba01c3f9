"""Attack: what a client without the token can make the cost processor do, and the tokens
themselves (issue 12), against a real `cost serve` process.

* gRPC: grpcio used to buffer every unauthenticated body whole (up to 16 MiB each) before
  the handler checked the token. An interceptor now refuses on the metadata, with a
  request-streaming handler that never asks for the message. Measured here: the server's peak
  RSS over 8 concurrent unauthenticated 16 MiB calls, against the same 8 calls with the token
  (whose bodies grpcio must assemble), and how long the refusal takes.
* The bearer scheme is case-insensitive on every port (RFC 7235).
* Two tokens: the ingest token opens the OTLP ports only, the read token the report API only.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from tests.support.cost_serve import Served, api_get, export_body, grpc_export, http_export

pytestmark = pytest.mark.e2e
MIB = 1024 * 1024
WRITE, READ = "w-3f9c2a", "r-81d7e0"


@pytest.fixture
def served(tmp_path):
    (tmp_path / "write").write_text(WRITE + "\n")
    (tmp_path / "read").write_text(READ + "\n")
    s = Served(tmp_path, "--auth-token-file", str(tmp_path / "write"),
               "--read-token-file", str(tmp_path / "read")).start()
    yield s
    s.stop()


def _hwm_kib(served: Served) -> int:
    from tests.support.pipeline import proc_status_kib

    return proc_status_kib(served.pid, "VmHWM")


def _flood(port: int, n: int, token: str | None) -> tuple[list, float]:
    """n concurrent 16 MiB (minus a little) Export calls; their status codes and the slowest."""
    body = b"\x00" * (16 * MIB - 64 * 1024)  # not protobuf: INVALID_ARGUMENT once read
    codes: list = []
    slowest = [0.0]

    def one() -> None:
        t0 = time.monotonic()
        try:
            grpc_export(port, body, token=token, timeout=60)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
        slowest[0] = max(slowest[0], time.monotonic() - t0)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return codes, slowest[0]


def test_unauthenticated_16_mib_bodies_are_not_assembled(served):
    time.sleep(1.0)
    base = _hwm_kib(served)
    codes, slow_denied = _flood(served.grpc_port, 8, None)
    denied = _hwm_kib(served)
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 8
    codes, slow_read = _flood(served.grpc_port, 8, WRITE)
    read = _hwm_kib(served)
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 8
    print(f"\npeak RSS {base / 1024:.0f} MiB; after 8 unauthenticated 16 MiB calls "
          f"+{(denied - base) / 1024:.1f} MiB (slowest refusal {slow_denied:.2f} s); after 8 "
          f"authenticated ones +{(read - denied) / 1024:.1f} MiB more (slowest {slow_read:.2f} s)")
    # grpcio assembled the authenticated bodies (>= 16 MiB of peak RSS at the least); all 8
    # refused ones together cost less than half of one body (+166 MiB before the interceptor).
    assert read - denied > 16 * 1024
    assert denied - base < 8 * 1024
    # and ingest with the token still works
    grpc_export(served.grpc_port, export_body(), token=WRITE)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive_on_every_port(served, scheme):
    grpc_export(served.grpc_port, export_body("g-" + scheme), token=WRITE, scheme=scheme)
    assert http_export(served.http_port, export_body("h-" + scheme), token=WRITE, scheme=scheme)[0] == 200
    assert api_get(served.api_port, "/allocation?window=today", token=READ, scheme=scheme)[0] == 200


def test_read_and_write_tokens_open_only_their_own_doors(served):
    body = export_body()
    with pytest.raises(grpc.RpcError) as e:
        grpc_export(served.grpc_port, body, token=READ)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert http_export(served.http_port, body, token=READ)[0] == 401
    assert http_export(served.http_port, body)[0] == 401
    for path in ("/allocation?window=today", "/allocation/compute?window=today",
                 "/report.html?window=today", "/metrics"):
        status, headers, _ = api_get(served.api_port, path, token=WRITE)
        assert status == 401 and "Bearer" in headers["WWW-Authenticate"], path
        assert api_get(served.api_port, path)[0] == 401, path
        assert api_get(served.api_port, path, token=READ)[0] == 200, path
    # probes carry no token
    assert api_get(served.api_port, "/healthz")[0] == 200
    status, _, body = api_get(served.api_port, "/readyz")
    assert status == 200 and b'"ready": true' in body
    # /metrics: Prometheus text with the processor's health and the API's own counters
    status, headers, text = api_get(served.api_port, "/metrics", token=READ)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"otel_agent_cost_ready 1" in text and b"otel_agent_cost_api_busy_total 0" in text
