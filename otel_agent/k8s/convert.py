"""Kubernetes API objects → PodMeta / NodeMeta, as pure functions.

The informer, the tests and anything else holding a pod or node, as the API's plain JSON dict
(what the informer reads) or as a `V1Pod`/`V1Node`, share this one conversion, so what a pod
"is" to the agent is decided in one place and tested on fixture objects without a cluster
(DESIGN rule 4). The informer does not let the client build its models: in client 37 they are
pydantic classes built on first use, ~25 MB of the agent's memory for a handful of fields
(bench/agent.py). The JSON is read defensively instead: a field of the wrong type is a
ValueError for that pod, never a crash.

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

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping

import kubernetes.client
from kubernetes.utils import parse_quantity

from otel_agent.gpu import gpu_counts
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

# Models (from callers that hold them) become the API's JSON form; no request is made.
_SERIALIZER = kubernetes.client.ApiClient()


def _as_json(obj: Any) -> Mapping[str, Any]:
    if isinstance(obj, Mapping):
        return obj
    return _SERIALIZER.sanitize_for_serialization(obj)


def _field(obj: Mapping[str, Any] | None, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """obj[key] if it is of `kind`, None if absent or null; ValueError otherwise."""
    if obj is None:
        return None
    v = obj.get(key)
    if v is None or isinstance(v, kind):
        return v
    raise ValueError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {type(v).__name__}")


def _str_map(obj: Mapping[str, Any] | None, key: str, where: str) -> dict[str, str]:
    m = _field(obj, key, Mapping, where) or {}
    for k, v in m.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise ValueError(f"{where}.{key}: {k!r} must map to a string")
    return {k: str(v) for k, v in m.items()}


def _dicts(obj: Mapping[str, Any] | None, key: str, where: str) -> list[Mapping[str, Any]]:
    items = _field(obj, key, list, where) or []
    for i, it in enumerate(items):
        if not isinstance(it, Mapping):
            raise ValueError(f"{where}.{key}[{i}]: expected a mapping")
    return items


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


def _quantity(value: Any) -> Decimal:
    """parse_quantity, refusing what no Kubernetes quantity can be: infinity and NaN
    (a YAML `.inf` or a float from JSON would otherwise pass)."""
    q = parse_quantity(value)
    if not q.is_finite():
        raise ValueError(f"quantity {value!r} is not finite")
    return q


def quantity_cores(value: Any) -> float | None:
    """A CPU quantity ("500m", "2", 1.5) in cores; None when absent. Raises ValueError if malformed."""
    if value is None:
        return None
    return float(_quantity(value))


def quantity_bytes(value: Any) -> int | None:
    """A memory quantity ("256Mi", "1G", "129e6") in bytes, rounded up; None when absent."""
    if value is None:
        return None
    q = _quantity(value)
    return int(q.to_integral_value(rounding="ROUND_CEILING"))


def is_quantity(value: Any) -> bool:
    try:
        _quantity(value)
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


def _controller(meta: Mapping[str, Any]) -> tuple[str | None, str | None]:
    refs = _dicts(meta, "ownerReferences", "metadata")
    if not refs:
        return None, None
    chosen = next((r for r in refs if r.get("controller") is True), refs[0])
    return (_field(chosen, "kind", str, "metadata.ownerReferences"),
            _field(chosen, "name", str, "metadata.ownerReferences"))


def _container_meta(container: Mapping[str, Any], container_id: ContainerId | None) -> ContainerMeta:
    resources = _field(container, "resources", Mapping, "spec.containers") or {}
    requests = _field(resources, "requests", Mapping, "resources") or {}
    limits = _field(resources, "limits", Mapping, "resources") or {}
    name = _field(container, "name", str, "spec.containers")
    if not name:
        raise ValueError("spec.containers: a container without a name")
    return ContainerMeta(
        name=name,
        container_id=container_id,
        cpu_request_cores=quantity_cores(requests.get("cpu")),
        cpu_limit_cores=quantity_cores(limits.get("cpu")),
        memory_request_bytes=quantity_bytes(requests.get("memory")),
        memory_limit_bytes=quantity_bytes(limits.get("memory")),
        gpus=container_gpus(requests, limits),
    )


def container_gpus(requests: Mapping[str, Any], limits: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    """A container's GPUs: extended resources are set in limits (a request, if given, must
    equal the limit, and one given alone becomes the limit), so the limit wins."""
    merged = {**requests, **limits}
    return gpu_counts(merged, quantity_cores)


def _qos(value: str | None) -> QosClass | None:
    try:
        return QosClass(value) if value else None
    except ValueError:
        return None


def pod_meta(pod: kubernetes.client.V1Pod | Mapping[str, Any], *, labels: Iterable[str] = ()) -> PodMeta:
    """One pod as the agent sees it. `labels`: pod label keys to keep (`*` = all).

    Container ids come from status (init and ephemeral containers too), without the runtime
    prefix; a container not started yet has no id. Requests/limits are in cores and bytes.
    Raises ValueError for a pod whose fields have the wrong types or no uid.
    """
    pod = _as_json(pod)
    meta = _field(pod, "metadata", Mapping, "pod") or {}
    spec = _field(pod, "spec", Mapping, "pod")
    status = _field(pod, "status", Mapping, "pod")
    ids: dict[str, ContainerId | None] = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for cs in _dicts(status, key, "status"):
            name = _field(cs, "name", str, f"status.{key}")
            if name:
                ids[name] = strip_runtime_prefix(_field(cs, "containerID", str, f"status.{key}"))
    containers: list[ContainerMeta] = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in _dicts(spec, key, "spec"):
            containers.append(_container_meta(c, ids.get(c.get("name"))))
    uid = _field(meta, "uid", str, "metadata")
    if not uid:
        raise ValueError("metadata.uid: missing")
    all_labels = _str_map(meta, "labels", "metadata")
    kind, name = _controller(meta)
    return PodMeta(
        uid=PodUid(uid),
        name=_field(meta, "name", str, "metadata") or "",
        namespace=_field(meta, "namespace", str, "metadata") or "default",
        node_name=_field(spec, "nodeName", str, "spec"),
        labels=select_labels(all_labels, labels),
        workload=workload_attributes(kind, name, all_labels),
        containers=tuple(containers),
        qos=_qos(_field(status, "qosClass", str, "status")),
    )


def resource_version(obj: Any) -> str | None:
    """metadata.resourceVersion of an API object (JSON form), if it is a string."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    rv = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
    return rv if isinstance(rv, str) and rv else None


def node_meta(node: kubernetes.client.V1Node | Mapping[str, Any], *, labels: Iterable[str] = NODE_LABELS) -> NodeMeta:
    """The node's capacity/allocatable (cores, bytes), the labels pricing needs and its
    spec.providerID (invoice lines are matched by it)."""
    node = _as_json(node)
    meta = _field(node, "metadata", Mapping, "node") or {}
    status = _field(node, "status", Mapping, "node")
    capacity = _field(status, "capacity", Mapping, "status") or {}
    allocatable = _field(status, "allocatable", Mapping, "status") or {}
    spec = _field(node, "spec", Mapping, "node")
    return NodeMeta(
        name=_field(meta, "name", str, "metadata") or "",
        uid=_field(meta, "uid", str, "metadata"),
        labels=select_labels(_str_map(meta, "labels", "metadata"), labels),
        cpu_capacity_cores=quantity_cores(capacity.get("cpu")),
        cpu_allocatable_cores=quantity_cores(allocatable.get("cpu")),
        memory_capacity_bytes=quantity_bytes(capacity.get("memory")),
        memory_allocatable_bytes=quantity_bytes(allocatable.get("memory")),
        provider_id=_field(spec, "providerID", str, "spec") or None,
        gpu_capacity=gpu_counts(capacity, quantity_cores),
        gpu_allocatable=gpu_counts(allocatable, quantity_cores),
    )


__all__ = [
    "NODE_LABELS",
    "container_gpus",
    "WORKLOAD_ATTRIBUTES",
    "is_quantity",
    "node_meta",
    "pod_meta",
    "quantity_bytes",
    "resource_version",
    "quantity_cores",
    "select_labels",
    "strip_runtime_prefix",
    "workload_attributes",
]
