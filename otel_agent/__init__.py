"""otel-agent: kernel-exact Kubernetes resource accounting and chargeback."""

__version__ = "0.1.0"
