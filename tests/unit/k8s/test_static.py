"""The static metadata file: what a good file yields, and that every bad one is named precisely."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_agent.errors import ConfigError
from otel_agent.k8s.convert import quantity_bytes, quantity_cores
from otel_agent.k8s.source import MetadataSource
from otel_agent.k8s.static import StaticSource, format_bytes, format_cores, write_static
from otel_agent.model import ContainerMeta, NodeMeta, PodMeta, PodUid, QosClass

GOOD = Path(__file__).resolve().parents[2] / "fixtures" / "k8s" / "static-good.yaml"
Mi = 2**20
Gi = 2**30


def test_good_file() -> None:
    src = StaticSource(GOOD)
    assert isinstance(src, MetadataSource)
    src.start()
    assert src.node() == NodeMeta(
        name="demo-node",
        labels={"node.kubernetes.io/instance-type": "m5.xlarge", "topology.kubernetes.io/zone": "eu-west-1a"},
        cpu_capacity_cores=2.0,
        cpu_allocatable_cores=1.8,
        memory_capacity_bytes=24 * Gi,
        memory_allocatable_bytes=22 * Gi,
    )
    web = src.pod(PodUid("0f6c3d52-9b1e-4c7a-8d2f-5e4a3b2c1d0e"))
    assert web == PodMeta(
        uid=PodUid("0f6c3d52-9b1e-4c7a-8d2f-5e4a3b2c1d0e"),
        name="web-7d9f8-abcde",
        namespace="shop",
        node_name="demo-node",
        labels={"app": "web", "team": "payments"},
        workload={"k8s.deployment.name": "web"},
        containers=(
            ContainerMeta("web", "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0", 0.5, 1.0, 256 * Mi, 512 * Mi),
            ContainerMeta("sidecar", "9a8b7c6d"),  # runtime prefix dropped
        ),
        qos=QosClass.BURSTABLE,
    )
    report = src.pod(PodUid("1a2b3c4d-1111-4222-8333-444455556666"))
    assert report is not None
    assert report.workload == {"k8s.job.name": "report-28577340", "k8s.cronjob.name": "report"}
    assert report.containers[0] == ContainerMeta("report", "cafe0004", 1.0, 1.0, 10**9, 10**9)
    bare = src.pod(PodUid("2c3d4e5f-2222-4333-8444-555566667777"))
    assert bare is not None and bare.containers == () and bare.qos is None and bare.workload == {}
    assert src.pod(PodUid("nope")) is None
    st = src.status()
    assert st.ok and st.detail == f"3 pods on node demo-node from {GOOD}"
    src.stop()


def test_configured_labels_only() -> None:
    web = StaticSource(GOOD, pod_labels=("team",)).pod(PodUid("0f6c3d52-9b1e-4c7a-8d2f-5e4a3b2c1d0e"))
    assert web is not None and web.labels == {"team": "payments"}


POD = "pods:\n  - {uid: u1, name: p, namespace: n, %s}\n"

BAD = [
    ("pods:\n  - {uid: u1, name: p, namespace: n, containers: [{name: c, requests: {cpu: 5 cores}}]}\n",
     "pods[0].containers[0].requests.cpu: '5 cores' is not a Kubernetes quantity"),
    ("pods:\n  - {uid: u1, name: p, namespace: n}\n  - {uid: u2, name: q, namespace: n, containers: [{name: a}, {name: b, limits: {memory: lots}}]}\n",
     "pods[1].containers[1].limits.memory: 'lots' is not a Kubernetes quantity"),
    ("pods:\n  - {uid: u1, name: p, namespace: n, containers: [{name: c, requests: {gpu: 1}}]}\n",
     "pods[0].containers[0].requests.gpu: unknown key (allowed: cpu, memory)"),
    (POD % "qos: Gold", "pods[0].qos: 'Gold' is not allowed (allowed: Guaranteed, Burstable, BestEffort)"),
    (POD % "owner: {kind: Rollout, name: x}",
     "pods[0].owner.kind: 'Rollout' is not allowed (allowed: Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob)"),
    (POD % "owner: {kind: Deployment}", "pods[0].owner.name: is required"),
    ("pods:\n  - {name: p, namespace: n}\n", "pods[0].uid: is required"),
    ("pods:\n  - {uid: u1, name: p}\n", "pods[0].namespace: is required"),
    ("pods:\n  - {uid: u1, name: p, namespace: n}\n  - {uid: u1, name: q, namespace: n}\n", "pods[1].uid: 'u1' repeats pods[0].uid"),
    (POD % "labels: {version: 2}", "pods[0].labels.version: label values are strings, got 2; quote it"),
    (POD % "colour: red", "pods[0].colour: unknown key (allowed: uid, name, namespace, labels, owner, qos, containers)"),
    (POD % "containers: {name: c}", "pods[0].containers: must be a list"),
    (POD % "containers: [{id: abc}]", "pods[0].containers[0].name: is required"),
    (POD % "containers: [{name: c}, {name: c}]", "pods[0].containers[1].name: 'c' repeats pods[0].containers[0].name"),
    ("node: {capacity: {cpu: 2}}\n", "node.name: is required"),
    ("node: {name: n, allocatable: {memory: 22 GiB}}\n", "node.allocatable.memory: '22 GiB' is not a Kubernetes quantity"),
    ("node: demo\n", "node: must be a mapping"),
    ("pods: {uid: u1}\n", "pods: must be a list"),
    ("podz: []\n", "podz: unknown key (allowed: node, pods, claims)"),
    ("- just a list\n", "(top level): must be a mapping with keys node, pods"),
    ("pods: [\n", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_files_name_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "meta.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        StaticSource(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"static metadata file .*nope\.yaml: does not exist"):
        StaticSource(tmp_path / "nope.yaml")


def test_empty_file_means_no_pods(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    src = StaticSource(path)
    assert src.node() is None and src.status().ok


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    node = NodeMeta("n1", uid="x", labels={"topology.kubernetes.io/zone": "z"}, cpu_capacity_cores=2.0, cpu_allocatable_cores=1.75,
                    memory_capacity_bytes=24 * Gi, memory_allocatable_bytes=22 * Gi + 5)
    pods = [
        PodMeta(PodUid("u1"), "web-1", "shop", node_name="n1", labels={"team": "a"}, workload={"k8s.statefulset.name": "web"},
                containers=(ContainerMeta("c", "abc", 0.25, 1.0, 100 * Mi, None),), qos=QosClass.BURSTABLE),
        PodMeta(PodUid("u2"), "cron-1", "ops", node_name="n1", workload={"k8s.cronjob.name": "cron"}),
        PodMeta(PodUid("u3"), "bare", "default", node_name="n1"),
    ]
    path = tmp_path / "meta.yaml"
    write_static(path, node, pods)
    src = StaticSource(path)
    assert src.node() == node
    assert [src.pod(p.uid) for p in pods] == pods
    assert [p.name for p in tmp_path.iterdir()] == ["meta.yaml"]  # no temporary file left behind


@pytest.mark.parametrize(("cores", "text"), [(2.0, "2"), (1.8, "1800m"), (0.0005, "0"), (0.001, "1m")])
def test_format_cores(cores: float, text: str) -> None:
    assert format_cores(cores) == text


@pytest.mark.parametrize(("n", "text"), [(24 * Gi, "24Gi"), (512 * Mi, "512Mi"), (1536, "1536"), (3072, "3Ki"), (1000, "1000"), (0, "0")])
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_reload_on_change_and_keep_last_good(tmp_path: Path) -> None:
    path = tmp_path / "meta.yaml"
    shutil.copy(GOOD, path)
    src = StaticSource(path, reload_check_seconds=0.0)
    assert src.pod(PodUid("2c3d4e5f-2222-4333-8444-555566667777")) is not None

    path.write_text("pods:\n  - {uid: new, name: p, namespace: n}\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    assert src.pod(PodUid("new")) is not None
    assert src.pod(PodUid("2c3d4e5f-2222-4333-8444-555566667777")) is None

    path.write_text("pods:\n  - {uid: broken, name: p}\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000_000))
    st = src.status()
    assert not st.ok and "pods[0].namespace: is required" in st.detail and "last good version (1 pods)" in st.detail
    assert src.pod(PodUid("new")) is not None


@given(st.integers(min_value=0, max_value=2**50))
def test_written_bytes_read_back_exactly(n_bytes: int) -> None:
    assert quantity_bytes(format_bytes(n_bytes)) == n_bytes


@given(st.integers(min_value=0, max_value=10**7))
def test_written_millicores_read_back_exactly(millicores: int) -> None:
    assert quantity_cores(format_cores(millicores / 1000)) == millicores / 1000


def test_rewrite_by_write_static_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "meta.yaml"
    a = PodMeta(PodUid("a"), "a", "n")
    write_static(path, None, [a])
    src = StaticSource(path, reload_check_seconds=0.0)
    b = PodMeta(PodUid("b"), "b", "n")
    write_static(path, None, [a, b])
    assert src.pod(PodUid("b")) == b
