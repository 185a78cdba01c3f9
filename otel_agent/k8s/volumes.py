"""Persistent volume claims as the ledger bills them: cluster objects, read by one agent.

A claim costs its namespace by the hour while it exists, whether or not a pod mounts it
(an unmounted claim still holds its disk). So billing needs every claim in the cluster, not
only those of the pods on one node. Who reads them:

* not every agent: each would report every claim, and the ledger would bill each claim once
  per node;
* not the cost processor: it takes everything it bills over OTLP through the gateway, where
  the other backends see the same data; it holds no Kubernetes credentials and may run
  outside the cluster;
* not an elected agent: election needs a Lease, i.e. create/update on
  coordination.k8s.io, which the agent's read-only role does not have;
* so: one agent, chosen without a Lease. With `cluster_objects: auto`
  (OTEL_AGENT_CLUSTER_OBJECTS=auto, what deploy/base/agent.yaml sets) every agent lists the
  nodes (its role already reads nodes) and the agent on the first Ready node by name
  (`reporter`) lists claims, volumes, storage classes and running pods every
  CLUSTER_LIST_SECONDS and exports each bound claim's capacity on its node resource. `on`
  makes an agent report whatever the others do (one agent outside a DaemonSet, the tests).
  While the reporter's node is not Ready the next one takes over within a period; while its
  agent is down but its node Ready, nothing is reported (a gap, logged by no one: the price of
  having no Lease).

What a claim is to the ledger (`claim_meta`, pure): its uid, namespace, name; the bound
volume's capacity (PV `spec.capacity.storage`, else the claim's `status.capacity.storage`);
its storage class (the claim's `spec.storageClassName`, else the volume's, else the cluster's
default class); the volume's access modes (RWO, ROX, RWX, RWOP); and whether a running pod
mounts it now. Claims not Bound hold no disk and are not reported; volumes bound to no claim
(Released, Available) have no namespace to bill and are not reported either.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from otel_agent.k8s.convert import _dicts, _field, quantity_bytes

log = logging.getLogger(__name__)

CLUSTER_LIST_SECONDS = 60.0
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
ACCESS_MODES = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
                "ReadWriteOncePod": "RWOP"}


@dataclass(frozen=True, slots=True)
class ClaimMeta:
    uid: str
    name: str
    namespace: str
    capacity_bytes: int
    storage_class: str
    volume: str
    access_modes: str  # e.g. "RWO" or "ROX+RWX"
    mounted: bool


def _meta(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    return _field(obj, "metadata", Mapping, where) or {}


def default_class(storage_classes: Iterable[Mapping[str, Any]]) -> str:
    """The cluster's default storage class (its annotation), '' if none."""
    for sc in storage_classes:
        m = _meta(sc, "storageclass")
        ann = _field(m, "annotations", Mapping, "storageclass.metadata") or {}
        if str(ann.get(DEFAULT_CLASS_ANNOTATION, "")).lower() == "true":
            return _field(m, "name", str, "storageclass.metadata") or ""
    return ""


def mounted_claims(pods: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(namespace, claim name) of every claim a running pod mounts."""
    out: set[tuple[str, str]] = set()
    for pod in pods:
        status = _field(pod, "status", Mapping, "pod") or {}
        if status.get("phase") not in (None, "Running", "Pending"):
            continue
        ns = _field(_meta(pod, "pod"), "namespace", str, "pod.metadata") or "default"
        for v in _dicts(_field(pod, "spec", Mapping, "pod"), "volumes", "spec"):
            pvc = _field(v, "persistentVolumeClaim", Mapping, "spec.volumes") or {}
            name = _field(pvc, "claimName", str, "spec.volumes.persistentVolumeClaim")
            if name:
                out.add((ns, name))
    return out


def claim_meta(pvc: Mapping[str, Any], pvs: Mapping[str, Mapping[str, Any]], default_sc: str,
               mounted: set[tuple[str, str]]) -> ClaimMeta | None:
    """One bound claim as the ledger bills it (module docstring); None when not bound.
    Raises ValueError for a claim whose fields have the wrong types."""
    m = _meta(pvc, "pvc")
    spec = _field(pvc, "spec", Mapping, "pvc") or {}
    status = _field(pvc, "status", Mapping, "pvc") or {}
    if status.get("phase") != "Bound":
        return None
    uid = _field(m, "uid", str, "pvc.metadata")
    name = _field(m, "name", str, "pvc.metadata")
    if not uid or not name:
        raise ValueError("pvc.metadata: a claim without uid or name")
    ns = _field(m, "namespace", str, "pvc.metadata") or "default"
    volume = _field(spec, "volumeName", str, "pvc.spec") or ""
    pv = pvs.get(volume) or {}
    pv_spec = _field(pv, "spec", Mapping, "pv") or {}
    cap = (_field(pv_spec, "capacity", Mapping, "pv.spec") or {}).get("storage")
    if cap is None:
        cap = (_field(status, "capacity", Mapping, "pvc.status") or {}).get("storage")
    size = quantity_bytes(cap)
    if size is None:
        return None
    sc = (_field(spec, "storageClassName", str, "pvc.spec")
          or _field(pv_spec, "storageClassName", str, "pv.spec") or default_sc)
    modes = _field(pv_spec, "accessModes", list, "pv.spec") or \
        _field(spec, "accessModes", list, "pvc.spec") or []
    access = "+".join(sorted({ACCESS_MODES.get(x, "?") for x in modes if isinstance(x, str)}))
    return ClaimMeta(uid=uid, name=name, namespace=ns, capacity_bytes=size, storage_class=sc,
                     volume=volume, access_modes=access, mounted=(ns, name) in mounted)


def claims(pvcs: Iterable[Mapping[str, Any]], pvs: Iterable[Mapping[str, Any]],
           storage_classes: Iterable[Mapping[str, Any]],
           pods: Iterable[Mapping[str, Any]]) -> tuple[list[ClaimMeta], int]:
    """Every bound claim (sorted by namespace, name), and how many claims were skipped as
    malformed (one bad object never hides the others)."""
    by_name = {}
    for pv in pvs:
        n = _field(_meta(pv, "pv"), "name", str, "pv.metadata") if isinstance(pv, Mapping) else None
        if n:
            by_name[n] = pv
    dsc = default_class(sc for sc in storage_classes if isinstance(sc, Mapping))
    mounted = mounted_claims(p for p in pods if isinstance(p, Mapping))
    out, bad = [], 0
    for pvc in pvcs:
        try:
            c = claim_meta(pvc, by_name, dsc, mounted)
        except (ValueError, TypeError, ArithmeticError):
            bad += 1
            continue
        if c is not None:
            out.append(c)
    out.sort(key=lambda c: (c.namespace, c.name, c.uid))
    return out, bad


def reporter(nodes: Iterable[Mapping[str, Any]]) -> str | None:
    """The node whose agent reports the cluster's claims with cluster_objects `auto`: the first
    Ready node by name. Every agent computes the same from the same list; while the list
    changes two agents may both report for up to one period (CLUSTER_LIST_SECONDS), and the one
    that stops sends zeros once, so the overlap is at most that period."""
    ready = []
    for n in nodes:
        m = _meta(n, "node")
        name = _field(m, "name", str, "node.metadata")
        conds = _dicts(_field(n, "status", Mapping, "node"), "conditions", "status")
        if name and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
            ready.append(name)
    return min(ready) if ready else None


class ClusterObjects:
    """Lists claims, volumes, storage classes and running pods every `period_seconds` in a
    thread (through the client's ApiClient, as JSON: see informer._RawCoreV1) and keeps the
    last good result. A failed list keeps the previous claims for at most 5 periods, then
    reports none (stale capacity must not bill for ever); it is logged once per outage."""

    def __init__(self, api_client: Any, *, period_seconds: float = CLUSTER_LIST_SECONDS,
                 node_name: str | None = None, auto: bool = False) -> None:
        from otel_agent.k8s.informer import _RawCoreV1

        self._raw = _RawCoreV1(api_client)
        self.period_seconds = period_seconds
        self.node_name = node_name
        self.auto = auto
        self.reporting = not auto
        self._claims: list[ClaimMeta] = []
        self._at = 0.0
        self.skipped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def _list(self, path: str) -> list[Mapping[str, Any]]:
        from otel_agent.k8s.informer import _json

        body = _json(self._raw._get(path, [], 30))
        items = body.get("items") if isinstance(body, Mapping) else None
        return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []

    def refresh(self) -> None:
        if self.auto:
            was = self.reporting
            self.reporting = reporter(self._list("/api/v1/nodes")) == self.node_name
            if was != self.reporting:
                log.info("this agent %s the cluster's persistent volume claims",
                         "now reports" if self.reporting else "no longer reports")
            if not self.reporting:
                # one last export of zeros ends what this agent reported (a level holds until
                # its next point), so the new reporter's points are not billed twice
                self._claims = [replace(c, capacity_bytes=0) for c in self._claims
                                if c.capacity_bytes] if was else []
                self._at = time.monotonic()
                return
        got, bad = claims(self._list("/api/v1/persistentvolumeclaims"),
                          self._list("/api/v1/persistentvolumes"),
                          self._list("/apis/storage.k8s.io/v1/storageclasses"),
                          self._list("/api/v1/pods"))
        self._claims, self._at, self.skipped = got, time.monotonic(), bad

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
                if self._failing:
                    log.info("listing persistent volume claims works again")
                self._failing = False
            except Exception as e:  # the thread boundary: keep the last result, say so once
                if not self._failing:
                    log.error("listing persistent volume claims failed: %s", e)
                self._failing = True
            self._stop.wait(self.period_seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cluster-objects", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def claims(self) -> list[ClaimMeta]:
        if self._at and time.monotonic() - self._at > 5 * self.period_seconds:
            return []
        return self._claims


__all__ = ["reporter", "ACCESS_MODES", "CLUSTER_LIST_SECONDS", "ClaimMeta", "ClusterObjects", "claim_meta",
           "claims", "default_class", "mounted_claims"]
