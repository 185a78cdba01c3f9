"""GPUs in Kubernetes objects: a container's GPU extended resources (limits win; a request
alone becomes the limit), a node's capacity and allocatable, in the API's JSON, in the client's
models and in the static file; and the agent's samples for them (otel_agent/gpu.py says which
resources are GPUs)."""

from __future__ import annotations

import pytest

from otel_agent.errors import ConfigError
from otel_agent.k8s.convert import node_meta, pod_meta
from otel_agent.k8s.static import parse_static, static_document
from tests.support.fake_apiserver import make_node, make_pod

MIG = "nvidia.com/mig-3g.40gb"


@pytest.mark.parametrize("requests,limits,want", [
    ({}, {"nvidia.com/gpu": "2"}, (("nvidia.com/gpu", 2.0),)),
    ({"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "1"}, (("nvidia.com/gpu", 1.0),)),
    ({"amd.com/gpu": "1"}, {}, (("amd.com/gpu", 1.0),)),  # a request alone: the limit too
    ({}, {MIG: "1", "nvidia.com/gpu": "1"}, (("nvidia.com/gpu", 1.0), (MIG, 1.0))),
    ({}, {"gpu.intel.com/i915": "1", "gpu.intel.com/millicores": "500"}, (("gpu.intel.com/i915", 1.0),)),
    ({"cpu": "1"}, {"example.com/fpga": "1", "nvidia.com/gpu": "0"}, ()),
])
def test_container_gpus(requests, limits, want):
    pod = make_pod("p", containers=(("c", requests, limits),))
    assert pod_meta(pod).containers[0].gpus == want


def test_node_gpus():
    node = make_node("g", capacity={"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "4", MIG: "2"},
                     allocatable={"cpu": "7", "memory": "60Gi", "nvidia.com/gpu": "3", MIG: "2"})
    m = node_meta(node)
    assert m.gpu_capacity == (("nvidia.com/gpu", 4.0), (MIG, 2.0))
    assert m.gpu_allocatable == (("nvidia.com/gpu", 3.0), (MIG, 2.0))
    assert node_meta(make_node("plain")).gpu_capacity == ()


def test_bad_gpu_quantity_is_the_pods_error():
    with pytest.raises(ValueError):
        pod_meta(make_pod("p", containers=(("c", {}, {"nvidia.com/gpu": "lots"}),)))


STATIC = """
node:
  name: gpu-node
  capacity: {cpu: "8", memory: 64Gi, nvidia.com/gpu: "4"}
  allocatable: {cpu: "7", memory: 60Gi, nvidia.com/gpu: "4"}
pods:
  - uid: u1
    name: train-0
    namespace: ml
    containers:
      - name: trainer
        limits: {cpu: "2", nvidia.com/gpu: "2"}
"""


def test_static_file_gpus_round_trip():
    node, pods = parse_static(STATIC)
    assert node.gpu_capacity == (("nvidia.com/gpu", 4.0),)
    assert pods["u1"].containers[0].gpus == (("nvidia.com/gpu", 2.0),)
    doc = static_document(node, pods.values())
    assert doc["node"]["capacity"]["nvidia.com/gpu"] == "4"
    assert doc["pods"][0]["containers"][0]["limits"]["nvidia.com/gpu"] == "2"


def test_static_file_refuses_other_extended_resources():
    with pytest.raises(ConfigError, match=r"limits.example.com/fpga: unknown key"):
        parse_static(STATIC.replace("nvidia.com/gpu: \"2\"", "example.com/fpga: \"2\""))


def test_static_claims(tmp_path):
    from otel_agent.k8s.static import StaticClaims, load_static, write_static
    from otel_agent.k8s.volumes import ClaimMeta
    node, pods = parse_static(STATIC)
    c = ClaimMeta("u9", "data", "ml", 20 * 2**30, "standard", "pvc-u9", "RWO", True)
    path = tmp_path / "meta.yaml"
    write_static(path, node, pods.values(), [c])
    assert load_static(path)[1].keys() == pods.keys()
    assert StaticClaims(path).claims() == [c]
    with pytest.raises(ConfigError, match=r"claims\[0\].capacity"):
        parse_static(STATIC + "claims:\n  - {uid: u, name: n, namespace: ml, capacity: lots}\n")
