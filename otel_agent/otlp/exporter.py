"""Exporter set-up: the OpenTelemetry SDK's OTLP exporters, configured the way users of any
OTel component expect.

The SDK exporters read OTEL_EXPORTER_OTLP_* (endpoint, headers, compression, certificate,
timeout, insecure) themselves; we only pick the protocol and pass what the agent's own
configuration overrides. gRPC is the default; OTLP/HTTP (protobuf) is selectable.
"""

from __future__ import annotations

import logging

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

from otel_agent.config import AgentConfig

log = logging.getLogger(__name__)

# Big nodes produce requests over gRPC's default 4 MiB limit; the SDK splits by data points.
MAX_EXPORT_BATCH_POINTS = 8192


def make_exporter(cfg: AgentConfig) -> MetricExporter:
    if cfg.protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        endpoint = cfg.endpoint
        if endpoint is not None and not endpoint.rstrip("/").endswith("/v1/metrics"):
            # OTEL_EXPORTER_OTLP_ENDPOINT is a base URL for OTLP/HTTP; the signal path is appended.
            endpoint = endpoint.rstrip("/") + "/v1/metrics"
        return OTLPMetricExporter(endpoint=endpoint, timeout=cfg.export_timeout_seconds,
                                  max_export_batch_size=MAX_EXPORT_BATCH_POINTS)
    # timeout None: the SDK reads OTEL_EXPORTER_OTLP_TIMEOUT (seconds in the Python SDK).
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(
        endpoint=cfg.endpoint,
        insecure=cfg.insecure,
        timeout=cfg.export_timeout_seconds,
        max_export_batch_size=MAX_EXPORT_BATCH_POINTS,
    )


def export(exporter: MetricExporter, data: MetricsData) -> bool:
    """Export once; never raises. The SDK exporter retries transient codes itself, with capped
    backoff, until its timeout."""
    try:
        result = exporter.export(data)
    except Exception:  # the thread boundary: an exporter bug must not kill the loop
        log.exception("OTLP export raised")
        return False
    return result is MetricExportResult.SUCCESS
