"""Attack (issues 12 and 13): an unexpected fault while storing must not lose billing data.

The cost processor answered INTERNAL to an unexpected exception, and the Collector's OTLP
exporter drops INTERNAL batches for good, even from a disk queue. It now answers UNAVAILABLE
(HTTP 503 + Retry-After), which every OTLP exporter retries. Here rotel, a real OTLP collector
whose exporter retries, forwards the SDK's export to the receiver while the store raises an
unexpected exception; once the fault clears, the batch is in the ledger, once."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import MetricExportResult

from otel_agent.cost.pricing import parse_pricing
from otel_agent.cost.receiver import Receiver
from otel_agent.cost.store import Store, points_t
from tests.e2e.cost.test_rotel import _metrics_data
from tests.support.cost_serve import export_body, grpc_export, http_export
from tests.support.pipeline import Rotel, rotel_binary
from tests.unit.cost import scenario
from tests.unit.cost.ledger_helpers import PRICING_YAML

pytestmark = pytest.mark.e2e


class Fault:
    """Makes `store.write` raise an unexpected exception (not StoreUnavailable) while on."""

    def __init__(self, store: Store) -> None:
        self.on = threading.Event()
        self.hits = 0
        real = store.write

        def write(batch, **kw):  # noqa: ANN001, ANN003
            if self.on.is_set():
                self.hits += 1
                raise RuntimeError("injected: an unexpected bug while storing")
            return real(batch, **kw)

        store.write = write  # type: ignore[method-assign]


def _points(store: Store) -> int:
    with store.engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(points_t)).scalar_one()


@pytest.fixture
def receiver(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/ledger.db", pricing=parse_pricing(PRICING_YAML, "p.yaml"))
    fault = Fault(store)
    r = Receiver(store, listen="127.0.0.1:0", http_listen="127.0.0.1:0").start()
    yield r, store, fault
    r.stop(0)
    store.close()


def test_a_fault_answers_unavailable_on_both_protocols(receiver):
    import grpc

    r, store, fault = receiver
    fault.on.set()
    with pytest.raises(grpc.RpcError) as e:
        grpc_export(r.port, export_body())
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=10)
    conn.request("POST", "/v1/metrics", body=export_body(),
                 headers={"Content-Type": "application/x-protobuf"})
    resp = conn.getresponse()
    assert resp.status == 503 and resp.getheader("Retry-After")
    conn.close()
    fault.on.clear()
    grpc_export(r.port, export_body())
    assert http_export(r.http_port, export_body("u2"))[0] == 200
    assert _points(store) == 2


def test_rotel_keeps_the_batch_across_a_fault(receiver, tmp_path):
    if rotel_binary() is None:
        pytest.skip("the rotel wheel (with its rotel-agent binary) is not installed")
    r, store, fault = receiver
    rotel = Rotel(tmp_path, exporter_port=r.port).start()
    try:
        now_s = int(time.time())
        t0 = (now_s - 4 * 3600) // 3600 * 3600 * 1_000_000_000
        items = scenario.items(t0=t0, duration_s=1800, step_s=60)
        fault.on.set()
        exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{rotel.port}", insecure=True, timeout=10)
        for b in scenario.per_export(items):
            assert exporter.export(_metrics_data(b)) == MetricExportResult.SUCCESS
        exporter.shutdown()
        deadline = time.monotonic() + 20
        while fault.hits < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fault.hits >= 3, rotel.log()  # rotel retried into the fault...
        assert _points(store) == 0
        fault.on.clear()  # ...and once it clears, delivers
        deadline = time.monotonic() + 60
        while _points(store) < len(items) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # nothing more arrives: no duplicate either (ingest is idempotent)
        assert _points(store) == len(items), rotel.log()
        print(f"\nrotel: {fault.hits} attempts answered UNAVAILABLE during the fault; all "
              f"{len(items)} points stored once it cleared")
    finally:
        rotel.stop()
