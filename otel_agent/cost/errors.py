"""The cost processor's own exceptions, one per boundary it has.

They subclass the project's base classes (otel_agent.errors) so the CLI's one rule holds:
a `ConfigError` is the user's to fix (exit 2, no traceback); anything else is ours.
"""

from __future__ import annotations

from otel_agent.errors import ConfigError, OtelAgentError


class PricingError(ConfigError):
    """The pricing file is invalid. The message names the file, the line and the field."""


class LedgerUrlError(ConfigError):
    """The ledger URL is not sqlite:///... or postgresql://..., or its database is unreachable."""


class StoreUnavailable(OtelAgentError):
    """The ledger cannot write right now (disk full, database down, locked).

    The receiver answers a retryable status and acknowledges nothing: the client keeps the
    batch and sends it again.
    """


class QueryError(ConfigError):
    """An allocation query is malformed (unknown aggregate, bad filter)."""


class QueryCancelled(OtelAgentError):
    """A report query stopped on request (`should_stop`): its client went away."""
