"""Our own exceptions, one per boundary; callers chain causes with `from e`."""


class OtelAgentError(Exception):
    """Base of everything we raise on purpose."""


class ConfigError(OtelAgentError):
    """A setting is invalid. The message names the setting and what is allowed (exit code 2)."""


class SourceError(OtelAgentError):
    """A whole source failed (BPF unavailable, API down). Reported loudly; the agent goes on."""


class ExportError(OtelAgentError):
    """An export failed after its retries."""
