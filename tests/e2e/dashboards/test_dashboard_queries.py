"""Every query of every shipped dashboard, on a real Prometheus holding our own export.

The data is ours end to end, as far as this machine allows:
- the real agent (`Agent.collect` + `export`, its own OTLP/gRPC exporter to a real gRPC
  receiver) on a copy of a fixture cgroup tree (three pods on containerd, CRI-O and Docker, a
  pure v2 node with memory, io and PSI: this host binds memory to cgroup v1), three cycles
  with the counters in the files moved forward between them, so rates are not zero;
- eBPF counters as the map reader hands them over (RawCounters through the real decoder, the
  agent's pod roll-up and converter) with map health samples; the kernel tier proves the
  values themselves;
- the real cost processor: the agent's requests decoded and written into a SQLite ledger,
  refreshed, and pushed twice as OTLP by `start_pusher` (month-to-date cost per namespace).
Those OTLP requests go through tests/support/remote_write.py (the gateway's
`prometheus_remote_write` settings, read from collector-config/gateway.yaml) into Prometheus
2.42's remote-write receiver. Then each panel query, with the template variables set to real
values from the data (and again to "All"), must parse, return series, and return exactly the
labels the dashboard groups by. A renamed metric, a dropped label or a broken query fails here.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from otel_agent.agent import Agent
from otel_agent.config import AgentConfig
from otel_agent.cost.ingest import decode
from otel_agent.cost.otlp_out import start_pusher
from otel_agent.cost.pricing import default_pricing
from otel_agent.cost.store import Store
from otel_agent.ebpf.collector import BpfReading
from otel_agent.ebpf.decode import RawCounters, to_samples
from otel_agent.k8s.source import SourceStatus
from otel_agent.metrics import ATTR_BPF_MAP
from otel_agent.model import (CgroupId, ContainerMeta, NodeMeta, PodMeta, PodUid, QosClass,
                              Sample)
from otel_agent.otlp.exporter import make_exporter
from scripts.dashboards import DASHBOARDS, Target
from tests.e2e.dashboards.panels import check_target, substitute, targets
from tests.support import remote_write as rw
from tests.support.prometheus import Prometheus
from tests.support.sink import OtlpSink

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "cgroups" / "trees" / "pure-v2"
KP = "kubepods.slice"
WEB = PodUid("0b6f3f1e-1111-4a5b-8c9d-000000000001")
UPLOADER = PodUid("0b6f3f1e-2222-4a5b-8c9d-000000000002")
REPORT = PodUid("0b6f3f1e-3333-4a5b-8c9d-000000000003")
CONTAINERS = {  # path under the tree -> (pod, container name)
    f"{KP}/kubepods-pod0b6f3f1e_1111_4a5b_8c9d_000000000001.slice/"
    "cri-containerd-49c94cce41278d95b3fee260adf3b954163b862ec6b39b52fa5e09c334785723.scope": (WEB, "web"),
    f"{KP}/kubepods-burstable.slice/kubepods-burstable-pod0b6f3f1e_2222_4a5b_8c9d_000000000002.slice/"
    "crio-45f2709597e18848e602b3ec0885104f7dc0f6e0e3d800462f6fc9d6de3b2837.scope": (UPLOADER, "uploader"),
    f"{KP}/kubepods-burstable.slice/kubepods-burstable-pod0b6f3f1e_2222_4a5b_8c9d_000000000002.slice/"
    "crio-bf42fcfdd76dbc4dc7d9817af465837894cb1c2d493eab7c8a5754a8c533db45.scope": (UPLOADER, "sidecar"),
    f"{KP}/kubepods-besteffort.slice/kubepods-besteffort-pod0b6f3f1e_3333_4a5b_8c9d_000000000003.slice/"
    "docker-c38a16b65e8b4529929a1fdfe9e72a29ca1f8759a6c3fa15879a20d4544f8ba9.scope": (REPORT, "report"),
}
CLUSTER, NODE = "prod-eu", "node-a"
CYCLES, CYCLE_GAP_SECONDS = 3, 1.5
# What the template variables are set to: values the data has.
VARS = {"cluster": CLUSTER, "node": NODE, "namespace": "shop", "workload_kind": "k8s_deployment_name",
        "workload": "web", "currency": "USD", "datasource": "prometheus"}
ALL = {**VARS, "cluster": ".*", "node": ".*", "namespace": ".*", "workload": ".*"}


class _Metadata:
    name = "fixture"

    def __init__(self) -> None:
        def cid(pod: PodUid, name: str) -> str:  # the id in the cgroup's name
            [path] = [p for p, (u, n) in CONTAINERS.items() if (u, n) == (pod, name)]
            return Path(path).name.removesuffix(".scope").rsplit("-", 1)[-1]

        self.pods = {
            WEB: PodMeta(WEB, "web-7d9f8-x2k4p", "shop", NODE, {"team": "payments"},
                         {"k8s.replicaset.name": "web-7d9f8", "k8s.deployment.name": "web"},
                         (ContainerMeta("web", cid(WEB, "web"), 0.5, 1.0, 256 << 20, 512 << 20),),
                         QosClass.GUARANTEED),
            UPLOADER: PodMeta(UPLOADER, "uploader-0", "media", NODE, {"team": "media"},
                              {"k8s.statefulset.name": "uploader"},
                              (ContainerMeta("uploader", cid(UPLOADER, "uploader"), 0.25, None, 128 << 20, None),
                               ContainerMeta("sidecar", cid(UPLOADER, "sidecar"), 0.1, 0.2, 32 << 20, 64 << 20)),
                              QosClass.BURSTABLE),
            REPORT: PodMeta(REPORT, "nightly-report-29927213-q7x2z", "batch", NODE, {},
                            {"k8s.job.name": "nightly-report-29927213",
                             "k8s.cronjob.name": "nightly-report"},
                            (ContainerMeta("report", cid(REPORT, "report")),), QosClass.BEST_EFFORT),
        }

    def start(self) -> None: ...
    def stop(self) -> None: ...

    def pod(self, uid):
        return self.pods.get(uid)

    def node(self):
        return NodeMeta(NODE, uid="n-1", labels={"node.kubernetes.io/instance-type": "m5.xlarge"},
                        cpu_capacity_cores=4, cpu_allocatable_cores=3.5,
                        memory_capacity_bytes=16 << 30, memory_allocatable_bytes=15 << 30)

    def status(self):
        return SourceStatus(True, "fixture")


class _MapValues:
    """The eBPF source as the agent sees it: per-cgroup map values, growing each read, through
    the real decoder (to_samples); map health like BpfCollector._health_samples makes it."""

    def __init__(self, tree: Path) -> None:
        self.start_time_unix_nano = time.time_ns()
        self.node = CgroupId(tree.stat().st_ino)
        self.ids = [CgroupId((tree / p).stat().st_ino) for p in CONTAINERS]
        self.reads = 0

    def read(self) -> BpfReading:
        self.reads += 1
        n = self.reads
        raw = RawCounters()
        for i, c in enumerate(self.ids, start=1):
            raw.cpu_ns[c] = n * i * 700_000_000
            slots = tuple(n * i * (8 >> min(k, 3)) if k < 12 else 0 for k in range(32))
            raw.runq[c] = (slots, n * i * 3_000_000)
            for direction in (0, 1):
                for peer_class in (0, 1, 2):
                    raw.net[(c, direction, peer_class)] = (n * i * (direction + 1) * 1_000_000 * (peer_class + 1),
                                                           n * i * 900)
            raw.faults[c] = n * i * 50
        out = BpfReading()
        out.samples, out.histograms = to_samples(raw)
        for name, entries, cap in (("cpu_time", 4, 10240), ("runq", 4, 10240), ("net_traffic", 24, 10240),
                                   ("cg_paths", 40, 10240), ("tasks", 300 + n, 65536)):
            attrs = ((ATTR_BPF_MAP, name),)
            out.health += [Sample(self.node, "self.bpf.map.entries", float(entries), attrs),
                           Sample(self.node, "self.bpf.map.capacity", float(cap), attrs),
                           Sample(self.node, "self.bpf.map.update_failures", float(n - 1), attrs),
                           Sample(self.node, "self.bpf.map.evictions", 0.0, attrs)]
        return out

    def ack(self, removed) -> None: ...


def _advance(tree: Path, cycle: int) -> None:
    """Move every cumulative counter in the tree forward, as time passing would."""
    for f in tree.rglob("cpu.stat"):
        lines = [ln.split() for ln in f.read_text().splitlines()]
        f.write_text("".join(f"{k} {int(v) + cycle * (2_000_000 if k.endswith('usec') else 40) * (1 + len(k) % 3)}\n"
                             for k, v in lines))
    for f in tree.rglob("*.pressure"):
        f.write_text(re.sub(r"total=(\d+)", lambda m: f"total={int(m.group(1)) + cycle * 150_000}",
                            f.read_text()))


@dataclass
class Loaded:
    prom: Prometheus
    start: float
    end: float
    agent_requests: list
    cost_requests: list


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> Loaded:
    tmp = tmp_path_factory.mktemp("dashboards")
    tree = tmp / "cg"
    shutil.copytree(FIXTURE, tree)
    sink, cost_sink = OtlpSink(), OtlpSink()
    prom = Prometheus(tmp / "prometheus")
    store = None
    try:
        cfg = AgentConfig(node_name=NODE, resource_attributes={"k8s.cluster.name": CLUSTER},
                          insecure=True)
        exporter = make_exporter(cfg, {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}"})
        agent = Agent(cfg, cgroup_root=tree, metadata=_Metadata(), exporter=exporter,
                      bpf=_MapValues(tree))
        for cycle in range(CYCLES):
            if cycle:
                time.sleep(CYCLE_GAP_SECONDS)
                _advance(tree, cycle)
            assert agent.export(agent.collect())
        assert sink.wait_for(CYCLES, 10)
        exporter.shutdown()

        store = Store(f"sqlite:///{tmp / 'ledger.db'}", pricing=default_pricing())
        for req in sink.requests:
            batch = decode(req, now_ns=time.time_ns())
            assert not batch.rejected, batch.error_message()
            store.write(batch)
        store.refresh()
        for n in (1, 2):
            if n == 2:
                time.sleep(CYCLE_GAP_SECONDS)
            pusher = start_pusher(store, endpoint=f"127.0.0.1:{cost_sink.port}", interval_s=3600,
                                  resource={"k8s.cluster.name": CLUSTER})
            try:
                assert cost_sink.wait_for(n, 15), "the cost processor pushed nothing"
            finally:
                pusher.stop()

        settings = rw.gateway_settings()
        t0 = time.time()
        for req in [*sink.requests, *cost_sink.requests]:  # one remote-write request per batch
            converted = rw.convert([req], settings)
            prom.write(rw.write_request(converted.series), rw.HEADERS)
        first = min(t for r in rw.convert(sink.requests, settings).series.values() for t, _ in r) / 1000
        yield Loaded(prom, first, t0, list(sink.requests), list(cost_sink.requests))
    finally:
        if store is not None:
            store.close()
        sink.stop()
        cost_sink.stop()
        prom.stop()


@pytest.mark.parametrize("values", [VARS, ALL], ids=["one-value", "all"])
@pytest.mark.parametrize("target", list(targets()))
def test_panel_query_returns_the_labels_it_groups_by(loaded: Loaded, target: Target, values):
    check_target(loaded.prom, target, values, loaded.start, loaded.end + 1, chosen=values is VARS)


def test_every_variable_query_finds_the_loaded_values(loaded: Loaded):
    for d in DASHBOARDS:
        for v in d.variables:
            if v["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.*),\s*([$\w]+)\)", v["definition"])
            assert m, v["definition"]
            selector, label = substitute(m.group(1), VARS), substitute(m.group(2), VARS)
            values = loaded.prom.api("label/" + label + "/values", **{"match[]": selector},
                                     start=f"{loaded.start:.3f}", end=f"{loaded.end + 1:.3f}")
            assert VARS[v["name"]] in values, f"{d.uid} ${v['name']}: {values}"


def test_prometheus_holds_what_the_agent_and_the_cost_processor_sent(loaded: Loaded):
    """The translation is the exporter's, not one that merely makes the queries pass: values on
    the wire equal the values in Prometheus, under the names and labels of the exporter."""
    p = loaded.prom
    at = loaded.end + 1
    last = loaded.agent_requests[-1]

    def otlp(metric: str, **attrs) -> list[float]:
        out = []
        for rm in last.resource_metrics:
            res = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name != metric:
                        continue
                    pts = getattr(m, m.WhichOneof("data")).data_points
                    for pt in pts:
                        a = {**res, **{kv.key: kv.value.string_value for kv in pt.attributes}}
                        if all(a.get(k) == v for k, v in attrs.items()):
                            out.append(pt)
        return out

    [cpu] = otlp("k8s.pod.cpu.time", **{"k8s.pod.name": "web-7d9f8-x2k4p"})
    [got] = p.query('k8s_pod_cpu_time_seconds_total{k8s_pod_name="web-7d9f8-x2k4p", '
                    'k8s_cluster_name="prod-eu", otel_scope_name="otel_agent"}', at)
    assert float(got["value"][1]) == pytest.approx(cpu.as_double)
    assert got["metric"]["k8s_deployment_name"] == "web"
    assert got["metric"]["otel_agent_pod_qos_class"] == "Guaranteed"

    [ws] = otlp("container.memory.working_set", **{"k8s.container.name": "web"})
    [got] = p.query('container_memory_working_set_bytes{k8s_container_name="web"}', at)
    assert float(got["value"][1]) == ws.as_double or float(got["value"][1]) == ws.as_int

    [h] = otlp("otel_agent.container.cpu.run_queue.delay", **{"k8s.container.name": "web"})
    buckets = p.query('otel_agent_container_cpu_run_queue_delay_seconds_bucket{k8s_container_name="web"}', at)
    by_le = {b["metric"]["le"]: float(b["value"][1]) for b in buckets}
    assert by_le["+Inf"] == h.count and len(by_le) == len(h.explicit_bounds) + 1
    assert by_le[rw.le_value(h.explicit_bounds[0])] == h.bucket_counts[0]
    [s] = p.query('otel_agent_container_cpu_run_queue_delay_seconds_sum{k8s_container_name="web"}', at)
    assert float(s["value"][1]) == pytest.approx(h.sum)

    # a non-monotonic sum (an UpDownCounter) is a gauge: no _total
    assert p.query("k8s_container_cpu_request_desired", at)
    assert not p.query('{__name__=~"k8s_container_cpu_request_desired_total|container_memory_usage_bytes_total"}', at)
    # the gateway turns target_info off: every resource attribute is on every series instead
    assert not p.query("target_info", at)

    cost = loaded.cost_requests[-1]
    [m] = [m for rm in cost.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
           if m.name == "otel_agent.cost.total"]
    pushed = {next(kv.value.string_value for kv in pt.attributes if kv.key == "k8s.namespace.name"): pt.as_double
              for pt in m.sum.data_points}
    assert pushed.get("shop", 0) > 0, pushed
    got = {r["metric"]["k8s_namespace_name"]: float(r["value"][1])
           for r in p.query("otel_agent_cost_total", at)}
    assert got == pytest.approx(pushed)


def test_a_renamed_metric_or_label_would_fail(loaded: Loaded):
    """The check above can fail: the names before the semconv v1.44 rename, a missing unit
    suffix or a label without the gateway's resource labels find nothing."""
    p, at = loaded.prom, loaded.end + 1
    for expr in ("container_cpu_run_queue_delay_seconds_bucket",  # before the rename
                 "k8s_pod_network_packets_total",
                 "container_cpu_time_total",  # no unit suffix
                 'otel_agent_node_pods_cpu_time_seconds_total',
                 'k8s_pod_cpu_time_seconds_total{namespace="shop"}'):  # cAdvisor's label name
        assert p.query(expr, at) == [], expr
