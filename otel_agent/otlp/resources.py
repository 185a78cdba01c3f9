"""Resource attributes for the kinds of OTLP resource we export: container, pod, node, and
the node's `pods` system container (kubelet's name for the kubepods cgroup, semconv's
`k8s.node.system_container` entity).

Pure functions of a CgroupRef and the metadata we hold for it. When the metadata source does
not know a pod (API down, pod gone before we saw it) the resource still carries what the
cgroup path says, `k8s.pod.uid` and `container.id`, so the data is attributable later
(the cost processor joins late metadata on the pod uid).
"""

from __future__ import annotations

from typing import Mapping

from otel_agent.model import CgroupRef, NodeMeta, PodMeta, Scope

# Node labels that have a semantic-convention attribute of their own.
_NODE_LABEL_ATTRS = {
    "topology.kubernetes.io/zone": "cloud.availability_zone",
    "topology.kubernetes.io/region": "cloud.region",
}
# Node labels the cost processor prices by; exported as k8s.node.label.<key>.
NODE_LABELS = (
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "karpenter.sh/capacity-type",
    "eks.amazonaws.com/capacityType",
    "cloud.google.com/gke-spot",
    "kubernetes.azure.com/scalesetpriority",
)
CGROUP_ID_ATTR = "otel_agent.cgroup.id"
# The node's spec.providerID, verbatim. Semconv has no attribute for it (host.id is the bare
# instance id, and GKE's providerID names the instance, not its numeric id), so it is ours: the
# cost processor matches cloud invoice lines to nodes by it (otel_agent/cost/invoice.py).
PROVIDER_ID_ATTR = "otel_agent.k8s.node.provider_id"
# The kubepods cgroup is the kubelet's "pods" system container (its stats summary names it so).
SYSTEM_CONTAINER_ATTR = "k8s.node.system_container.name"
KUBEPODS_SYSTEM_CONTAINER = "pods"


def node_attributes(node_name: str | None, node: NodeMeta | None) -> dict[str, str]:
    attrs: dict[str, str] = {}
    name = node.name if node else node_name
    if name:
        attrs["k8s.node.name"] = name
    if node is not None:
        if node.uid:
            attrs["k8s.node.uid"] = node.uid
        if node.provider_id:
            attrs[PROVIDER_ID_ATTR] = node.provider_id
        for label in NODE_LABELS:
            value = node.labels.get(label)
            if value is not None:
                attrs[f"k8s.node.label.{label}"] = value
                if label in _NODE_LABEL_ATTRS:
                    attrs[_NODE_LABEL_ATTRS[label]] = value
    return attrs


def pod_attributes(ref: CgroupRef, pod: PodMeta | None, node_name: str | None) -> dict[str, str]:
    attrs: dict[str, str] = {}
    if pod is not None:
        attrs["k8s.namespace.name"] = pod.namespace
        attrs["k8s.pod.name"] = pod.name
        attrs["k8s.pod.uid"] = pod.uid
        attrs.update(pod.workload)
        for key, value in pod.labels.items():
            attrs[f"k8s.pod.label.{key}"] = value
        node_name = pod.node_name or node_name
    elif ref.pod_uid:
        attrs["k8s.pod.uid"] = ref.pod_uid
    if node_name:
        attrs["k8s.node.name"] = node_name
    if ref.qos is not None:
        attrs["otel_agent.pod.qos_class"] = ref.qos.value
    return attrs


def resource_attributes(
    ref: CgroupRef,
    pod: PodMeta | None,
    node: NodeMeta | None,
    *,
    node_name: str | None,
    extra: Mapping[str, str] = {},
) -> dict[str, str]:
    """All attributes of the resource `ref` belongs to.

    `extra` (OTEL_RESOURCE_ATTRIBUTES, e.g. k8s.cluster.name) goes on every resource, but
    never overrides what we measured.
    """
    if ref.scope is Scope.NODE:
        attrs = node_attributes(node_name, node)
    elif ref.scope is Scope.KUBEPODS:
        attrs = node_attributes(node_name, node)
        attrs[SYSTEM_CONTAINER_ATTR] = KUBEPODS_SYSTEM_CONTAINER
    else:
        attrs = pod_attributes(ref, pod, node_name)
        if ref.scope is Scope.CONTAINER:
            meta = pod.container_by_id(ref.container_id) if pod and ref.container_id else None
            if meta is not None:
                attrs["k8s.container.name"] = meta.name
            if ref.container_id:
                attrs["container.id"] = ref.container_id
            if ref.runtime:
                attrs["container.runtime.name"] = ref.runtime
        # The cgroup id tells a re-created cgroup (counters from zero) from the old one, so a
        # consumer never sees a counter go backwards inside one series.
        attrs[CGROUP_ID_ATTR] = str(ref.cgroup_id)
    return {**extra, **attrs}
