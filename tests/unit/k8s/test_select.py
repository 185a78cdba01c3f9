"""select_source: explicit choice wins, automatic choice follows Kubernetes conventions."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from otel_agent.errors import ConfigError
from otel_agent.k8s.apiconfig import load_api_client
from otel_agent.k8s.cgroup_only import CgroupOnlySource
from otel_agent.k8s.informer import KubernetesSource
from otel_agent.k8s.select import select_source
from otel_agent.k8s.static import StaticSource
from otel_agent.model import PodUid
from tests.support.fake_apiserver import FakeApiServer, make_node, make_pod

GOOD = Path(__file__).resolve().parents[2] / "fixtures" / "k8s" / "static-good.yaml"


def kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


def service_account(tmp_path: Path) -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t0ken")
    (sa / "ca.crt").write_text("not really a certificate")
    return sa


@pytest.fixture
def no_sa(tmp_path: Path) -> Path:
    return tmp_path / "no-service-account"


def test_nothing_configured_means_cgroup(tmp_path: Path, no_sa: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="otel_agent.k8s.select")
    src = select_source(kind=None, node_name="n1", static_path=None, env={"HOME": str(tmp_path)}, service_account_dir=no_sa)
    assert isinstance(src, CgroupOnlySource)
    assert src.pod(PodUid("x")) is None and src.node().name == "n1"  # type: ignore[union-attr]
    assert [r.getMessage() for r in caplog.records] == [
        "pod metadata: cgroup paths only (no Kubernetes config and no static file: pods are named by cgroup path only)"
    ]


def test_static_path_without_kubernetes_means_static(tmp_path: Path, no_sa: Path) -> None:
    src = select_source(kind=None, node_name=None, static_path=GOOD, env={"HOME": str(tmp_path)}, service_account_dir=no_sa)
    assert isinstance(src, StaticSource)


def test_kubeconfig_wins_over_static_and_reaches_the_api(tmp_path: Path, no_sa: Path) -> None:
    with FakeApiServer() as api:
        api.set_node(make_node("n1"))
        pod = api.add_pod(make_pod("p", node_name="n1"))
        env = {"KUBECONFIG": str(kubeconfig(tmp_path, api.url)), "NODE_NAME": "n1"}
        src = select_source(kind=None, node_name=None, static_path=GOOD, env=env, service_account_dir=no_sa)
        assert isinstance(src, KubernetesSource)
        src.start()
        try:
            assert src.wait_synced(5)
            assert src.pod(PodUid(pod["metadata"]["uid"])) is not None
        finally:
            src.stop()


def test_home_kube_config_is_found(tmp_path: Path, no_sa: Path) -> None:
    (tmp_path / ".kube").mkdir()
    kubeconfig(tmp_path / ".kube", "http://127.0.0.1:1").rename(tmp_path / ".kube" / "config")
    src = select_source(kind=None, node_name="n1", static_path=None, env={"HOME": str(tmp_path)}, service_account_dir=no_sa)
    assert isinstance(src, KubernetesSource)


def test_in_cluster(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "NODE_NAME": "n1", "HOME": str(tmp_path)}
    src = select_source(kind=None, node_name=None, static_path=None, env=env, service_account_dir=service_account(tmp_path))
    assert isinstance(src, KubernetesSource) and src.node_name == "n1"
    client = load_api_client(env, service_account_dir=tmp_path / "sa")
    assert client.configuration.host == "https://10.96.0.1:443"


def test_explicit_kind_wins(tmp_path: Path, no_sa: Path) -> None:
    env = {"KUBECONFIG": str(kubeconfig(tmp_path, "http://127.0.0.1:1")), "NODE_NAME": "n1"}
    assert isinstance(select_source(kind="cgroup", node_name=None, static_path=GOOD, env=env, service_account_dir=no_sa), CgroupOnlySource)
    assert isinstance(select_source(kind="static", node_name=None, static_path=GOOD, env=env, service_account_dir=no_sa), StaticSource)


@pytest.mark.parametrize(
    ("kind", "static", "env", "message"),
    [
        ("kubernetes", None, {"KUBECONFIG": "KC"}, "NODE_NAME is not set"),
        (None, None, {"KUBECONFIG": "KC"}, "downward API"),
        ("kubernetes", None, {"NODE_NAME": "n1"}, "no Kubernetes API configuration"),
        ("kubernetes", None, {"NODE_NAME": "n1", "KUBECONFIG": "MISSING"}, "missing-kubeconfig does not exist"),
        ("static", None, {}, "metadata source 'static' needs a static metadata file path"),
        ("static", "MISSING", {}, "does not exist"),
        ("k8s", None, {}, "metadata source 'k8s' is not allowed (allowed: kubernetes, static, cgroup)"),
    ],
)
def test_config_errors(tmp_path: Path, no_sa: Path, kind: str | None, static: str | None, env: dict, message: str) -> None:
    env = {"HOME": str(tmp_path), **env}
    if env.get("KUBECONFIG") == "KC":
        env["KUBECONFIG"] = str(kubeconfig(tmp_path, "http://127.0.0.1:1"))
    elif env.get("KUBECONFIG") == "MISSING":
        env["KUBECONFIG"] = str(tmp_path / "missing-kubeconfig")
    static_path = tmp_path / "missing.yaml" if static == "MISSING" else None
    with pytest.raises(ConfigError) as err:
        select_source(kind=kind, node_name=None, static_path=static_path, env=env, service_account_dir=no_sa)
    assert message in str(err.value)
