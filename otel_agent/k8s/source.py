"""The one small interface every metadata source implements.

The collection loop only needs to ask "which pod is this uid?" and "what node am I on?", and
the agent must keep exporting (with cgroup-path attributes) whatever the answer. Hiding the
Kubernetes informer, the static file and the cgroup-only fallback behind the same few
methods lets the agent, the demo and the tests swap one for another without a branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from otel_agent.model import NodeMeta, PodMeta, PodUid


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """Health of a metadata source, for `doctor`, logs and self-metrics.

    `detail` is one human line, e.g. "watching 12 pods on node x" or
    "API unreachable: connection refused; retrying in 8 s".
    """

    ok: bool
    detail: str


@runtime_checkable
class MetadataSource(Protocol):
    """Pod and node metadata for one node.

    `start()` never blocks long and never raises because the API is down; `stop()` is
    idempotent and returns quickly. `pod()` and `node()` are cheap, thread-safe lookups called
    from the collection thread; None means "not known (yet)", and the caller falls back to
    what the cgroup path says.
    """

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def pod(self, uid: PodUid) -> PodMeta | None: ...

    def node(self) -> NodeMeta | None: ...

    def status(self) -> SourceStatus: ...
