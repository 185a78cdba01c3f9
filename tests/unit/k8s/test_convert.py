"""pod_meta / node_meta on checked-in API objects (as `kubectl get -o json` prints them).

Expected values are worked out by hand from the fixture files, not from the code.
"""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes.client
import pytest

from otel_agent.k8s.convert import node_meta, pod_meta, strip_runtime_prefix, workload_attributes
from otel_agent.model import ContainerMeta, QosClass

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "k8s"
Mi = 2**20
Gi = 2**30


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def as_v1pod(doc: dict) -> kubernetes.client.V1Pod:
    # What the informer gets: the client's own deserialization of the same JSON.
    return kubernetes.client.ApiClient().deserialize(json.dumps(doc), "V1Pod", "application/json")


WORKLOADS = [
    ("deployment.json", {"k8s.replicaset.name": "checkout-5c8f7b9d4", "k8s.deployment.name": "checkout"}),
    ("statefulset.json", {"k8s.statefulset.name": "postgres"}),
    ("daemonset.json", {"k8s.daemonset.name": "otel-agent"}),
    ("job.json", {"k8s.job.name": "db-migrate-2"}),  # not a CronJob: "2" is no scheduled time
    ("cronjob.json", {"k8s.job.name": "nightly-report-28577340", "k8s.cronjob.name": "nightly-report"}),
    ("bare-besteffort.json", {}),
    ("init-containers.json", {"k8s.statefulset.name": "web"}),
    ("pending-no-status.json", {"k8s.replicaset.name": "api-6b5d4c3f2"}),  # no pod-template-hash label
]


@pytest.mark.parametrize(("fixture", "workload"), WORKLOADS)
def test_workload_attributes(fixture: str, workload: dict) -> None:
    assert dict(pod_meta(load(f"pods/{fixture}")).workload) == workload


@pytest.mark.parametrize("fixture", [f for f, _ in WORKLOADS])
def test_dict_and_model_forms_agree(fixture: str) -> None:
    doc = load(f"pods/{fixture}")
    assert pod_meta(doc, labels=("*",)) == pod_meta(as_v1pod(doc), labels=("*",))


def test_deployment_pod() -> None:
    meta = pod_meta(as_v1pod(load("pods/deployment.json")), labels=("team", "app", "absent"))
    assert meta.uid == "0f6c3d52-9b1e-4c7a-8d2f-5e4a3b2c1d0e"
    assert (meta.name, meta.namespace) == ("checkout-5c8f7b9d4-x2k9p", "shop")
    assert meta.node_name == "ip-10-0-1-23.eu-west-1.compute.internal"
    assert meta.labels == {"team": "payments", "app": "checkout"}
    assert meta.qos is QosClass.BURSTABLE
    assert meta.containers == (
        ContainerMeta("checkout", "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0", 0.5, 1.0, 256 * Mi, 512 * Mi),
        ContainerMeta("envoy", "9a8b7c6d5e4f30211203f4e5d6c7b8a99887766554433221100ffeeddccbbaa9", 0.1, None, 64 * Mi, 128 * Mi),
    )
    assert meta.container_by_id("9a8b7c6d5e4f30211203f4e5d6c7b8a99887766554433221100ffeeddccbbaa9").name == "envoy"  # type: ignore[union-attr]


def test_labels_kept_only_when_configured() -> None:
    doc = load("pods/deployment.json")
    assert pod_meta(doc).labels == {}
    assert pod_meta(doc, labels=("*",)).labels == {"app": "checkout", "team": "payments", "pod-template-hash": "5c8f7b9d4"}


@pytest.mark.parametrize(
    ("fixture", "container_id"),
    [
        ("statefulset.json", "c0ffee0000000000000000000000000000000000000000000000000000000001"),  # cri-o://
        ("daemonset.json", "d0c4e50000000000000000000000000000000000000000000000000000000002"),  # docker://
    ],
)
def test_runtime_prefixes_are_stripped(fixture: str, container_id: str) -> None:
    assert pod_meta(load(f"pods/{fixture}")).containers[0].container_id == container_id


def test_guaranteed_and_decimal_si_quantities() -> None:
    pg = pod_meta(load("pods/statefulset.json"))
    assert pg.qos is QosClass.GUARANTEED
    assert pg.containers[0] == ContainerMeta("postgres", "c0ffee0000000000000000000000000000000000000000000000000000000001", 2.0, 2.0, 4 * Gi, 4 * Gi)
    agent = pod_meta(load("pods/daemonset.json")).containers[0]
    assert (agent.cpu_request_cores, agent.memory_request_bytes, agent.memory_limit_bytes) == (0.05, 200_000_000, 300_000_000)


def test_init_containers_including_sidecars() -> None:
    meta = pod_meta(load("pods/init-containers.json"))
    assert [c.name for c in meta.containers] == ["fetch-config", "istio-proxy", "web"]
    ids = {c.name: c.container_id for c in meta.containers}
    assert ids["fetch-config"] == "1111000000000000000000000000000000000000000000000000000000000006"
    assert ids["istio-proxy"] == "2222000000000000000000000000000000000000000000000000000000000007"
    web = meta.containers[2]
    assert (web.cpu_request_cores, web.memory_request_bytes) == (0.25, 100_000_000)


def test_missing_statuses_and_requests_absent() -> None:
    meta = pod_meta(load("pods/pending-no-status.json"))
    assert meta.qos is None
    assert meta.containers == (ContainerMeta("api", None, None, 0.3, None, Gi),)
    bare = pod_meta(load("pods/bare-besteffort.json"))
    assert bare.qos is QosClass.BEST_EFFORT
    assert bare.containers == (ContainerMeta("shell", "dead000000000000000000000000000000000000000000000000000000000005"),)


def test_node_meta() -> None:
    node = node_meta(load("node.json"))
    assert node.name == "ip-10-0-1-23.eu-west-1.compute.internal"
    assert node.uid == "9a8b7c6d-aaaa-4bbb-8ccc-ddddeeeeffff"
    assert node.cpu_capacity_cores == 4.0
    assert node.cpu_allocatable_cores == 3.92
    assert node.memory_capacity_bytes == 15896204 * 1024
    assert node.memory_allocatable_bytes == 14879372 * 1024
    assert node.labels == {
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "m5.xlarge",
        "topology.kubernetes.io/region": "eu-west-1",
        "topology.kubernetes.io/zone": "eu-west-1a",
        "karpenter.sh/capacity-type": "spot",
    }
    assert node_meta(load("node.json"), labels=("*",)).labels["eks.amazonaws.com/nodegroup"] == "general"


@pytest.mark.parametrize(
    ("kind", "name", "labels", "expected"),
    [
        ("ReplicaSet", "web-abc12", {"pod-template-hash": "abc12"}, {"k8s.replicaset.name": "web-abc12", "k8s.deployment.name": "web"}),
        ("ReplicaSet", "web-abc12", {"pod-template-hash": "zzz"}, {"k8s.replicaset.name": "web-abc12"}),
        ("ReplicaSet", "abc12", {"pod-template-hash": "abc12"}, {"k8s.replicaset.name": "abc12"}),
        ("Job", "backup-1234567", {}, {"k8s.job.name": "backup-1234567"}),  # 7 digits: not a schedule
        ("Job", "a-b-29000000", {}, {"k8s.job.name": "a-b-29000000", "k8s.cronjob.name": "a-b"}),
        ("CronJob", "nightly", {}, {"k8s.cronjob.name": "nightly"}),
        ("Node", "node-a", {}, {}),  # static (mirror) pods
        (None, None, {}, {}),
    ],
)
def test_workload_heuristics(kind: str | None, name: str | None, labels: dict, expected: dict) -> None:
    assert workload_attributes(kind, name, labels) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("containerd://ab", "ab"), ("cri-o://ab", "ab"), ("docker://ab", "ab"), ("other://ab", "ab"), ("ab", "ab"), ("", None), (None, None)],
)
def test_strip_runtime_prefix(raw: str | None, expected: str | None) -> None:
    assert strip_runtime_prefix(raw) == expected


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "Infinity", "NaN"])
def test_non_finite_quantities_are_refused(value) -> None:
    # A YAML `.inf` once reached int() and raised OverflowError out of the static loader.
    from otel_agent.k8s.convert import is_quantity, quantity_bytes, quantity_cores

    assert not is_quantity(value)
    with pytest.raises(ValueError, match="not finite|quantity"):
        quantity_bytes(value)
    with pytest.raises(ValueError, match="not finite|quantity"):
        quantity_cores(value)
