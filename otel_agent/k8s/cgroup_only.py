"""The source of last resort: no metadata beyond what the cgroup path says.

Without API access or a static file the agent still bills every cgroup; resources then carry
the pod uid and container id parsed from the cgroup path (and the node name if NODE_NAME is
set), which a later join in the backend can enrich. Having this as a real source keeps the
agent free of "no metadata" special cases.
"""

from __future__ import annotations

from otel_agent.k8s.source import SourceStatus
from otel_agent.model import NodeMeta, PodMeta, PodUid


class CgroupOnlySource:
    name = "cgroup"

    def __init__(self, node_name: str | None = None) -> None:
        self._node = NodeMeta(name=node_name) if node_name else None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def pod(self, uid: PodUid) -> PodMeta | None:
        return None

    def node(self) -> NodeMeta | None:
        return self._node

    def status(self) -> SourceStatus:
        return SourceStatus(True, "no pod metadata: attributes come from cgroup paths only")
