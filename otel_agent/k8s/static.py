"""Pod and node metadata from a YAML file, for the demo and for tests without a cluster.

The demo creates kubelet-like cgroups for pods that no API server knows, and clusterless
tests need stable metadata; both write this file instead of faking an API. It is validated
completely when loaded, and every error names the file and the field path
(`pods[2].containers[0].requests.cpu: '5 cores' is not a Kubernetes quantity`), because a
typo here otherwise shows up much later as a pod billed to nobody.

Format (all pods are on `node.name`)::

    node:
      name: demo-node                       # required
      uid: 3c1e...                          # optional
      labels: {node.kubernetes.io/instance-type: m5.xlarge, topology.kubernetes.io/zone: eu-west-1a}
      capacity: {cpu: "2", memory: 24Gi}    # Kubernetes quantities
      allocatable: {cpu: 1800m, memory: 22Gi}  # and GPUs: {nvidia.com/gpu: "4"}
      providerID: aws:///eu-west-1a/i-0abc...  # optional: spec.providerID (invoice matching)
    pods:
      - uid: 0f6c3d52-...                   # required, unique
        name: web-7d9f8-abcde               # required
        namespace: shop                     # required
        labels: {app: web, team: payments}  # string values (quote numbers)
        owner: {kind: Deployment, name: web}  # Deployment|StatefulSet|DaemonSet|Job|CronJob|ReplicaSet
        qos: Burstable                      # Guaranteed|Burstable|BestEffort
        containers:
          - name: web                       # required
            id: 4f1e...                     # as in the cgroup name (a runtime:// prefix is dropped)
            requests: {cpu: 500m, memory: 256Mi}
            limits: {cpu: "1", memory: 512Mi}  # GPUs too: {nvidia.com/gpu: "1"} (otel_agent/gpu.py)

    claims:                                 # optional: persistent volume claims, read by an
      - {uid: 7d..., name: data, namespace: ml, capacity: 20Gi, storage_class: standard,
         access_modes: RWO, mounted: true}  # agent with cluster_objects on (k8s/volumes.py)

When the file's mtime changes it is read again (checked at most once a second); a broken
new version is reported by status() and the last good one stays in use.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from otel_agent import safe_yaml
from otel_agent.errors import ConfigError
from otel_agent.gpu import gpu_counts, is_gpu_resource
from otel_agent.k8s.convert import (
    WORKLOAD_ATTRIBUTES,
    container_gpus,
    is_quantity,
    quantity_bytes,
    quantity_cores,
    select_labels,
    strip_runtime_prefix,
    workload_attributes,
)
from otel_agent.k8s.source import SourceStatus
from otel_agent.model import ContainerMeta, NodeMeta, PodMeta, PodUid, QosClass

log = logging.getLogger(__name__)

_TOP_KEYS = ("node", "pods", "claims")
_CLAIM_KEYS = ("uid", "name", "namespace", "capacity", "storage_class", "volume", "access_modes",
               "mounted")
_NODE_KEYS = ("name", "uid", "labels", "capacity", "allocatable", "providerID")
_POD_KEYS = ("uid", "name", "namespace", "labels", "owner", "qos", "containers")
_CONTAINER_KEYS = ("name", "id", "requests", "limits")
_RESOURCE_KEYS = ("cpu", "memory")
_OWNER_KINDS = tuple(WORKLOAD_ATTRIBUTES)
_QOS = tuple(q.value for q in QosClass)


class _Invalid(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


def _mapping(value: Any, field: str, allowed: Sequence[str] | None = None) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Invalid(field, f"must be a mapping, got {type(value).__name__} {value!r}")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise _Invalid(f"{field}.{key}" if field else str(key), f"unknown key (allowed: {', '.join(allowed)})")
    return value


def _string(value: Any, field: str, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise _Invalid(field, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Invalid(field, f"must be a string, got {value!r}")
    if not isinstance(value, str):
        raise _Invalid(field, f"must be a string, got the number {value!r}; quote it")
    if required and not value.strip():
        raise _Invalid(field, "must not be empty")
    return value


def _labels(value: Any, field: str) -> dict[str, str]:
    out = {}
    for key, v in _mapping(value, field).items():
        if isinstance(v, bool) or not isinstance(v, str):
            raise _Invalid(f"{field}.{key}", f"label values are strings, got {v!r}; quote it")
        out[str(key)] = v
    return out


def _resources(value: Any, field: str) -> dict[str, Any]:
    res = _mapping(value, field)
    for key in res:
        if key not in _RESOURCE_KEYS and not (isinstance(key, str) and is_gpu_resource(key)):
            raise _Invalid(f"{field}.{key}", "unknown key (allowed: cpu, memory); GPU "
                           "resources: nvidia.com/gpu, nvidia.com/mig-<g>g.<m>gb, amd.com/gpu, "
                           "gpu.intel.com/i915, gpu.intel.com/xe)")
    for key, q in res.items():
        if isinstance(q, bool) or not is_quantity(q):
            raise _Invalid(f"{field}.{key}", f"{q!r} is not a Kubernetes quantity (e.g. 500m, 2, 256Mi, 1G)")
    return dict(res)


def _node(value: Any) -> NodeMeta | None:
    if value is None:
        return None
    raw = _mapping(value, "node", _NODE_KEYS)
    capacity = _resources(raw.get("capacity"), "node.capacity")
    allocatable = _resources(raw.get("allocatable"), "node.allocatable")
    return NodeMeta(
        name=_string(raw.get("name"), "node.name", required=True) or "",
        uid=_string(raw.get("uid"), "node.uid", required=False),
        labels=_labels(raw.get("labels"), "node.labels"),
        cpu_capacity_cores=quantity_cores(capacity.get("cpu")),
        cpu_allocatable_cores=quantity_cores(allocatable.get("cpu")),
        memory_capacity_bytes=quantity_bytes(capacity.get("memory")),
        memory_allocatable_bytes=quantity_bytes(allocatable.get("memory")),
        provider_id=_string(raw.get("providerID"), "node.providerID", required=False) or None,
        gpu_capacity=gpu_counts(capacity, quantity_cores),
        gpu_allocatable=gpu_counts(allocatable, quantity_cores),
    )


def _container(value: Any, field: str) -> ContainerMeta:
    raw = _mapping(value, field, _CONTAINER_KEYS)
    requests = _resources(raw.get("requests"), f"{field}.requests")
    limits = _resources(raw.get("limits"), f"{field}.limits")
    return ContainerMeta(
        name=_string(raw.get("name"), f"{field}.name", required=True) or "",
        container_id=strip_runtime_prefix(_string(raw.get("id"), f"{field}.id", required=False)),
        cpu_request_cores=quantity_cores(requests.get("cpu")),
        cpu_limit_cores=quantity_cores(limits.get("cpu")),
        memory_request_bytes=quantity_bytes(requests.get("memory")),
        memory_limit_bytes=quantity_bytes(limits.get("memory")),
        gpus=container_gpus(requests, limits),
    )


def _pod(value: Any, field: str, node_name: str | None, keep_labels: Sequence[str]) -> PodMeta:
    raw = _mapping(value, field, _POD_KEYS)
    labels = _labels(raw.get("labels"), f"{field}.labels")
    workload: dict[str, str] = {}
    if raw.get("owner") is not None:
        owner = _mapping(raw["owner"], f"{field}.owner", ("kind", "name"))
        kind = _string(owner.get("kind"), f"{field}.owner.kind", required=True)
        if kind not in _OWNER_KINDS:
            raise _Invalid(f"{field}.owner.kind", f"{kind!r} is not allowed (allowed: {', '.join(_OWNER_KINDS)})")
        name = _string(owner.get("name"), f"{field}.owner.name", required=True)
        workload = workload_attributes(kind, name, labels)
    qos = _string(raw.get("qos"), f"{field}.qos", required=False)
    if qos is not None and qos not in _QOS:
        raise _Invalid(f"{field}.qos", f"{qos!r} is not allowed (allowed: {', '.join(_QOS)})")
    containers_raw = raw.get("containers") or []
    if not isinstance(containers_raw, list):
        raise _Invalid(f"{field}.containers", f"must be a list, got {containers_raw!r}")
    containers = tuple(_container(c, f"{field}.containers[{i}]") for i, c in enumerate(containers_raw))
    seen: dict[str, int] = {}
    for i, c in enumerate(containers):
        if c.name in seen:
            raise _Invalid(f"{field}.containers[{i}].name", f"{c.name!r} repeats {field}.containers[{seen[c.name]}].name")
        seen[c.name] = i
    return PodMeta(
        uid=PodUid(_string(raw.get("uid"), f"{field}.uid", required=True) or ""),
        name=_string(raw.get("name"), f"{field}.name", required=True) or "",
        namespace=_string(raw.get("namespace"), f"{field}.namespace", required=True) or "",
        node_name=node_name,
        labels=select_labels(labels, keep_labels),
        workload=workload,
        containers=containers,
        qos=QosClass(qos) if qos else None,
    )


def _claims(value: Any) -> list[Any]:
    """The optional `claims:` list (persistent volume claims for an agent with cluster_objects
    on, when there is no API server: the demo), as k8s.volumes.ClaimMeta."""
    from otel_agent.k8s.volumes import ClaimMeta

    if value is None:
        return []
    if not isinstance(value, list):
        raise _Invalid("claims", f"must be a list, got {type(value).__name__}")
    out = []
    for i, raw in enumerate(value):
        f = f"claims[{i}]"
        m = _mapping(raw, f, _CLAIM_KEYS)
        cap = m.get("capacity")
        if isinstance(cap, bool) or not is_quantity(cap):
            raise _Invalid(f"{f}.capacity", f"{cap!r} is not a Kubernetes quantity (e.g. 20Gi)")
        mounted = m.get("mounted", False)
        if not isinstance(mounted, bool):
            raise _Invalid(f"{f}.mounted", f"must be true or false, got {mounted!r}")
        out.append(ClaimMeta(
            uid=_string(m.get("uid"), f"{f}.uid", required=True) or "",
            name=_string(m.get("name"), f"{f}.name", required=True) or "",
            namespace=_string(m.get("namespace"), f"{f}.namespace", required=True) or "",
            capacity_bytes=quantity_bytes(cap) or 0,
            storage_class=_string(m.get("storage_class"), f"{f}.storage_class", required=False) or "",
            volume=_string(m.get("volume"), f"{f}.volume", required=False) or "",
            access_modes=_string(m.get("access_modes"), f"{f}.access_modes", required=False) or "",
            mounted=mounted))
    return out


def load_static_claims(path: Path) -> list[Any]:
    """The `claims:` of a static file (validated as by parse_static)."""
    path = Path(path)
    try:
        doc = safe_yaml.load(path.read_text(encoding="utf-8"))
        return _claims(doc.get("claims") if isinstance(doc, Mapping) else None)
    except _Invalid as e:
        raise ConfigError(f"{path}: {safe_yaml.one_line(str(e), 400)}") from e
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read claims: {e}") from e


class StaticClaims:
    """cluster_objects from the static file's `claims:` (re-read when the file changes)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp = _mtime(self.path)
        self._claims = load_static_claims(self.path)

    def claims(self) -> list[Any]:
        stamp = _mtime(self.path)
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                self._claims = load_static_claims(self.path)
            except ConfigError as e:
                log.warning("static claims not reloaded: %s", e)
        return self._claims

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def parse_static(text: str, *, source: str = "<string>", pod_labels: Iterable[str] = ("*",)) -> tuple[NodeMeta | None, dict[PodUid, PodMeta]]:
    """Parse and validate the static format; ConfigError names `source` and the field path."""
    try:
        doc = safe_yaml.load(text)
    except yaml.YAMLError as e:  # one line: the problem and where, not PyYAML's snippet
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{where}: {getattr(e, 'problem', None) or str(e).splitlines()[0]}") from e
    keep = tuple(pod_labels)
    try:
        if doc is not None and not isinstance(doc, Mapping):
            raise _Invalid("(top level)", f"must be a mapping with keys node, pods, got {type(doc).__name__}")
        top = _mapping(doc, "", _TOP_KEYS)
        node = _node(top.get("node"))
        _claims(top.get("claims"))  # validated here, read by StaticClaims
        pods_raw = top.get("pods") or []
        if not isinstance(pods_raw, list):
            raise _Invalid("pods", f"must be a list, got {type(pods_raw).__name__}")
        pods: dict[PodUid, PodMeta] = {}
        where: dict[PodUid, int] = {}
        for i, raw in enumerate(pods_raw):
            pod = _pod(raw, f"pods[{i}]", node.name if node else None, keep)
            if pod.uid in pods:
                raise _Invalid(f"pods[{i}].uid", f"{pod.uid!r} repeats pods[{where[pod.uid]}].uid")
            pods[pod.uid] = pod
            where[pod.uid] = i
    except _Invalid as e:  # field paths and values come from the file: one bounded line
        raise ConfigError(f"{source}: {safe_yaml.one_line(str(e), 400)}") from e
    return node, pods


def load_static(path: Path, *, pod_labels: Iterable[str] = ("*",)) -> tuple[NodeMeta | None, dict[PodUid, PodMeta]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"static metadata file {path}: does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"static metadata file {path}: cannot be read: {e}") from e
    return parse_static(text, source=str(path), pod_labels=pod_labels)


def _mtime(path: Path) -> tuple[int, int, int] | None:
    # The inode too: write_static replaces the file, and two writes within the
    # filesystem's timestamp granularity may leave mtime and size unchanged.
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class StaticSource:
    """Metadata from a static YAML file (format in the module docstring)."""

    name = "static"

    def __init__(self, path: Path, *, pod_labels: Iterable[str] = ("*",), reload_check_seconds: float = 1.0) -> None:
        self.path = Path(path)
        self._pod_labels = tuple(pod_labels)
        self._reload_check_seconds = reload_check_seconds
        self._lock = threading.Lock()
        self._stamp = _mtime(self.path)
        self._node, self._pods = load_static(self.path, pod_labels=self._pod_labels)
        self._checked_at = time.monotonic()
        self._error: str | None = None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def pod(self, uid: PodUid) -> PodMeta | None:
        self._maybe_reload()
        return self._pods.get(uid)

    def node(self) -> NodeMeta | None:
        self._maybe_reload()
        return self._node

    def status(self) -> SourceStatus:
        self._maybe_reload()
        if self._error is not None:
            return SourceStatus(False, f"{self._error}; still using the last good version ({len(self._pods)} pods)")
        node = self._node.name if self._node else "(no node)"
        return SourceStatus(True, f"{len(self._pods)} pods on node {node} from {self.path}")

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self._reload_check_seconds:
            return
        with self._lock:
            if now - self._checked_at < self._reload_check_seconds:
                return
            self._checked_at = now
            stamp = _mtime(self.path)
            if stamp is None or stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                node, pods = load_static(self.path, pod_labels=self._pod_labels)
            except ConfigError as e:
                if self._error != str(e):
                    log.warning("static metadata not reloaded: %s", e)
                self._error = str(e)
                return
            self._node, self._pods, self._error = node, pods, None
            log.info("static metadata reloaded from %s: %d pods", self.path, len(pods))


# ---------------------------------------------------------------------------- writing

_BINARY_SUFFIXES = (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10))


def format_cores(cores: float) -> str:
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_bytes(n_bytes: int) -> str:
    for suffix, unit in _BINARY_SUFFIXES:
        if n_bytes and n_bytes % unit == 0:
            return f"{n_bytes // unit}{suffix}"
    return str(n_bytes)


def _owner_of(workload: Mapping[str, str]) -> dict[str, str] | None:
    # Most specific first: a Deployment rather than its ReplicaSet, a CronJob rather than its Job.
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job", "ReplicaSet"):
        name = workload.get(WORKLOAD_ATTRIBUTES[kind])
        if name:
            return {"kind": kind, "name": name}
    return None


def _resources_doc(cpu: float | None, memory: int | None,
                   gpus: tuple[tuple[str, float], ...] = ()) -> dict[str, str]:
    out = {}
    if cpu is not None:
        out["cpu"] = format_cores(cpu)
    if memory is not None:
        out["memory"] = format_bytes(memory)
    for name, n in gpus:
        out[name] = format_cores(n)
    return out


def static_document(node: NodeMeta | None, pods: Iterable[PodMeta]) -> dict[str, Any]:
    """The static format as a plain dict (what `write_static` dumps)."""
    doc: dict[str, Any] = {}
    if node is not None:
        n: dict[str, Any] = {"name": node.name}
        if node.uid:
            n["uid"] = node.uid
        if node.labels:
            n["labels"] = dict(node.labels)
        if node.provider_id:
            n["providerID"] = node.provider_id
        if cap := _resources_doc(node.cpu_capacity_cores, node.memory_capacity_bytes,
                                   node.gpu_capacity):
            n["capacity"] = cap
        if alloc := _resources_doc(node.cpu_allocatable_cores, node.memory_allocatable_bytes,
                                     node.gpu_allocatable):
            n["allocatable"] = alloc
        doc["node"] = n
    out_pods = []
    for pod in pods:
        p: dict[str, Any] = {"uid": str(pod.uid), "name": pod.name, "namespace": pod.namespace}
        if pod.labels:
            p["labels"] = dict(pod.labels)
        if owner := _owner_of(pod.workload):
            p["owner"] = owner
        if pod.qos is not None:
            p["qos"] = pod.qos.value
        containers = []
        for c in pod.containers:
            cd: dict[str, Any] = {"name": c.name}
            if c.container_id:
                cd["id"] = str(c.container_id)
            if req := _resources_doc(c.cpu_request_cores, c.memory_request_bytes):
                cd["requests"] = req
            if lim := _resources_doc(c.cpu_limit_cores, c.memory_limit_bytes, c.gpus):
                cd["limits"] = lim
            containers.append(cd)
        p["containers"] = containers
        out_pods.append(p)
    doc["pods"] = out_pods
    return doc


def write_static(path: Path, node: NodeMeta | None, pods: Iterable[PodMeta],
                 claims: Iterable[Any] = ()) -> None:
    """Write the static file atomically (a reader never sees half a file).

    The owner is written as the most specific workload (Deployment over its ReplicaSet,
    CronJob over its Job), so a round trip keeps that one and drops the intermediate.
    """
    path = Path(path)
    doc = static_document(node, pods)
    claims = list(claims)
    if claims:
        doc["claims"] = [{"uid": c.uid, "name": c.name, "namespace": c.namespace,
                          "capacity": format_bytes(c.capacity_bytes),
                          "storage_class": c.storage_class, "volume": c.volume,
                          "access_modes": c.access_modes, "mounted": c.mounted} for c in claims]
    text = "# pod metadata for otel-agent's static source (otel_agent/k8s/static.py)\n" + yaml.safe_dump(
        doc, sort_keys=False, default_flow_style=False
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
