"""Kubernetes API objects → PodMeta / NodeMeta, as pure functions.

The informer, the tests and anything else holding a `V1Pod`/`V1Node` (or the same object as
the API's plain JSON dict) share this one conversion, so what a pod "is" to the agent is
decided in one place and tested on fixture objects without a cluster (DESIGN rule 4).

The agent's RBAC is get/list/watch on pods and get on nodes, nothing more: the owning
workload is therefore derived from the pod alone, by two documented heuristics:

* ReplicaSet → Deployment: the Deployment controller names a ReplicaSet
  `<deployment>-<pod-template-hash>` and labels its pods `pod-template-hash=<hash>`. When
  the ReplicaSet name ends in `-<that label's value>`, the prefix is the Deployment. A
  ReplicaSet without the label (created by hand) is reported as a ReplicaSet only.
* Job → CronJob: the CronJob controller names a Job `<cronjob>-<scheduled time in minutes
  since the epoch>`. That number has had 8 digits since 1989 and keeps 8 until ~2160, so a
  Job named `<prefix>-<8 or more digits>` is taken to belong to CronJob `<prefix>`. A Job
  created by hand with such a name would be misattributed; one named `migrate-2` is not.
"""

from __future__ import annotations

import json
import re
from decimal import InvalidOperation
from typing import Any, Iterable, Mapping

import kubernetes.client
from kubernetes.utils import parse_quantity

from otel_agent.model import ContainerId, ContainerMeta, NodeMeta, PodMeta, PodUid, QosClass

#: Node labels kept by default: what pricing needs (instance type, zone/region, capacity type
#: of the major clouds and Karpenter) and what a report groups by (architecture).
NODE_LABELS: tuple[str, ...] = (
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/region",
    "karpenter.sh/capacity-type",
    "eks.amazonaws.com/capacityType",
    "cloud.google.com/gke-spot",
    "cloud.google.com/gke-preemptible",
    "kubernetes.azure.com/scalesetpriority",
    "node.kubernetes.io/lifecycle",
    "kubernetes.io/arch",
)

#: Owner kinds → the semantic-convention attribute naming them.
WORKLOAD_ATTRIBUTES: Mapping[str, str] = {
    "Deployment": "k8s.deployment.name",
    "ReplicaSet": "k8s.replicaset.name",
    "StatefulSet": "k8s.statefulset.name",
    "DaemonSet": "k8s.daemonset.name",
    "Job": "k8s.job.name",
    "CronJob": "k8s.cronjob.name",
}

RUNTIME_PREFIXES: tuple[str, ...] = ("containerd://", "cri-o://", "docker://")

_CRONJOB_JOB_NAME = re.compile(r"^(?P<cronjob>.+)-(?P<minutes>\d{8,})$")

# Deserializing a dict into the client's models is pure (no request is made); one shared
# instance avoids building a connection pool per call.
_DESERIALIZER = kubernetes.client.ApiClient()


def _as_model(obj: Any, klass: str) -> Any:
    if isinstance(obj, Mapping):
        return _DESERIALIZER.deserialize(json.dumps(obj), klass, "application/json")
    return obj


def strip_runtime_prefix(container_id: str | None) -> ContainerId | None:
    """`containerd://4f1e…` → `4f1e…` (the id as it appears in the cgroup name)."""
    if not container_id:
        return None
    for prefix in RUNTIME_PREFIXES:
        if container_id.startswith(prefix):
            return ContainerId(container_id[len(prefix):])
    if "://" in container_id:  # another runtime: still drop the scheme
        return ContainerId(container_id.split("://", 1)[1])
    return ContainerId(container_id)


def quantity_cores(value: Any) -> float | None:
    """A CPU quantity ("500m", "2", 1.5) in cores; None when absent. Raises ValueError if malformed."""
    if value is None:
        return None
    return float(parse_quantity(value))


def quantity_bytes(value: Any) -> int | None:
    """A memory quantity ("256Mi", "1G", "129e6") in bytes, rounded up; None when absent."""
    if value is None:
        return None
    q = parse_quantity(value)
    return int(q.to_integral_value(rounding="ROUND_CEILING"))


def is_quantity(value: Any) -> bool:
    try:
        parse_quantity(value)
    except (ValueError, InvalidOperation, TypeError):
        return False
    return True


def select_labels(labels: Mapping[str, str] | None, keep: Iterable[str]) -> dict[str, str]:
    """Keep only the configured keys; `*` keeps all."""
    labels = labels or {}
    keep = tuple(keep)
    if "*" in keep:
        return dict(labels)
    return {k: labels[k] for k in keep if k in labels}


def workload_attributes(owner_kind: str | None, owner_name: str | None, pod_labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """The owning workload as semantic-convention attributes, via the heuristics above."""
    if not owner_kind or not owner_name:
        return {}
    attr = WORKLOAD_ATTRIBUTES.get(owner_kind)
    if attr is None:
        return {}
    out = {attr: owner_name}
    if owner_kind == "ReplicaSet":
        template_hash = (pod_labels or {}).get("pod-template-hash")
        suffix = f"-{template_hash}"
        if template_hash and owner_name.endswith(suffix) and len(owner_name) > len(suffix):
            out["k8s.deployment.name"] = owner_name[: -len(suffix)]
    elif owner_kind == "Job":
        m = _CRONJOB_JOB_NAME.match(owner_name)
        if m:
            out["k8s.cronjob.name"] = m.group("cronjob")
    return out


def _controller(owner_references: Any) -> tuple[str | None, str | None]:
    refs = list(owner_references or ())
    if not refs:
        return None, None
    chosen = next((r for r in refs if getattr(r, "controller", False)), refs[0])
    return chosen.kind, chosen.name


def _container_meta(container: Any, container_id: ContainerId | None) -> ContainerMeta:
    resources = container.resources
    requests = (resources.requests if resources else None) or {}
    limits = (resources.limits if resources else None) or {}
    return ContainerMeta(
        name=container.name,
        container_id=container_id,
        cpu_request_cores=quantity_cores(requests.get("cpu")),
        cpu_limit_cores=quantity_cores(limits.get("cpu")),
        memory_request_bytes=quantity_bytes(requests.get("memory")),
        memory_limit_bytes=quantity_bytes(limits.get("memory")),
    )


def _qos(value: str | None) -> QosClass | None:
    try:
        return QosClass(value) if value else None
    except ValueError:
        return None


def pod_meta(pod: kubernetes.client.V1Pod | Mapping[str, Any], *, labels: Iterable[str] = ()) -> PodMeta:
    """One pod as the agent sees it. `labels`: pod label keys to keep (`*` = all).

    Container ids come from status (init and ephemeral containers too), without the runtime
    prefix; a container not started yet has no id. Requests/limits are in cores and bytes.
    """
    pod = _as_model(pod, "V1Pod")
    meta = pod.metadata
    spec = pod.spec
    status = pod.status
    ids: dict[str, ContainerId | None] = {}
    if status is not None:
        for statuses in (status.init_container_statuses, status.container_statuses, status.ephemeral_container_statuses):
            for cs in statuses or ():
                ids[cs.name] = strip_runtime_prefix(cs.container_id)
    containers: list[ContainerMeta] = []
    if spec is not None:
        for group in (spec.init_containers, spec.containers, spec.ephemeral_containers):
            for c in group or ():
                containers.append(_container_meta(c, ids.get(c.name)))
    all_labels = dict(meta.labels or {})
    kind, name = _controller(meta.owner_references)
    return PodMeta(
        uid=PodUid(meta.uid),
        name=meta.name,
        namespace=meta.namespace or "default",
        node_name=spec.node_name if spec is not None else None,
        labels=select_labels(all_labels, labels),
        workload=workload_attributes(kind, name, all_labels),
        containers=tuple(containers),
        qos=_qos(status.qos_class if status is not None else None),
    )


def node_meta(node: kubernetes.client.V1Node | Mapping[str, Any], *, labels: Iterable[str] = NODE_LABELS) -> NodeMeta:
    """The node's capacity/allocatable (cores, bytes) and the labels pricing needs."""
    node = _as_model(node, "V1Node")
    status = node.status
    capacity = (status.capacity if status else None) or {}
    allocatable = (status.allocatable if status else None) or {}
    return NodeMeta(
        name=node.metadata.name,
        uid=node.metadata.uid,
        labels=select_labels(node.metadata.labels, labels),
        cpu_capacity_cores=quantity_cores(capacity.get("cpu")),
        cpu_allocatable_cores=quantity_cores(allocatable.get("cpu")),
        memory_capacity_bytes=quantity_bytes(capacity.get("memory")),
        memory_allocatable_bytes=quantity_bytes(allocatable.get("memory")),
    )


__all__ = [
    "NODE_LABELS",
    "WORKLOAD_ATTRIBUTES",
    "is_quantity",
    "node_meta",
    "pod_meta",
    "quantity_bytes",
    "quantity_cores",
    "select_labels",
    "strip_runtime_prefix",
    "workload_attributes",
]
