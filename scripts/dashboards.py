"""The Grafana dashboards in deploy/dashboards/, written from one definition.

    python scripts/dashboards.py          # rewrite deploy/dashboards/*.json
    python scripts/dashboards.py --check  # exit 1 if a checked-in file differs

The JSON files are what users import (or what Grafana's sidecar provisions from the ConfigMap
that deploy/dashboards/kustomization.yaml makes); this script is how they are edited, so that
every query is written once, with the label set it is expected to return. That expectation is
what tests/e2e/dashboards/ holds each query to, after running it on a real Prometheus loaded
with our own export, translated as the gateway's `prometheus_remote_write` exporter writes it.

Names are as they land in Prometheus/Mimir through collector-config/gateway.yaml: OTLP names
with `.` → `_`, the unit's suffix (`_seconds`, `_bytes`), `_total` on counters, no suffix for
`{annotation}` units; every resource attribute is a label (`k8s_namespace_name`, ...), since
the gateway copies them all (`resource_constant_labels: {included: ["*"]}`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "deploy" / "dashboards"
SCHEMA_VERSION = 39  # Grafana 11
DS = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["otel-agent", "kubernetes"]

# Label selectors, from the template variables (multi-value variables render as a regex).
NODE = 'k8s_cluster_name=~"$cluster", k8s_node_name=~"$node"'
POD = NODE + ', k8s_namespace_name=~"$namespace"'
WORKLOAD = POD + ', $workload_kind=~"$workload"'
RATE = "$__rate_interval"
NS_WL = "k8s_namespace_name, $workload_kind"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = "__auto"
    expect: tuple[str, ...] = ()  # the labels each returned series must have, exactly
    fmt: str = "time_series"


@dataclass
class Panel:
    title: str
    description: str
    targets: tuple[Target, ...]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    options: dict = field(default_factory=dict)
    field_config: dict = field(default_factory=dict)


@dataclass
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    variables: tuple[dict, ...]
    rows: tuple[Row, ...]
    file: str


# --- template variables ---------------------------------------------------------------------

def _datasource() -> dict:
    return {"name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
            "includeAll": False, "multi": False, "options": []}


def _query(name: str, label: str, query: str, *, multi: bool = True, regex: str = "") -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            # the classic string form: every Grafana since 7 reads it (newer ones migrate it)
            "definition": query, "query": query,
            "refresh": 2, "sort": 1, "regex": regex, "hide": 0,
            "includeAll": multi, "multi": multi, "allValue": ".*" if multi else None,
            "current": {}, "options": []}


def _custom(name: str, label: str, options: dict[str, str], default: str) -> dict:
    """A fixed choice; `options` maps what the user sees to the value used in queries."""
    return {"name": name, "label": label, "type": "custom", "hide": 0,
            "query": ",".join(f"{text} : {value}" for text, value in options.items()),
            "current": {"text": next(t for t, v in options.items() if v == default),
                        "value": default, "selected": True},
            "options": [{"text": t, "value": v, "selected": v == default}
                        for t, v in options.items()],
            "includeAll": False, "multi": False}


CLUSTER = _query("cluster", "Cluster", "label_values(k8s_node_cpu_time_seconds_total, k8s_cluster_name)")
NODE_VAR = _query("node", "Node", 'label_values(k8s_node_cpu_time_seconds_total{k8s_cluster_name=~"$cluster"}, k8s_node_name)')
NAMESPACE = _query("namespace", "Namespace", f"label_values(k8s_pod_cpu_time_seconds_total{{{NODE}}}, k8s_namespace_name)")
# A workload is named by the semantic-convention attribute of its kind; the agent sets the one
# the pod's owner (and the owner's owner) gives.
WORKLOAD_KIND = _custom("workload_kind", "Workload kind", {
    "Deployment": "k8s_deployment_name", "StatefulSet": "k8s_statefulset_name",
    "DaemonSet": "k8s_daemonset_name", "CronJob": "k8s_cronjob_name", "Job": "k8s_job_name",
    "ReplicaSet": "k8s_replicaset_name"}, "k8s_deployment_name")
WORKLOAD_VAR = _query("workload", "Workload", f"label_values(k8s_pod_cpu_time_seconds_total{{{POD}}}, $workload_kind)")


# --- resources --------------------------------------------------------------------------------

def _resources() -> Dashboard:
    cpu = Row("CPU", (
        Panel("CPU by namespace", "Cores used: rate of each pod's cgroup CPU time (cpu.stat "
              "usage_usec, dead containers included), summed per namespace.",
              (Target(f"sum by (k8s_namespace_name) (rate(k8s_pod_cpu_time_seconds_total{{{POD}}}[{RATE}]))",
                      "{{k8s_namespace_name}}", ("k8s_namespace_name",)),), unit="cores",
              options={"stack": True}),
        Panel("CPU by workload", "Cores used per workload of the chosen kind.",
              (Target(f"sum by ({NS_WL}) (rate(k8s_pod_cpu_time_seconds_total{{{WORKLOAD}}}[{RATE}]))",
                      expect=("k8s_namespace_name", "$workload_kind")),), unit="cores",
              options={"stack": True}),
        Panel("CPU used, requested and limited, by workload", "Usage against the pod spec's "
              "requests and limits (k8s.container.cpu.request/limit.desired).",
              (Target(f"sum by ({NS_WL}) (rate(container_cpu_time_seconds_total{{{WORKLOAD}}}[{RATE}]))",
                      "used {{k8s_namespace_name}}", ("k8s_namespace_name", "$workload_kind")),
               Target(f"sum by ({NS_WL}) (k8s_container_cpu_request_desired{{{WORKLOAD}}})",
                      "requested {{k8s_namespace_name}}", ("k8s_namespace_name", "$workload_kind")),
               Target(f"sum by ({NS_WL}) (k8s_container_cpu_limit_desired{{{WORKLOAD}}})",
                      "limit {{k8s_namespace_name}}", ("k8s_namespace_name", "$workload_kind"))),
              unit="cores"),
        Panel("Node CPU: used, pods, allocatable, capacity", "The node's cgroup root, the "
              "kubepods cgroup (system container `pods`), and what the node offers.",
              (Target(f"sum by (k8s_node_name) (rate(k8s_node_cpu_time_seconds_total{{{NODE}}}[{RATE}]))",
                      "used {{k8s_node_name}}", ("k8s_node_name",)),
               Target(f'sum by (k8s_node_name) (rate(k8s_node_system_container_cpu_time_seconds_total{{{NODE}, k8s_node_system_container_name="pods"}}[{RATE}]))',
                      "pods {{k8s_node_name}}", ("k8s_node_name",)),
               Target(f"sum by (k8s_node_name) (k8s_node_cpu_allocatable{{{NODE}}})",
                      "allocatable {{k8s_node_name}}", ("k8s_node_name",)),
               Target(f"sum by (k8s_node_name) (otel_agent_node_cpu_capacity{{{NODE}}})",
                      "capacity {{k8s_node_name}}", ("k8s_node_name",))),
              unit="cores"),
    ))
    memory = Row("Memory", (
        Panel("Memory working set by namespace", "memory.current minus inactive_file, per pod "
              "cgroup, summed per namespace: what the kubelet evicts on and the ledger bills.",
              (Target(f"sum by (k8s_namespace_name) (k8s_pod_memory_working_set_bytes{{{POD}}})",
                      "{{k8s_namespace_name}}", ("k8s_namespace_name",)),), unit="bytes",
              options={"stack": True}),
        Panel("Memory by workload: working set, RSS, page cache, request, limit",
              "Containers of the chosen workloads.",
              (Target(f"sum by ({NS_WL}) (container_memory_working_set_bytes{{{WORKLOAD}}})",
                      "working set {{k8s_namespace_name}}", ("k8s_namespace_name", "$workload_kind")),
               Target(f"sum by ({NS_WL}) (container_memory_rss_bytes{{{WORKLOAD}}})",
                      "rss {{k8s_namespace_name}}", ("k8s_namespace_name", "$workload_kind")),
               Target(f"sum by ({NS_WL}) (otel_agent_container_memory_page_cache_bytes{{{WORKLOAD}}})",
                      "page cache {{k8s_namespace_name}}", ("k8s_namespace_name", "$workload_kind")),
               Target(f"sum by ({NS_WL}) (k8s_container_memory_request_desired_bytes{{{WORKLOAD}}})",
                      "request {{k8s_namespace_name}}", ("k8s_namespace_name", "$workload_kind")),
               Target(f"sum by ({NS_WL}) (k8s_container_memory_limit_desired_bytes{{{WORKLOAD}}})",
                      "limit {{k8s_namespace_name}}", ("k8s_namespace_name", "$workload_kind"))),
              unit="bytes"),
        Panel("OOM kills by pod", "Processes the OOM killer ended (memory.events oom_kill), per "
              "pod, in each interval.",
              (Target(f"sum by (k8s_namespace_name, k8s_pod_name) (increase(otel_agent_pod_memory_oom_kills_total{{{POD}}}[{RATE}]))",
                      "{{k8s_namespace_name}}/{{k8s_pod_name}}", ("k8s_namespace_name", "k8s_pod_name")),),
              unit="short"),
        Panel("Node memory: pods, allocatable, capacity", "Working set of the kubepods cgroup "
              "(every pod, dead ones included) against what the node offers.",
              (Target(f'sum by (k8s_node_name) (k8s_node_system_container_memory_working_set_bytes{{{NODE}, k8s_node_system_container_name="pods"}})',
                      "pods {{k8s_node_name}}", ("k8s_node_name",)),
               Target(f"sum by (k8s_node_name) (k8s_node_memory_allocatable_bytes{{{NODE}}})",
                      "allocatable {{k8s_node_name}}", ("k8s_node_name",)),
               Target(f"sum by (k8s_node_name) (otel_agent_node_memory_capacity_bytes{{{NODE}}})",
                      "capacity {{k8s_node_name}}", ("k8s_node_name",))),
              unit="bytes"),
    ))
    network = Row("Network", (
        Panel("Egress by namespace and peer class", "Bytes sent (cgroup_skb egress), split by "
              "where they went: pod-network, cluster-private, internet (what is priced).",
              (Target(f'sum by (k8s_namespace_name, otel_agent_network_class) (rate(k8s_pod_network_io_bytes_total{{{POD}, network_io_direction="transmit"}}[{RATE}]))',
                      "{{k8s_namespace_name}} {{otel_agent_network_class}}",
                      ("k8s_namespace_name", "otel_agent_network_class")),),
              unit="Bps", options={"stack": True}),
        Panel("Ingress by namespace", "Bytes received (cgroup_skb ingress).",
              (Target(f'sum by (k8s_namespace_name) (rate(k8s_pod_network_io_bytes_total{{{POD}, network_io_direction="receive"}}[{RATE}]))',
                      "{{k8s_namespace_name}}", ("k8s_namespace_name",)),),
              unit="Bps", options={"stack": True}),
        Panel("Network by workload", "Bytes per second each way, per workload.",
              (Target(f"sum by ({NS_WL}, network_io_direction) (rate(k8s_pod_network_io_bytes_total{{{WORKLOAD}}}[{RATE}]))",
                      expect=("k8s_namespace_name", "$workload_kind", "network_io_direction")),),
              unit="Bps"),
        Panel("Packets by workload", "Packets per second each way, per workload.",
              (Target(f"sum by ({NS_WL}, network_io_direction) (rate(otel_agent_pod_network_packet_count_total{{{WORKLOAD}}}[{RATE}]))",
                      expect=("k8s_namespace_name", "$workload_kind", "network_io_direction")),),
              unit="pps"),
    ))
    throttling = Row("Throttling and pressure", (
        Panel("Throttled periods by workload", "Share of CFS enforcement periods in which the "
              "workload's containers hit their CPU limit (cpu.stat nr_throttled / nr_periods).",
              (Target(f"sum by ({NS_WL}) (rate(otel_agent_container_cpu_throttled_periods_total{{{WORKLOAD}}}[{RATE}]))"
                      f" / sum by ({NS_WL}) (rate(otel_agent_container_cpu_periods_total{{{WORKLOAD}}}[{RATE}]))",
                      expect=("k8s_namespace_name", "$workload_kind")),),
              unit="percentunit"),
        Panel("Throttled time by workload", "Seconds per second the containers spent throttled "
              "(cpu.stat throttled_usec).",
              (Target(f"sum by ({NS_WL}) (rate(otel_agent_container_cpu_throttled_time_seconds_total{{{WORKLOAD}}}[{RATE}]))",
                      expect=("k8s_namespace_name", "$workload_kind")),),
              unit="s"),
        Panel("Pressure (some) by namespace", "Share of time at least one task of the namespace's "
              "pods stalled on CPU, memory or I/O (PSI, *.pressure `some` total).",
              (Target(f'sum by (k8s_namespace_name, otel_agent_pressure_resource) (rate(otel_agent_pod_pressure_stall_time_seconds_total{{{POD}, otel_agent_pressure_kind="some"}}[{RATE}]))',
                      "{{k8s_namespace_name}} {{otel_agent_pressure_resource}}",
                      ("k8s_namespace_name", "otel_agent_pressure_resource")),),
              unit="percentunit"),
        Panel("Node pressure", "The whole node's PSI: `some` (at least one task stalled) and "
              "`full` (all non-idle tasks stalled).",
              (Target(f"sum by (k8s_node_name, otel_agent_pressure_resource, otel_agent_pressure_kind) (rate(otel_agent_node_pressure_stall_time_seconds_total{{{NODE}}}[{RATE}]))",
                      "{{k8s_node_name}} {{otel_agent_pressure_resource}} {{otel_agent_pressure_kind}}",
                      ("k8s_node_name", "otel_agent_pressure_resource", "otel_agent_pressure_kind")),),
              unit="percentunit"),
    ))
    runq = Row("Run-queue delay (eBPF)", (
        Panel("Run-queue delay heatmap", "How long runnable tasks of the chosen workloads waited "
              "for a CPU (sched_wakeup → sched_switch, charged to the task that waited), as a "
              "log2-bucket histogram: waits per second in each bucket.",
              (Target(f"sum by (le) (rate(otel_agent_container_cpu_run_queue_delay_seconds_bucket{{{WORKLOAD}}}[{RATE}]))",
                      "{{le}}", ("le",), fmt="heatmap"),),
              kind="heatmap", unit="s", width=24, height=9,
              options={"calculate": False, "yAxis": {"unit": "s"},
                       "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges",
                                               "fill": "dark-orange", "scale": "exponential",
                                               "exponent": 0.5, "steps": 64},
                       "rowsFrame": {"layout": "le"}, "tooltip": {"show": True, "yHistogram": True},
                       "legend": {"show": True}}),
        Panel("Run-queue delay p99 by workload", "99th percentile wait, from the same buckets.",
              (Target(f"histogram_quantile(0.99, sum by ({NS_WL}, le) (rate(otel_agent_container_cpu_run_queue_delay_seconds_bucket{{{WORKLOAD}}}[{RATE}])))",
                      expect=("k8s_namespace_name", "$workload_kind")),), unit="s"),
        Panel("Mean run-queue delay by workload", "Total wait / number of waits.",
              (Target(f"sum by ({NS_WL}) (rate(otel_agent_container_cpu_run_queue_delay_seconds_sum{{{WORKLOAD}}}[{RATE}]))"
                      f" / sum by ({NS_WL}) (rate(otel_agent_container_cpu_run_queue_delay_seconds_count{{{WORKLOAD}}}[{RATE}]))",
                      expect=("k8s_namespace_name", "$workload_kind")),), unit="s"),
    ))
    return Dashboard(
        "otel-agent-resources", "otel-agent / Resources by namespace and workload",
        "CPU, memory, network, throttling, pressure and run-queue delay per namespace and "
        "workload, from the otel-agent DaemonSet through the Collector gateway.",
        (_datasource(), CLUSTER, NODE_VAR, NAMESPACE, WORKLOAD_KIND, WORKLOAD_VAR),
        (cpu, memory, network, throttling, runq), "otel-agent-resources.json")


# --- cost -------------------------------------------------------------------------------------

COST_SEL = 'k8s_cluster_name=~"$cluster", k8s_namespace_name=~"$namespace", currency="$currency"'
IDLE_SEL = 'k8s_cluster_name=~"$cluster", currency="$currency", k8s_namespace_name=~"__idle__|__overhead__"'


def _cost() -> Dashboard:
    cost_ns = _query("namespace", "Namespace", 'label_values(otel_agent_cost_total{k8s_cluster_name=~"$cluster"}, k8s_namespace_name)')
    currency = _query("currency", "Currency", "label_values(otel_agent_cost_total, currency)", multi=False)
    cluster = _query("cluster", "Cluster", "label_values(otel_agent_cost_total, k8s_cluster_name)")
    ns = ("k8s_namespace_name",)
    rows = (
        Row("Month to date", (
            Panel("Cost this month ($currency)", "Everything billed since the start of the UTC month: "
                  "tenants, __idle__, __overhead__ and __unallocated__ together (= the nodes' cost "
                  "+ network egress).",
                  (Target('sum(otel_agent_cost_total{k8s_cluster_name=~"$cluster", currency="$currency"})',
                          "total", ()),),
                  kind="stat", unit="short", width=6),
            Panel("Idle and overhead ($currency)", "Capacity nobody used (__idle__) and what the node spent "
                  "outside pods or kept back (__overhead__), not shared onto tenants.",
                  (Target(f'sum by (k8s_namespace_name) (otel_agent_cost_total{{{IDLE_SEL}}})',
                          "{{k8s_namespace_name}}", ns),),
                  kind="stat", unit="short", width=6),
            Panel("Cost by tenant ($currency)", "Month-to-date cost per namespace (the cost processor's "
                  "`--cost-otlp-by namespace`).",
                  (Target(f'sort_desc(sum by (k8s_namespace_name) (otel_agent_cost_total{{{COST_SEL}, k8s_namespace_name!~"__.*__"}}))',
                          "{{k8s_namespace_name}}", ns),),
                  kind="bargauge", unit="short", width=12,
                  options={"orientation": "horizontal", "displayMode": "gradient",
                           "reduceOptions": {"calcs": ["lastNotNull"], "values": False}}),
        )),
        Row("Over time", (
            Panel("Cost by tenant, month to date ($currency)", "The running total of each tenant; it resets at "
                  "the start of each month.",
                  (Target(f"sum by (k8s_namespace_name) (otel_agent_cost_total{{{COST_SEL}}})",
                          "{{k8s_namespace_name}}", ns),),
                  unit="short"),
            Panel("Cost per hour by tenant ($currency)", "How fast each tenant's bill grows (change of the "
                  "month-to-date total over the last hour).",
                  (Target(f"sum by (k8s_namespace_name) (delta(otel_agent_cost_total{{{COST_SEL}}}[1h]))",
                          "{{k8s_namespace_name}}", ns),),
                  unit="short"),
            Panel("Cost by component ($currency)", "CPU, memory and network egress, month to date, per "
                  "tenant (GPU and storage appear when a tenant has such cost).",
                  tuple(Target(f"sum by (k8s_namespace_name) (otel_agent_cost_{c}{{{COST_SEL}}})",
                               f"{c} {{{{k8s_namespace_name}}}}", ns)
                        for c in ("cpu", "memory", "network")),
                  unit="short", width=24, options={"stack": True}),
        )),
    )
    return Dashboard(
        "otel-agent-cost", "otel-agent / Cost per tenant",
        "Month-to-date cost per tenant as the cost processor pushes it (otel_agent.cost.*, "
        "`otel-agent cost serve --cost-otlp-endpoint` pointed at the gateway).",
        (_datasource(), cluster, cost_ns, currency), rows, "otel-agent-cost.json")


# --- agent health -----------------------------------------------------------------------------

def _health() -> Dashboard:
    node = ("k8s_node_name",)
    rows = (
        Row("Agents", (
            Panel("Agents reporting", "Nodes whose agent exported in the last 5 minutes.",
                  (Target(f"count(otel_agent_cycle_duration_seconds{{{NODE}}})", "agents", ()),),
                  kind="stat", width=6),
            Panel("Seconds since each agent's last export", "Above two export intervals an "
                  "agent (or the path to the gateway) is stuck.",
                  (Target(f"time() - max by (k8s_node_name) (timestamp(otel_agent_cycle_duration_seconds{{{NODE}}}))",
                          "{{k8s_node_name}}", node),),
                  unit="s", width=18),
            Panel("Collection cycle duration", "Wall time of the last cycle (read + convert).",
                  (Target(f"max by (k8s_node_name) (otel_agent_cycle_duration_seconds{{{NODE}}})",
                          "{{k8s_node_name}}", node),), unit="s"),
            Panel("Data points exported per second", "",
                  (Target(f"sum by (k8s_node_name) (rate(otel_agent_series_exported_total{{{NODE}}}[{RATE}]))",
                          "{{k8s_node_name}}", node),), unit="short"),
            Panel("Failed exports", "Exports that failed after the exporter's retries; the next "
                  "export carries the cumulative totals, so a failure is a gap, not a loss.",
                  (Target(f"sum by (k8s_node_name) (increase(otel_agent_export_failures_total{{{NODE}}}[{RATE}]))",
                          "{{k8s_node_name}}", node),), unit="short"),
            Panel("Entities skipped by reason", "Cgroups, files or pods skipped (vanished "
                  "mid-read, unknown layout, pod metadata unknown, ...).",
                  (Target(f"sum by (otel_agent_skip_reason) (increase(otel_agent_entities_skipped_total{{{NODE}}}[{RATE}]))",
                          "{{otel_agent_skip_reason}}", ("otel_agent_skip_reason",)),),
                  unit="short"),
        )),
        Row("BPF maps", (
            Panel("BPF map fill", "Entries / capacity of each map; near 1 a map drops inserts "
                  "(raise OTEL_AGENT_BPF_MAP_ENTRIES or OTEL_AGENT_BPF_TASK_ENTRIES).",
                  (Target(f"max by (k8s_node_name, otel_agent_bpf_map_name) (otel_agent_bpf_map_entries{{{NODE}}} / otel_agent_bpf_map_capacity{{{NODE}}})",
                          "{{k8s_node_name}} {{otel_agent_bpf_map_name}}",
                          ("k8s_node_name", "otel_agent_bpf_map_name")),),
                  unit="percentunit", options={"max": 1}),
            Panel("BPF map update failures and evictions", "Inserts a program could not make "
                  "(map full) and LRU entries dropped before their final value was exported.",
                  (Target(f"sum by (k8s_node_name, otel_agent_bpf_map_name) (increase(otel_agent_bpf_map_update_failures_total{{{NODE}}}[{RATE}]))",
                          "failures {{k8s_node_name}} {{otel_agent_bpf_map_name}}",
                          ("k8s_node_name", "otel_agent_bpf_map_name")),
                   Target(f"sum by (k8s_node_name, otel_agent_bpf_map_name) (increase(otel_agent_bpf_map_evictions_total{{{NODE}}}[{RATE}]))",
                          "evictions {{k8s_node_name}} {{otel_agent_bpf_map_name}}",
                          ("k8s_node_name", "otel_agent_bpf_map_name"))),
                  unit="short"),
        )),
    )
    return Dashboard(
        "otel-agent-health", "otel-agent / Agent health",
        "The agents' own metrics (otel_agent.*): collection cycles, exports, skipped entities "
        "and BPF map health, per node.",
        (_datasource(), CLUSTER, NODE_VAR), rows, "otel-agent-health.json")


DASHBOARDS = (_resources(), _cost(), _health())


# --- rendering --------------------------------------------------------------------------------

def _panel_json(p: Panel, pid: int, x: int, y: int) -> dict:
    defaults: dict = {"unit": p.unit}
    custom: dict = {}
    options: dict = {}
    if p.kind == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                  "stacking": {"mode": "normal" if p.options.get("stack") else "none",
                               "group": "A"}}
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
        if "max" in p.options:
            defaults["max"] = p.options["max"]
            defaults["min"] = 0
    elif p.kind == "heatmap":
        options = {k: v for k, v in p.options.items()}
        custom = {"scaleDistribution": {"type": "log", "log": 2}}
    elif p.kind in ("stat", "bargauge"):
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "orientation": "auto", "textMode": "auto", "colorMode": "value",
                   "graphMode": "none", "justifyMode": "auto"}
        options.update({k: v for k, v in p.options.items() if k != "stack"})
    if custom:
        defaults["custom"] = custom
    return {
        "id": pid, "type": p.kind, "title": p.title, "description": p.description,
        "datasource": DS, "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []}, "options": options,
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": t.expr,
                     "legendFormat": t.legend, "format": t.fmt, "range": True,
                     "instant": False, "editorMode": "code"}
                    for i, t in enumerate(p.targets)],
    }


def render(d: Dashboard) -> dict:
    panels: list[dict] = []
    pid, y = 1, 0
    for row in d.rows:
        panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y, x, line_h = pid + 1, y + 1, 0, 0
        for p in row.panels:
            if x + p.width > 24:
                x, y, line_h = 0, y + line_h, 0
            panels.append(_panel_json(p, pid, x, y))
            pid, x, line_h = pid + 1, x + p.width, max(line_h, p.height)
        y += line_h
    return {
        "__inputs": [], "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
        "uid": d.uid, "title": d.title, "description": d.description, "tags": TAGS,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True, "graphTooltip": 1,
        "timezone": "browser", "refresh": "1m", "time": {"from": "now-6h", "to": "now"},
        "timepicker": {}, "fiscalYearStartMonth": 0, "liveNow": False, "id": None,
        "links": [{"type": "dashboards", "tags": ["otel-agent"], "asDropdown": True,
                   "title": "otel-agent", "includeVars": True, "keepTime": True}],
        "annotations": {"list": [{"builtIn": 1, "type": "dashboard", "name": "Annotations & Alerts",
                                  "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)"}]},
        "templating": {"list": list(d.variables)},
        "panels": panels,
    }


def text(d: Dashboard) -> str:
    return json.dumps(render(d), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for d in DASHBOARDS:
        path = OUT / d.file
        if check:
            if not path.exists() or path.read_text() != text(d):
                stale.append(str(path))
        else:
            path.write_text(text(d))
    if stale:
        print("out of date (run python scripts/dashboards.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
