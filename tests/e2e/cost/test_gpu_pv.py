"""A GPU node and persistent volume claims end to end: the real agent (`otel-agent run`, Kubernetes metadata listed and
watched from the fake API server with the real `kubernetes` client) reads GPU extended
resources from the node and pod objects, exports them over real OTLP/gRPC to a real
`otel-agent cost serve`, and the reports (table, OpenCost JSON, FOCUS) bill them.

The node offers 3 whole NVIDIA GPUs and 7 MIG 1g.10gb slices of a fourth (4 GPUs at 0.95 an
hour); `ml/train` holds 2 GPUs, `ml/infer` one slice, `shop/web` none. Every level holds
from its first point until MAX_GAP_S after its last (ledger.py), and all of them arrive in the
same exports, so over the window the tenants' GPU-hours stand to the node's as their devices
do: 2/4, (1/7)/4; what no pod held (4 − 2 − 1/7 GPUs) is __idle__; and allocated + idle is the
node's GPU cost to the micro-unit. The same agent runs with --cluster-objects: the claim
`ml/checkpoints` (100 GiB, mounted by train-0) and `ml/datasets` (50 GiB, mounted by no pod)
are billed to `ml` by the GiB-hour, the second under `__unmounted__`.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.e2e.faults.conftest import synth  # noqa: F401 - the synthetic node fixture
from tests.support.fake_apiserver import FakeApiServer, make_claim, make_node, make_pod
from tests.support.pipeline import CostProcessor, agent_process, write_kubeconfig

pytestmark = [pytest.mark.kernel, pytest.mark.e2e]

GPU_HOUR = 0.95  # tests/unit/cost/ledger_helpers.PRICING_YAML
STORAGE_GIB_HOUR = 0.0000548  # the same file's storage_gib_hour (no storage_classes there)
GIB = 2**30
NODE_GPUS = 3 + 7 / 7
MIG = "nvidia.com/mig-1g.10gb"


def _pod_json(synth_pod, limits: dict[str, str]) -> dict:
    pod = make_pod(synth_pod.name, namespace=synth_pod.namespace, uid=synth_pod.uid,
                   containers=tuple((c.name, {"cpu": "100m"}, limits) for c in synth_pod.containers))
    for status, c in zip(pod["status"]["containerStatuses"], synth_pod.containers):
        status["containerID"] = f"containerd://{c.id}"
    return pod


def _report(db, fmt: str, *extra: str) -> str:
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    window = f"{(now - timedelta(days=1)).isoformat()},{(now + timedelta(days=1)).isoformat()}"
    out = subprocess.run([sys.executable, "-m", "otel_agent.cost.cli", "report", "--ledger",
                          f"sqlite:///{db}", "--window", window.replace("+00:00", "Z"),
                          "--by", "namespace", "--model", "chargeback", "--share-idle", "none",
                          "--format", fmt, *extra], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.timeout(240)
def test_gpu_node_pods_and_idle_gpus_billed(synth, tmp_path):  # noqa: F811
    train = synth.add_pod("ml", "train-0", containers=("trainer",))
    infer = synth.add_pod("ml", "infer-0", containers=("server",))
    web = synth.add_pod("shop", "web-0", containers=("web",))
    cost = CostProcessor(tmp_path).start()
    try:
        with FakeApiServer() as api:
            api.set_node(make_node("node-a", capacity={"cpu": "4", "memory": "16Gi",
                                                       "nvidia.com/gpu": "3", MIG: "7"},
                                   allocatable={"cpu": "3800m", "memory": "15Gi",
                                                "nvidia.com/gpu": "3", MIG: "7"}))
            train_json = _pod_json(train, {"nvidia.com/gpu": "2"})
            train_json["spec"]["volumes"] = [{"name": "ckpt",
                                              "persistentVolumeClaim": {"claimName": "checkpoints"}}]
            api.add_pod(train_json)
            for name, size in (("checkpoints", "100Gi"), ("datasets", "50Gi")):
                pvc, pv = make_claim(name, namespace="ml", size=size, storage_class="gp3")
                api.put_object("persistentvolumeclaims", pvc)
                api.put_object("persistentvolumes", pv)
            api.add_pod(_pod_json(infer, {MIG: "1"}))
            api.add_pod(_pod_json(web, {}))
            kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
            agent = agent_process(tmp_path, kubepods=synth.kubepods,
                                  endpoint=f"http://127.0.0.1:{cost.port}",
                                  metadata=("--metadata", "kubernetes", "--cluster-objects", "on"),
                                  env_extra={"KUBECONFIG": str(kubeconfig), "NODE_NAME": "node-a"}).start()
            try:
                time.sleep(8)
                assert agent.alive(), agent.log()
            finally:
                assert agent.stop() == 0, agent.log()
        cost.wait_quiet()
    finally:
        assert cost.stop() == 0, cost.log()

    data = json.loads(_report(cost.db, "json"))
    allocs = {}
    for step in data["data"]:
        for name, a in step.items():
            allocs[name] = a
    node_gpu_hours = sum(a["gpuHours"] for a in allocs.values())
    assert node_gpu_hours > 0
    # the node's GPU-hours are its 4 GPUs × the time its capacity was held
    held_h = node_gpu_hours / NODE_GPUS
    assert 300 / 3600 < held_h < 400 / 3600  # ~8 s of exports + 300 s hold
    assert allocs["ml"]["gpuHours"] == pytest.approx((2 + 1 / 7) * held_h, rel=0.01)
    assert allocs["__idle__"]["gpuHours"] == pytest.approx((NODE_GPUS - 2 - 1 / 7) * held_h, rel=0.01)
    assert allocs["shop"]["gpuHours"] == 0 and allocs["shop"]["gpuCost"] == 0
    for name in ("ml", "__idle__"):
        assert allocs[name]["gpuCost"] == pytest.approx(allocs[name]["gpuHours"] * GPU_HOUR, abs=2e-6)
    total_gpu = sum(a["gpuCost"] for a in allocs.values())
    assert total_gpu == pytest.approx(NODE_GPUS * held_h * GPU_HOUR, abs=2e-6)

    # claims: billed to their namespace by GiB-hour while they exist; the one no running pod
    # mounts under __unmounted__ (reported by this agent: --cluster-objects)
    wl = {}
    for step in json.loads(_report(cost.db, "json", "--by", "workload"))["data"]:
        wl.update(step)
    for name, gib in (("ml/checkpoints", 100), ("ml/__unmounted__", 50)):
        assert wl[name]["pvByteHours"] / GIB == pytest.approx(gib * held_h, rel=0.02), name
        assert wl[name]["pvCost"] == pytest.approx(wl[name]["pvByteHours"] / GIB * STORAGE_GIB_HOUR,
                                                   abs=2e-6)
    assert allocs["ml"]["pvCost"] == pytest.approx(wl["ml/checkpoints"]["pvCost"]
                                                   + wl["ml/__unmounted__"]["pvCost"], abs=2e-6)

    table = _report(cost.db, "table")
    head = table.splitlines()[1].split()
    assert "GPU-h" in head and "GPU" in head, table
    assert "(reconciled; CPU, memory and GPUs" in table, table
    print(table)

    focus = list(csv.DictReader(io.StringIO(_report(cost.db, "focus"))))
    gpu_rows = [r for r in focus if r.get("x_CostComponent") == "gpu"]
    assert gpu_rows, focus[:3]
    by_name = {}
    for r in gpu_rows:
        name = r.get("x_AllocatedResourceName") or r.get("AllocatedResourceName")
        by_name[name] = by_name.get(name, 0.0) + float(r["EffectiveCost"])
    assert by_name["ml"] == pytest.approx(allocs["ml"]["gpuCost"], abs=2e-6)
    assert by_name["__idle__"] == pytest.approx(allocs["__idle__"]["gpuCost"], abs=2e-6)
