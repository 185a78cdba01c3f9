"""Our own exceptions, one per boundary; callers chain causes with `from e`."""


class OtelAgentError(Exception):
    """Base of everything we raise on purpose."""


class ConfigError(OtelAgentError):
    """A setting is invalid. The message names the setting and what is allowed (exit code 2)."""


class SourceError(OtelAgentError):
    """A whole source failed (BPF unavailable, API down). Reported loudly; the agent goes on."""


class ExportError(OtelAgentError):
    """An export failed after its retries."""


class ParseError(OtelAgentError):
    """A kernel file (cgroup stat file, mountinfo) did not have the shape we expect.

    The message names the file, the line and what was wrong. One cgroup's bad file is skipped
    and counted by the reader (DESIGN rule 5); it never fails the scrape.
    """


class CgroupMountError(SourceError):
    """No usable cgroup v2 hierarchy: the whole cgroup source is unavailable."""
