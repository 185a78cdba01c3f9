"""Where the Kubernetes API is and how to authenticate: in-cluster or a kubeconfig.

Kept apart from the informer so that `select_source` can decide "is Kubernetes configured
here?" without connecting, and so that a missing piece is reported up front as a ConfigError
naming it, not as a stack trace from a background thread minutes later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import kubernetes.client
import kubernetes.config
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader

from otel_agent.errors import ConfigError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster(env: Mapping[str, str] = os.environ, *, service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> bool:
    """Running in a pod with a service account: KUBERNETES_SERVICE_HOST and a token file."""
    return bool(env.get("KUBERNETES_SERVICE_HOST")) and (service_account_dir / "token").is_file()


def kubeconfig_path(env: Mapping[str, str] = os.environ) -> str | None:
    """KUBECONFIG (may be a `:`-separated list) if set, else ~/.kube/config if it exists."""
    if env.get("KUBECONFIG"):
        return env["KUBECONFIG"]
    home = env.get("HOME")
    default = (Path(home) if home else Path.home()) / ".kube" / "config"
    return str(default) if default.is_file() else None


def load_api_client(env: Mapping[str, str] = os.environ, *, service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> kubernetes.client.ApiClient:
    """An ApiClient from the in-cluster service account, else from the kubeconfig.

    Raises ConfigError naming what is missing or broken; never connects.
    """
    if in_cluster(env, service_account_dir=service_account_dir):
        cfg = kubernetes.client.Configuration()
        try:
            InClusterConfigLoader(
                token_filename=str(service_account_dir / "token"),
                cert_filename=str(service_account_dir / "ca.crt"),
                environ=env,
            ).load_and_set(cfg)
        except ConfigException as e:
            raise ConfigError(f"in-cluster Kubernetes config ({service_account_dir}): {e}") from e
        return kubernetes.client.ApiClient(cfg)
    path = kubeconfig_path(env)
    if path is None:
        raise ConfigError(
            "no Kubernetes API configuration: not in a cluster (needs KUBERNETES_SERVICE_HOST and "
            f"{service_account_dir / 'token'}) and no kubeconfig (KUBECONFIG is unset and "
            "~/.kube/config does not exist); use the static or cgroup metadata source instead"
        )
    missing = [p for p in path.split(os.pathsep) if p and not Path(p).is_file()]
    if missing:
        raise ConfigError(f"KUBECONFIG: {', '.join(missing)} does not exist (set KUBECONFIG to a kubeconfig file, or unset it)")
    try:
        return kubernetes.config.new_client_from_config(config_file=path)
    except (ConfigException, OSError, ValueError) as e:
        raise ConfigError(f"kubeconfig {path}: {e}") from e
