"""A minimal OTLP/gRPC metrics receiver that keeps what it is sent.

The demo points the agent at it to show what went over the wire, and the e2e tests assert on
it. It is a real gRPC MetricsService on a real socket, not a mock of the exporter. It can also
refuse exports on demand (UNAVAILABLE), to test what the agent does when the Collector is down.
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as ms_grpc

from otel_agent.otlp.flatten import Point, flatten_pb


class _Servicer(ms_grpc.MetricsServiceServicer):
    def __init__(self, sink: "OtlpSink") -> None:
        self._sink = sink

    def Export(self, request, context):  # noqa: N802 (gRPC's name)
        if self._sink.refuse:
            context.abort(grpc.StatusCode.UNAVAILABLE, "sink refusing exports (test)")
        with self._sink._lock:
            self._sink.requests.append(request)
            self._sink.metadata.append(dict(context.invocation_metadata()))
            self._sink._cond.notify_all()
        return ms_pb2.ExportMetricsServiceResponse()


class OtlpSink:
    def __init__(self, listen: str = "127.0.0.1:0") -> None:
        self.requests: list[ms_pb2.ExportMetricsServiceRequest] = []
        self.metadata: list[dict] = []
        self.refuse = False
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                   options=[("grpc.max_receive_message_length", 64 << 20)])
        ms_grpc.add_MetricsServiceServicer_to_server(_Servicer(self), self._server)
        self.port = self._server.add_insecure_port(listen)
        host = listen.rpartition(":")[0]
        self.endpoint = f"http://{host}:{self.port}"
        self._server.start()

    def wait_for(self, n: int, timeout_seconds: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= n, timeout_seconds)

    def points(self) -> list[Point]:
        with self._lock:
            reqs = list(self.requests)
        return [p for r in reqs for p in flatten_pb(r)]

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)

    def __enter__(self) -> "OtlpSink":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
