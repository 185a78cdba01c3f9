"""A fake Kubernetes API server for driving the real `kubernetes` client in tests.

There is no cluster on the machines that run our tests, and a mocked client would only prove
that we call the methods we think we call. This server speaks enough of the real HTTP API
(list, watch as chunked JSON lines, resourceVersion, fieldSelector, 410 Gone, Status bodies)
that the official client's own request building, deserialization and `Watch` code run
unchanged, and it can be told to misbehave the way real API servers do: drop watch streams,
compact its history (410), refuse connections (down/up on the same port) or answer errors.

Serves (pods are the only kind with watch):

    GET /api/v1/pods                       list, or watch with ?watch=true
    GET /api/v1/namespaces/{ns}/pods       the same, one namespace
    GET /api/v1/namespaces/{ns}/pods/{n}   one pod
    GET /api/v1/nodes                      list
    GET /api/v1/nodes/{name}               one node

Query parameters honoured: fieldSelector (`spec.nodeName`, `metadata.name`,
`metadata.namespace`, with `=`, `==`, `!=`, comma-joined), resourceVersion, timeoutSeconds,
watch. Everything else is accepted, ignored and kept in the request log.

Typical use::

    with FakeApiServer() as api:
        api.set_node(make_node("node-a"))
        api.add_pod(make_pod("web-1", node_name="node-a"))
        client = api.api_client()           # kubernetes.client.ApiClient pointed at it
        ...
        api.stop(); ...; api.start()        # API down, then up again on the same port
        api.drop_watches()                  # every open watch stream is cut
        api.expire_resource_versions()      # old resourceVersions now get 410 Gone
        assert api.requests_to("/api/v1/pods")[-1].query["resourceVersion"] == "7"

History semantics: every change gets the next resourceVersion and is kept, so a watch from
any earlier resourceVersion replays what happened since (including across `stop()`/`start()`,
like an API server restarting in front of the same etcd). `expire_resource_versions()` is
etcd compaction: from then on only a fresh list (or a watch without resourceVersion) works.

Recipe for an outage test (e.g. API down 60 s while a pod is created and deleted), with the
agent's source built on `api.api_client()` and short backoffs (`backoff_cap_seconds=0.2`)::

    api.stop()
    api.add_pod(make_pod("ghost", node_name="node-a")); api.delete_pod("default", "ghost")
    api.expire_resource_versions()   # optional: the outage outlasted the server's history
    api.start()

Builders `make_pod(...)` / `make_node(...)` return objects in the API's JSON form;
`container_id_for(uid, name)` is the container id `make_pod` gives (for cgroup names).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import select
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Literal, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

import kubernetes.client

Json = dict[str, Any]
ExpireMode = Literal["event", "http"]

#: How long an open watch sleeps between checks for stop/drop/timeout when nothing happens.
_WATCH_POLL_SECONDS = 0.05
#: The server-side watch timeout when the client sends none (the real default is 30-60 min).
_DEFAULT_WATCH_TIMEOUT_SECONDS = 1800


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One request the server received: what the client actually sent."""

    method: str
    path: str
    query: Mapping[str, str]  # first value of each query parameter
    time_monotonic: float

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")


@dataclasses.dataclass
class _Fault:
    path_prefix: str
    status: int
    remaining: int | None  # None: until cleared


@dataclasses.dataclass(frozen=True)
class _Event:
    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    pod: Json


class FakeApiServer:
    """A threaded HTTP server on 127.0.0.1 that behaves like a small Kubernetes API server.

    All control methods are thread-safe and may be called while clients are connected.
    Use as a context manager, or call `stop()` at the end (it is idempotent).
    """

    def __init__(self, *, port: int = 0) -> None:
        self._cond = threading.Condition()
        self._resource_version = 1
        self._pods: dict[tuple[str, str], Json] = {}
        self._nodes: dict[str, Json] = {}
        # cluster objects listed whole (no watch): persistentvolumeclaims, persistentvolumes,
        # storageclasses, each by name (claims by namespace/name)
        self._objects: dict[str, dict[str, Json]] = {"persistentvolumeclaims": {},
                                                     "persistentvolumes": {}, "storageclasses": {}}
        self._events: list[_Event] = []
        # Watches from a resourceVersion older than this get 410 Gone (etcd compaction).
        self._oldest_valid_rv = 0
        self._expire_mode: ExpireMode = "event"
        # Bumped by drop_watches() and stop(): open watch streams from an older epoch end.
        self._watch_epoch = 0
        self._faults: list[_Fault] = []
        self._log: list[RequestRecord] = []
        self._connections: set[socket.socket] = set()
        self._open_watch_count = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = port
        self.start()

    # ---------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Serve (again) on the same port; a no-op when already running."""
        if self._server is not None:
            return
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.fake = self
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-apiserver-{self._port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """API down: close the listening socket and cut every open connection (idempotent).

        Clients then see connection refused until `start()`; state (pods, resourceVersions)
        is kept, like an API server restarting in front of the same etcd.
        """
        server, self._server = self._server, None
        if server is None:
            return
        with self._cond:
            self._watch_epoch += 1
            self._cond.notify_all()
            conns = list(self._connections)
        server.shutdown()
        server.server_close()
        for conn in conns:
            _hard_close(conn)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api_client(self, **configuration: Any) -> kubernetes.client.ApiClient:
        """A real `kubernetes.client.ApiClient` pointed at this server (plain HTTP, no auth).

        Keyword arguments are set as attributes on the client's `Configuration`
        (e.g. `retries=False`).
        """
        cfg = kubernetes.client.Configuration(host=self.url)
        for key, value in configuration.items():
            setattr(cfg, key, value)
        return kubernetes.client.ApiClient(cfg)

    # ---------------------------------------------------------------- objects

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._resource_version

    def set_node(self, node: Json) -> None:
        """Create or replace a node (by metadata.name)."""
        with self._cond:
            node = copy.deepcopy(node)
            node["metadata"]["resourceVersion"] = str(self._next_rv())
            self._nodes[node["metadata"]["name"]] = node

    def put_object(self, kind: str, obj: Json) -> None:
        """Add or replace a persistentvolumeclaim, persistentvolume or storageclass."""
        m = obj["metadata"]
        key = f"{m.get('namespace', '')}/{m['name']}"
        with self._cond:
            self._objects[kind][key] = copy.deepcopy(obj)
            self._next_rv()

    def delete_object(self, kind: str, name: str, namespace: str = "") -> None:
        with self._cond:
            self._objects[kind].pop(f"{namespace}/{name}", None)
            self._next_rv()

    def add_pod(self, pod: Json) -> Json:
        """Create a pod and emit ADDED; returns the stored copy (with uid and resourceVersion)."""
        with self._cond:
            pod = copy.deepcopy(pod)
            meta = pod.setdefault("metadata", {})
            meta.setdefault("namespace", "default")
            meta.setdefault("uid", str(uuid.uuid4()))
            key = (meta["namespace"], meta["name"])
            if key in self._pods:
                raise ValueError(f"pod {key[0]}/{key[1]} already exists")
            self._pods[key] = pod
            self._emit("ADDED", pod)
            return copy.deepcopy(pod)

    def modify_pod(self, namespace: str, name: str, change: Callable[[Json], None]) -> Json:
        """Apply `change` to the stored pod in place and emit MODIFIED."""
        with self._cond:
            pod = self._pods[(namespace, name)]
            change(pod)
            self._emit("MODIFIED", pod)
            return copy.deepcopy(pod)

    def delete_pod(self, namespace: str, name: str) -> Json:
        """Remove a pod and emit DELETED (with its last state, as the real server does)."""
        with self._cond:
            pod = self._pods.pop((namespace, name))
            self._emit("DELETED", pod)
            return copy.deepcopy(pod)

    def pods(self) -> list[Json]:
        with self._cond:
            return [copy.deepcopy(p) for p in self._pods.values()]

    # ---------------------------------------------------------------- faults

    def drop_watches(self) -> None:
        """Cut every open watch stream abruptly (a TCP close mid-stream, no final chunk)."""
        with self._cond:
            self._watch_epoch += 1
            self._cond.notify_all()

    def expire_resource_versions(self, *, mode: ExpireMode = "event", drop: bool = True) -> None:
        """Compact history: a watch from any resourceVersion seen so far gets 410 Gone.

        mode "event": HTTP 200 and an ERROR watch event with code 410 (what a real API server
        does); mode "http": an HTTP 410 response with a Status body. A list (or a watch
        without resourceVersion) still works and returns the current resourceVersion.
        With `drop` (default) open watches are cut too, so the client has to come back.
        """
        with self._cond:
            self._next_rv()
            self._oldest_valid_rv = self._resource_version
            self._events = [e for e in self._events if e.resource_version >= self._oldest_valid_rv]
            self._expire_mode = mode
        if drop:
            self.drop_watches()

    def fail_requests(self, status: int, *, path_prefix: str = "/", count: int | None = 1) -> None:
        """Answer the next `count` requests under `path_prefix` with `status` (None: until
        `clear_faults()`), with a Kubernetes Status body."""
        with self._cond:
            self._faults.append(_Fault(path_prefix, status, count))

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    # ---------------------------------------------------------------- request log

    @property
    def requests(self) -> list[RequestRecord]:
        with self._cond:
            return list(self._log)

    def requests_to(self, path: str, *, watch: bool | None = None) -> list[RequestRecord]:
        """Requests whose path equals `path`; `watch` True/False keeps only watches/non-watches."""
        return [r for r in self.requests if r.path == path and (watch is None or r.is_watch == watch)]

    def open_watches(self) -> int:
        """How many watch streams are open right now."""
        with self._cond:
            return self._open_watch_count

    def wait_for(self, predicate: Callable[[], bool], timeout_seconds: float = 5.0) -> bool:
        """Poll `predicate` (e.g. lambda: api.open_watches() == 1) until true or timeout."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    # ---------------------------------------------------------------- internals

    def _next_rv(self) -> int:
        self._resource_version += 1
        return self._resource_version

    def _emit(self, type_: str, pod: Json) -> None:
        rv = self._next_rv()
        pod["metadata"]["resourceVersion"] = str(rv)
        self._events.append(_Event(rv, type_, copy.deepcopy(pod)))
        self._cond.notify_all()

    def _take_fault(self, path: str) -> int | None:
        with self._cond:
            for fault in self._faults:
                if path.startswith(fault.path_prefix):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault.status
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeApiServer


def _hard_close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _peer_closed(conn: socket.socket) -> bool:
    """True when the client has closed its end (readable, and a peek returns EOF)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _status(code: int, reason: str, message: str) -> Json:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 410: "Expired", 500: "InternalError", 503: "ServiceUnavailable"}


def _field(obj: Json, dotted: str) -> str:
    cur: Any = obj
    for part in dotted.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def _matches_field_selector(obj: Json, selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if _field(obj, key.strip()) == value.strip():
                return False
        else:
            key, value = term.replace("==", "=").split("=", 1)
            if _field(obj, key.strip()) != value.strip():
                return False
    return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked watch streams and keep-alive, like the real server
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.fake._cond:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.fake._cond:
                self.server.fake._connections.discard(self.connection)

    # ------------------------------------------------------------ plumbing

    def _send_json(self, code: int, body: Json) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_status(self, code: int, message: str) -> None:
        self._send_json(code, _status(code, _REASONS.get(code, "Unknown"), message))

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # ------------------------------------------------------------ routing

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        fake = self.server.fake
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path.rstrip("/")
        with fake._cond:
            fake._log.append(RequestRecord("GET", path, query, time.monotonic()))
        fault = fake._take_fault(path)
        if fault is not None:
            self._send_status(fault, f"injected fault {fault} for {path}")
            return
        parts = path.strip("/").split("/")
        if parts == ["apis", "storage.k8s.io", "v1", "storageclasses"] or \
                parts in (["api", "v1", "persistentvolumeclaims"], ["api", "v1", "persistentvolumes"]):
            kind = parts[-1]
            with fake._cond:
                items = [copy.deepcopy(o) for _, o in sorted(fake._objects[kind].items())]
                rv = str(fake._resource_version)
            self._send_json(200, {"kind": "List", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": rv}, "items": items})
            return
        if parts[:2] != ["api", "v1"]:
            self._send_status(404, f"the server could not find the requested resource {path}")
            return
        rest = parts[2:]
        if rest == ["pods"]:
            self._pods(None, query)
        elif len(rest) == 3 and rest[0] == "namespaces" and rest[2] == "pods":
            self._pods(rest[1], query)
        elif len(rest) == 4 and rest[0] == "namespaces" and rest[2] == "pods":
            with fake._cond:
                pod = copy.deepcopy(fake._pods.get((rest[1], rest[3])))
            if pod is None:
                self._send_status(404, f'pods "{rest[3]}" not found')
            else:
                self._send_json(200, pod)
        elif rest == ["nodes"]:
            with fake._cond:
                items = [copy.deepcopy(n) for n in fake._nodes.values() if _matches_field_selector(n, query.get("fieldSelector"))]
                rv = str(fake._resource_version)
            self._send_json(200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items})
        elif len(rest) == 2 and rest[0] == "nodes":
            with fake._cond:
                node = copy.deepcopy(fake._nodes.get(rest[1]))
            if node is None:
                self._send_status(404, f'nodes "{rest[1]}" not found')
            else:
                self._send_json(200, node)
        else:
            self._send_status(404, f"the server could not find the requested resource {path}")

    def _selected(self, pod: Json, namespace: str | None, selector: str | None) -> bool:
        if namespace is not None and pod["metadata"].get("namespace") != namespace:
            return False
        return _matches_field_selector(pod, selector)

    def _pods(self, namespace: str | None, query: Mapping[str, str]) -> None:
        if query.get("watch") in ("true", "1"):
            self._watch(namespace, query)
            return
        fake = self.server.fake
        selector = query.get("fieldSelector")
        with fake._cond:
            items = [copy.deepcopy(p) for p in fake._pods.values() if self._selected(p, namespace, selector)]
            rv = str(fake._resource_version)
        self._send_json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items})

    def _watch(self, namespace: str | None, query: Mapping[str, str]) -> None:
        fake = self.server.fake
        selector = query.get("fieldSelector")
        timeout_seconds = float(query.get("timeoutSeconds") or _DEFAULT_WATCH_TIMEOUT_SECONDS)
        deadline = time.monotonic() + timeout_seconds
        rv_text = query.get("resourceVersion", "")
        try:
            start_rv = int(rv_text) if rv_text else 0
        except ValueError:
            self._send_status(400, f"invalid resourceVersion {rv_text!r}")
            return
        with fake._cond:
            epoch = fake._watch_epoch
            initial: list[tuple[str, Json]] = []
            gone = start_rv != 0 and start_rv < fake._oldest_valid_rv
            mode = fake._expire_mode
            if start_rv == 0:
                # "Any version": synthetic ADDED for what exists now, then live events.
                initial = [("ADDED", copy.deepcopy(p)) for p in fake._pods.values() if self._selected(p, namespace, selector)]
                cursor = fake._resource_version
            else:
                cursor = start_rv
            if not gone:
                fake._open_watch_count += 1
        gone_msg = f"too old resource version: {start_rv} ({fake._oldest_valid_rv})"
        if gone and mode == "http":
            self._send_status(410, gone_msg)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if gone:
            status = _status(410, "Expired", gone_msg)
            self._chunk(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
            self._chunk(b"")
            return
        abrupt = False
        try:
            for type_, pod in initial:
                self._chunk(json.dumps({"type": type_, "object": pod}).encode() + b"\n")
            while True:
                with fake._cond:
                    if fake._watch_epoch != epoch:  # dropped: nothing more goes out on this stream
                        abrupt = True
                        break
                    pending = [e for e in fake._events if e.resource_version > cursor and self._selected(e.pod, namespace, selector)]
                    cursor = fake._resource_version
                    if not pending:
                        if time.monotonic() >= deadline:
                            break
                        fake._cond.wait(_WATCH_POLL_SECONDS)
                        if _peer_closed(self.connection):  # the client went away
                            self.close_connection = True
                            return
                        continue
                for e in pending:
                    self._chunk(json.dumps({"type": e.type, "object": e.pod}).encode() + b"\n")
            if abrupt:
                self.close_connection = True
                _hard_close(self.connection)
            else:
                self._chunk(b"")  # the server-side timeout: a clean end of stream
        except OSError:
            self.close_connection = True
        finally:
            with fake._cond:
                fake._open_watch_count -= 1


# -------------------------------------------------------------------- object builders


def container_id_for(pod_uid: str, container_name: str) -> str:
    """The deterministic 64-hex container id `make_pod` gives a container (no runtime prefix)."""
    return hashlib.sha256(f"{pod_uid}/{container_name}".encode()).hexdigest()


def make_pod(
    name: str,
    *,
    namespace: str = "default",
    node_name: str | None = "node-a",
    uid: str | None = None,
    labels: Mapping[str, str] | None = None,
    owner: tuple[str, str] | None = None,
    containers: Sequence[tuple[str, Mapping[str, str], Mapping[str, str]]] = (("app", {"cpu": "100m", "memory": "64Mi"}, {}),),
    init_containers: Sequence[tuple[str, Mapping[str, str], Mapping[str, str]]] = (),
    qos: str | None = "Burstable",
    runtime: str = "containerd",
    started: bool = True,
) -> Json:
    """A pod in the API's JSON form. `containers` are (name, requests, limits).

    `owner` is (kind, name) of the controller, e.g. ("ReplicaSet", "web-7d9f8c6b5"); for a
    ReplicaSet the `pod-template-hash` label is set from the name's last dash-part, as the
    Deployment controller does. With `started`, container statuses carry
    `<runtime>://<container_id_for(uid, name)>`.
    """
    uid = uid or str(uuid.uuid4())
    meta: Json = {"name": name, "namespace": namespace, "uid": uid, "labels": dict(labels or {})}
    if owner is not None:
        kind, owner_name = owner
        api_version = "batch/v1" if kind in ("Job", "CronJob") else "apps/v1"
        meta["ownerReferences"] = [
            {"apiVersion": api_version, "kind": kind, "name": owner_name, "uid": str(uuid.uuid5(uuid.NAMESPACE_OID, owner_name)), "controller": True, "blockOwnerDeletion": True}
        ]
        if kind == "ReplicaSet" and "-" in owner_name:
            meta["labels"].setdefault("pod-template-hash", owner_name.rsplit("-", 1)[1])

    def spec_of(cs: Sequence[tuple[str, Mapping[str, str], Mapping[str, str]]]) -> list[Json]:
        out = []
        for cname, requests, limits in cs:
            resources: Json = {}
            if requests:
                resources["requests"] = dict(requests)
            if limits:
                resources["limits"] = dict(limits)
            out.append({"name": cname, "image": f"registry.example/{cname}:1", "resources": resources})
        return out

    def status_of(cs: Sequence[tuple[str, Mapping[str, str], Mapping[str, str]]]) -> list[Json]:
        return [
            {
                "name": cname,
                "containerID": f"{runtime}://{container_id_for(uid, cname)}",
                "image": f"registry.example/{cname}:1",
                "imageID": "",
                "ready": True,
                "restartCount": 0,
            }
            for cname, _, _ in cs
        ]

    spec: Json = {"containers": spec_of(containers)}
    if node_name is not None:
        spec["nodeName"] = node_name
    if init_containers:
        spec["initContainers"] = spec_of(init_containers)
    status: Json = {"phase": "Running" if started else "Pending"}
    if qos is not None:
        status["qosClass"] = qos
    if started:
        status["containerStatuses"] = status_of(containers)
        if init_containers:
            status["initContainerStatuses"] = status_of(init_containers)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def make_claim(name: str, *, namespace: str = "default", size: str = "10Gi",
               storage_class: str | None = "standard", access_modes: Sequence[str] = ("ReadWriteOnce",),
               uid: str | None = None) -> tuple[Json, Json]:
    """A bound claim and its volume (what a provisioner makes), in the API's JSON form."""
    uid = uid or str(uuid.uuid4())
    volume = f"pvc-{uid}"
    spec: Json = {"accessModes": list(access_modes), "resources": {"requests": {"storage": size}},
                  "volumeName": volume}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name, "namespace": namespace, "uid": uid},
           "spec": spec,
           "status": {"phase": "Bound", "accessModes": list(access_modes), "capacity": {"storage": size}}}
    pv = {"apiVersion": "v1", "kind": "PersistentVolume",
          "metadata": {"name": volume, "uid": str(uuid.uuid5(uuid.NAMESPACE_OID, volume))},
          "spec": {"capacity": {"storage": size}, "accessModes": list(access_modes),
                   "storageClassName": storage_class or "",
                   "claimRef": {"kind": "PersistentVolumeClaim", "namespace": namespace,
                                "name": name, "uid": uid},
                   "persistentVolumeReclaimPolicy": "Delete"},
          "status": {"phase": "Bound"}}
    return pvc, pv


def make_node(
    name: str = "node-a",
    *,
    uid: str | None = None,
    labels: Mapping[str, str] | None = None,
    capacity: Mapping[str, str] | None = None,
    allocatable: Mapping[str, str] | None = None,
) -> Json:
    """A node in the API's JSON form (defaults: 4 cores / 16Gi capacity, 3800m / 15Gi allocatable)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": uid or str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), "labels": dict(labels or {})},
        "status": {
            "capacity": dict(capacity or {"cpu": "4", "memory": "16Gi", "pods": "110"}),
            "allocatable": dict(allocatable or {"cpu": "3800m", "memory": "15Gi", "pods": "110"}),
        },
    }
