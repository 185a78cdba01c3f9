"""Pod and node metadata from the Kubernetes API: a small list+watch informer for one node.

The agent must never stall or die because the API server is slow, down, or has compacted
its history, and a sample that arrives after its pod was deleted must still be billed to
the right workload. So, in one daemon thread:

* list pods with `fieldSelector=spec.nodeName=<node>` (only this node's pods: the API
  server's load and our memory stay flat with cluster size), then watch from the list's
  resourceVersion and resume every later watch from the last resourceVersion seen, so no
  event is missed and nothing is re-listed needlessly;
* on 410 Gone (an HTTP 410, or an ERROR watch event with code 410 — what real API servers
  send after etcd compaction) relist; pods missing from the new list were deleted while we
  were not looking and go to the grace cache like any other deletion;
* a dropped watch (idle proxy, API server restart) is resumed at once; a failing API is
  retried with capped exponential backoff with jitter, so a fleet of agents does not
  hammer a recovering API server in lock-step. After an outage the watch resumes from the
  last resourceVersion too: the API server replays what happened meanwhile, as long as
  its history (etcd compaction, ~5 min by default) still reaches back that far;
* deleted pods stay resolvable for `grace_seconds`: cgroup and BPF readings of a pod that
  just died still arrive for a cycle or two and must still be attributed;
* the node is read with `read_node` at start and again every `node_refresh_seconds`
  (checked between watches, so at most `watch_timeout_seconds` late).

What a grace cache cannot do: a pod created and deleted entirely while the API was
unreachable is only learnt if the resumed watch replays it; once the server answers 410
and we relist, it was never seen and no list shows it. Its samples keep what the
cgroup path says (pod uid, container id); only an audit log or the kubelet could say more.

`pod()`/`node()`/`status()` are called from the collection thread and only take a lock.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.parse
from decimal import InvalidOperation
from typing import Any, Callable, Iterable

import kubernetes.client
import urllib3.exceptions
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from otel_agent.errors import ConfigError
from otel_agent.k8s.apiconfig import load_api_client
from otel_agent.k8s.convert import NODE_LABELS, node_meta, pod_meta, resource_version
from otel_agent.k8s.source import SourceStatus
from otel_agent.model import NodeMeta, PodMeta, PodUid

log = logging.getLogger(__name__)

_GONE = 410

# Errors that mean "the API is not answering properly right now": retry with backoff.
_TRANSIENT: tuple[type[BaseException], ...] = (ApiException, urllib3.exceptions.HTTPError, OSError)


def _describe(e: BaseException) -> str:
    """One short line for status() and logs."""
    if isinstance(e, ApiException):
        return f"HTTP {e.status} {e.reason or ''}".strip()
    if isinstance(e, urllib3.exceptions.MaxRetryError) and e.reason is not None:
        return _describe(e.reason)
    if isinstance(e, urllib3.exceptions.NewConnectionError):
        text = str(e)
        return text.split(": ", 1)[1] if ": " in text else text
    text = str(e) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


class KubernetesSource:
    """Metadata of the pods on `node_name` and of the node itself, kept current by list+watch."""

    name = "kubernetes"

    def __init__(
        self,
        node_name: str,
        *,
        api_client: kubernetes.client.ApiClient | None = None,
        pod_labels: Iterable[str] = (),
        node_labels: Iterable[str] = NODE_LABELS,
        grace_seconds: float = 300.0,
        backoff_initial_seconds: float = 1.0,
        backoff_cap_seconds: float = 30.0,
        watch_timeout_seconds: int = 300,
        node_refresh_seconds: float = 300.0,
        request_timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not node_name:
            raise ConfigError("NODE_NAME is empty: the kubernetes metadata source needs this node's name")
        if watch_timeout_seconds < 1:
            raise ConfigError(f"watch_timeout_seconds: {watch_timeout_seconds} is not allowed; use a whole number ≥ 1")
        self.node_name = node_name
        self._api_client = api_client if api_client is not None else load_api_client()
        self._core = _RawCoreV1(self._api_client)
        self._pod_labels = tuple(pod_labels)
        self._node_labels = tuple(node_labels)
        self._grace_seconds = grace_seconds
        self._backoff_initial_seconds = backoff_initial_seconds
        self._backoff_cap_seconds = backoff_cap_seconds
        self._watch_timeout_seconds = int(watch_timeout_seconds)
        self._node_refresh_seconds = node_refresh_seconds
        self._request_timeout_seconds = request_timeout_seconds
        self._clock = clock
        self._field_selector = f"spec.nodeName={node_name}"

        self._lock = threading.Lock()
        self._pods: dict[PodUid, PodMeta] = {}
        self._deleted: dict[PodUid, tuple[PodMeta, float]] = {}  # uid → (meta, expires at)
        self._node: NodeMeta | None = None
        self._error: str | None = None
        self._retry_in_seconds = 0.0
        self._resource_version: str | None = None
        self._skipped: set[PodUid] = set()

        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: _RawWatch | None = None
        self._node_due = 0.0
        self._events_in_watch = 0
        self._node_error: str | None = None
        #: How many times the pod list was (re)fetched: 1 after start, +1 per 410 or outage.
        self.relists = 0

    # ------------------------------------------------------------------ MetadataSource

    def start(self) -> None:
        """Start the background thread and return at once; the first list happens there."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"k8s-informer-{self.node_name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 2.0) -> None:
        """Stop watching (idempotent). Cuts an open watch so the thread exits promptly."""
        self._stop.set()
        thread, self._thread = self._thread, None
        deadline = time.monotonic() + timeout_seconds
        while True:
            # Watch.stop() cuts the socket only once the response has arrived, and a stream
            # generator that has not started yet clears the flag when it does: repeat it until
            # the thread is gone, so a stop racing a watch being opened is still prompt.
            w = self._watch
            if w is not None:
                w.stop()
            if thread is None or not thread.is_alive():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            thread.join(min(0.05, remaining))

    def pod(self, uid: PodUid) -> PodMeta | None:
        with self._lock:
            meta = self._pods.get(uid)
            if meta is not None:
                return meta
            entry = self._deleted.get(uid)
            if entry is None:
                return None
            if self._clock() >= entry[1]:
                del self._deleted[uid]
                return None
            return entry[0]

    def node(self) -> NodeMeta | None:
        with self._lock:
            return self._node

    def status(self) -> SourceStatus:
        with self._lock:
            n_pods, n_deleted, error = len(self._pods), len(self._deleted), self._error
            retry = self._retry_in_seconds
        if error is not None:
            known = f"; serving {n_pods} pods known before" if self._synced.is_set() else ""
            what = "API error" if error.startswith("HTTP ") else "API unreachable"
            return SourceStatus(False, f"{what}: {error}; retrying in {_seconds(retry)} s{known}")
        if not self._synced.is_set():
            return SourceStatus(False, f"starting: listing pods on node {self.node_name}")
        grace = f" (+{n_deleted} deleted, kept {self._grace_seconds:g} s)" if n_deleted else ""
        node_error = self._node_error
        no_node = f"; node unknown: read_node gave {node_error}" if node_error else ""
        return SourceStatus(True, f"watching {n_pods} pods on node {self.node_name}{grace}{no_node}")

    # ------------------------------------------------------------------ extras

    def wait_synced(self, timeout_seconds: float) -> bool:
        """Block until the first successful pod list (for tests, `once` and `doctor`)."""
        return self._synced.wait(timeout_seconds)

    def pods(self) -> list[PodMeta]:
        """The live pods (not the ones in the grace cache)."""
        with self._lock:
            return list(self._pods.values())

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        failures = 0
        gone_in_a_row = 0
        need_list = True
        while not self._stop.is_set():
            watch_started = self._clock()
            try:
                self._refresh_node_if_due()
                if need_list:
                    self._relist()
                    need_list = False
                with self._lock:
                    self._error = None  # the API answered (node read or list just now)
                failures = 0
                watch_started = self._clock()
                self._watch_once()
                gone_in_a_row = 0
            except ApiException as e:
                if e.status == _GONE:
                    log.info("pod watch: resourceVersion %s expired (410 Gone); relisting", self._resource_version)
                    need_list = True
                    gone_in_a_row = 1 if self._events_in_watch > 0 else gone_in_a_row + 1
                    if gone_in_a_row == 1:
                        continue
                    # 410 again right after a fresh list: a confused server; do not spin.
                failures += 1
                self._backoff(failures, e)
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError) as e:
                # The stream was cut (idle proxy, API server restart): resume from the last
                # resourceVersion at once, unless it keeps happening right away.
                if self._events_in_watch > 0:
                    gone_in_a_row = 0
                if self._events_in_watch > 0 or self._clock() - watch_started >= 1.0:
                    log.debug("pod watch dropped (%s); resuming from %s", _describe(e), self._resource_version)
                    continue
                failures += 1
                self._backoff(failures, e)
            except _TRANSIENT as e:
                # After an outage the watch resumes from the last resourceVersion: the API
                # server replays what happened meanwhile (pods created *and* deleted during
                # the outage included) or answers 410, and then we relist.
                failures += 1
                self._backoff(failures, e)
            except Exception as e:  # noqa: BLE001 - the thread boundary: never die, say why, start over
                log.exception("pod informer failed; relisting")
                failures += 1
                need_list = True
                self._backoff(failures, e)
        log.debug("pod informer for %s stopped", self.node_name)

    def _backoff(self, failures: int, e: BaseException) -> None:
        base = min(self._backoff_cap_seconds, self._backoff_initial_seconds * 2 ** (failures - 1))
        delay = base * random.uniform(0.5, 1.0)
        reason = _describe(e)
        with self._lock:
            first = self._error is None
            self._error = reason
            self._retry_in_seconds = delay
        (log.warning if first else log.debug)("Kubernetes API unreachable: %s; retrying in %s s", reason, _seconds(delay))
        # Read the node first on the next attempt: a cheap request that proves the API is
        # back (and clears the error) even when the resumed watch has nothing to say.
        self._node_due = 0.0
        self._stop.wait(delay)

    def _timeout(self, read_seconds: float) -> tuple[float, float]:
        return (self._request_timeout_seconds, read_seconds)

    def _refresh_node_if_due(self) -> None:
        now = self._clock()
        if now < self._node_due:
            return
        try:
            v1node = self._core.read_node(self.node_name,
                                          _request_timeout=self._timeout(self._request_timeout_seconds))
        except ApiException as e:
            if e.status in (401, 403, 404):
                # The API answers but will not tell us about the node: pods still work, so
                # say it once and try again at the next refresh instead of failing them.
                reason = _describe(e)
                if self._node_error != reason:
                    log.warning("cannot read node %s: %s; node metadata stays unknown", self.node_name, reason)
                self._node_error = reason
                self._node_due = now + self._node_refresh_seconds
                return
            raise
        self._node_error = None
        try:
            meta = node_meta(v1node, labels=self._node_labels)
        except (ValueError, InvalidOperation, TypeError) as e:
            log.warning("node %s has unreadable capacity: %s", self.node_name, e)
            meta = None
        with self._lock:
            if meta is not None:
                self._node = meta
        self._node_due = now + self._node_refresh_seconds

    def _convert(self, pod: Any) -> PodMeta | None:
        try:
            return pod_meta(pod, labels=self._pod_labels)
        except (ValueError, InvalidOperation, TypeError, AttributeError) as e:
            meta = pod.get("metadata") if isinstance(pod, dict) else None
            uid = PodUid(str(meta.get("uid", "?") if isinstance(meta, dict) else "?")[:64])
            if uid not in self._skipped:  # one entity failing is logged once, never fatal
                self._skipped.add(uid)
                log.warning("skipping pod %s: %s", uid, e)
            return None

    def _relist(self) -> None:
        resp = self._core.list_pod_for_all_namespaces(
            field_selector=self._field_selector,
            _request_timeout=self._timeout(self._request_timeout_seconds),
        )
        items = resp.get("items") if isinstance(resp, dict) else None
        fresh: dict[PodUid, PodMeta] = {}
        for item in items if isinstance(items, list) else ():
            meta = self._convert(item)
            if meta is not None:
                fresh[meta.uid] = meta
        expires = self._clock() + self._grace_seconds
        with self._lock:
            for uid, meta in self._pods.items():
                if uid not in fresh:  # deleted while we were not watching
                    self._deleted[uid] = (meta, expires)
            for uid in fresh:
                self._deleted.pop(uid, None)
            self._pods = fresh
            self._resource_version = resource_version(resp)
            self._error = None
            self._prune_locked()
        self.relists += 1
        self._synced.set()
        log.debug("listed %d pods on %s at resourceVersion %s", len(fresh), self.node_name, self._resource_version)

    def _watch_once(self) -> None:
        w = _RawWatch()
        self._watch = w
        self._events_in_watch = 0
        if self._stop.is_set():
            return
        stream = w.stream(
            self._core.list_pod_for_all_namespaces,
            field_selector=self._field_selector,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout_seconds,
            # Read timeout past the server-side timeout: catches a silently dead connection.
            _request_timeout=self._timeout(self._watch_timeout_seconds + self._request_timeout_seconds),
        )
        for event in stream:
            self._events_in_watch += 1
            self._apply(event)
            if self._stop.is_set():
                w.stop()
                break

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object")
        if kind == "BOOKMARK":
            rv = (event.get("raw_object") or {}).get("metadata", {}).get("resourceVersion")
            if rv:
                self._resource_version = rv
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED") or obj is None:
            return
        rv = resource_version(obj)
        meta = self._convert(obj)
        with self._lock:
            if rv:
                self._resource_version = rv
            if meta is None:
                return
            if kind == "DELETED":
                self._pods.pop(meta.uid, None)
                self._deleted[meta.uid] = (meta, self._clock() + self._grace_seconds)
                self._prune_locked()
            else:
                self._pods[meta.uid] = meta
                self._deleted.pop(meta.uid, None)

    def _prune_locked(self) -> None:
        now = self._clock()
        for uid in [u for u, (_, exp) in self._deleted.items() if exp <= now]:
            del self._deleted[uid]


class _RawWatch(watch.Watch):
    """A watch whose events carry the API's JSON (`object` is the plain dict): no client
    models are built (see k8s/convert.py). It still follows resourceVersion for its own
    reconnects, as the stock Watch does for the objects it deserializes."""

    def get_return_type(self, func):  # noqa: ARG002 (the client's signature)
        return None

    def unmarshal_event(self, data, return_type):
        js = super().unmarshal_event(data, None)
        if isinstance(js, dict) and js.get("type") in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
            rv = resource_version(js.get("object"))
            if rv:
                self.resource_version = rv
        return js


class _RawCoreV1:
    """The three calls the informer makes, as plain GETs through the client's ApiClient (its
    configuration, auth and connection pool), answering the API's JSON.

    Why not CoreV1Api: in client 37 every API method is a pydantic `validate_call` built on
    first use, which imports and builds the models of its return type (~20 MB that stays in
    the agent's memory, measured in bench/agent.py) although the agent keeps a handful of
    fields. A non-2xx answer raises ApiException with the status, as the generated methods do.
    """

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api_client = api_client

    def _get(self, path: str, query: list[tuple[str, Any]], timeout: Any):
        c = self.api_client
        method, url, headers, _, _ = c.param_serialize(
            method="GET", resource_path=path, query_params=query,
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        r = c.call_api(method, url, header_params=headers, _request_timeout=timeout)
        if not 200 <= r.status <= 299:
            body = r.read()
            raise ApiException(status=r.status, reason=r.reason,
                               body=body.decode("utf-8", "replace")[:2000] if body else None)
        return r

    def read_node(self, name: str, *, _request_timeout: Any = None) -> Any:
        return _json(self._get(f"/api/v1/nodes/{urllib.parse.quote(name, safe='')}", [],
                               _request_timeout))

    def list_pod_for_all_namespaces(self, *, field_selector: str | None = None,
                                    resource_version: str | None = None,
                                    allow_watch_bookmarks: bool | None = None,
                                    timeout_seconds: int | None = None, watch: bool | None = None,
                                    _request_timeout: Any = None, _preload_content: bool = True) -> Any:
        """The pod list as JSON; with watch=True (kubernetes.watch), the raw streaming response."""
        query: list[tuple[str, Any]] = []
        for key, value in (("fieldSelector", field_selector), ("resourceVersion", resource_version),
                           ("allowWatchBookmarks", allow_watch_bookmarks),
                           ("timeoutSeconds", timeout_seconds), ("watch", watch)):
            if value is not None:
                query.append((key, str(value).lower() if isinstance(value, bool) else value))
        r = self._get("/api/v1/pods", query, _request_timeout)
        return r.response if watch else _json(r)


def _json(resp: Any) -> Any:
    """The body of a `_preload_content=False` response, parsed; ValueError if it is not JSON."""
    try:
        return json.loads(resp.read())
    except (TypeError, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"the API server answered something that is not JSON: {e}") from e
    finally:
        release = getattr(getattr(resp, "response", resp), "release_conn", None)
        if release is not None:
            release()  # without preloading, urllib3 keeps the connection until told
