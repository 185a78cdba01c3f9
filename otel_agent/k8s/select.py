"""Which metadata source the agent uses, decided once at start-up and said in one log line.

Users expect Kubernetes conventions to just work (in a pod with a service account, or with
KUBECONFIG, the API is used), and everyone else (the demo, a laptop, a bare VM) still gets
a working agent. An explicit choice always wins; an automatic one is explained, so nobody
has to guess why pods show up without names.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Mapping

from otel_agent.errors import ConfigError
from otel_agent.k8s.apiconfig import SERVICE_ACCOUNT_DIR, in_cluster, kubeconfig_path, load_api_client
from otel_agent.k8s.cgroup_only import CgroupOnlySource
from otel_agent.k8s.source import MetadataSource

log = logging.getLogger(__name__)

KINDS = ("kubernetes", "static", "cgroup")


def _node_name(node_name: str | None, env: Mapping[str, str]) -> str:
    name = node_name or env.get("NODE_NAME")
    if not name:
        raise ConfigError(
            "NODE_NAME is not set: the kubernetes metadata source watches only this node's pods; "
            "set it from the downward API (env NODE_NAME, valueFrom.fieldRef.fieldPath: spec.nodeName)"
        )
    return name


def select_source(
    *,
    kind: str | None,
    node_name: str | None,
    static_path: Path | None,
    pod_labels: Iterable[str] = (),
    env: Mapping[str, str] = os.environ,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> MetadataSource:
    """Build (not start) the metadata source.

    `kind` "kubernetes" | "static" | "cgroup" wins; None picks kubernetes when in a cluster
    (KUBERNETES_SERVICE_HOST + service-account token) or a kubeconfig exists (KUBECONFIG or
    ~/.kube/config), else static when `static_path` is given, else cgroup. Raises ConfigError
    for an unknown kind, a missing NODE_NAME, an unusable kubeconfig or static file.
    """
    pod_labels = tuple(pod_labels)
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"metadata source {kind!r} is not allowed (allowed: {', '.join(KINDS)})")
    if kind is None:
        if in_cluster(env, service_account_dir=service_account_dir):
            kind, why = "kubernetes", "running in a cluster (KUBERNETES_SERVICE_HOST and a service-account token)"
        elif (kc := kubeconfig_path(env)) is not None:
            kind, why = "kubernetes", f"kubeconfig {kc} found"
        elif static_path is not None:
            kind, why = "static", f"no Kubernetes config; static file {static_path} given"
        else:
            kind, why = "cgroup", "no Kubernetes config and no static file: pods are named by cgroup path only"
    else:
        why = "chosen explicitly"

    if kind == "kubernetes":
        from otel_agent.k8s.informer import KubernetesSource

        node = _node_name(node_name, env)
        client = load_api_client(env, service_account_dir=service_account_dir)
        source: MetadataSource = KubernetesSource(node, api_client=client, pod_labels=pod_labels)
        log.info("pod metadata: kubernetes API, pods on node %s (%s)", node, why)
    elif kind == "static":
        from otel_agent.k8s.static import StaticSource

        if static_path is None:
            raise ConfigError("metadata source 'static' needs a static metadata file path")
        source = StaticSource(Path(static_path), pod_labels=pod_labels)
        log.info("pod metadata: static file %s (%s)", static_path, why)
    else:
        source = CgroupOnlySource(node_name or env.get("NODE_NAME"))
        log.info("pod metadata: cgroup paths only (%s)", why)
    return source
