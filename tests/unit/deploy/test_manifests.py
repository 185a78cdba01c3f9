"""deploy/ renders, validates against Kubernetes 1.30+ schemas offline, and grants no more than
the agent, the gateway and the cost processor need.

The schema check uses kubernetes-validate's bundled schemas in strict mode (unknown fields are
errors), at the oldest version we support and the newest it bundles. The privilege checks pin
the exact ClusterRole rules, the agent's securityContext and capability list, its host mounts,
and the NetworkPolicy in front of the cost processor, so widening any of them is a reviewed
change to this file, not a silent edit of a manifest.
"""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.unit.deploy.conftest import OVERLAYS, ROOT, find

K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
AGENT_CAPS = {"BPF", "PERFMON", "NET_ADMIN"}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_strict(rendered, overlay, version):
    objs = rendered[overlay]
    assert len(objs) >= 15
    for obj in objs:
        kubernetes_validate.validate(obj, version, strict=True)


def test_validation_would_catch_a_bad_field(rendered):
    # The check above is only worth something if a wrong manifest fails it.
    ds = yaml.safe_load(yaml.safe_dump(find(rendered["default"], "DaemonSet", "otel-agent")))
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privilegd"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, "1.30.0", strict=True)


def test_default_is_the_sqlite_overlay(rendered):
    strip = lambda objs: sorted(yaml.safe_dump(o, sort_keys=True) for o in objs)  # noqa: E731
    assert strip(rendered["default"]) == strip(rendered["sqlite"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_in_one_namespace(rendered, overlay):
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}
    for o in rendered[overlay]:
        if o["kind"] not in cluster_scoped:
            assert o["metadata"].get("namespace") == "otel-agent", o["metadata"]["name"]


# --- RBAC -------------------------------------------------------------------------------------

def test_cluster_role_is_exactly_read_pods_and_nodes(rendered):
    objs = rendered["default"]
    roles = [o for o in objs if o["kind"] in ("ClusterRole", "Role")]
    assert [r["metadata"]["name"] for r in roles] == ["otel-agent"]
    assert roles[0]["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}
    ]
    binding = find(objs, "ClusterRoleBinding", "otel-agent")
    assert binding["roleRef"]["name"] == "otel-agent"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "otel-agent", "namespace": "otel-agent"}]


def test_only_the_agent_gets_an_api_token(rendered):
    objs = rendered["default"]
    for kind, name in (("Deployment", "otel-gateway"), ("Deployment", "otel-agent-cost")):
        spec = find(objs, kind, name)["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False, name
    assert find(objs, "DaemonSet", "otel-agent")["spec"]["template"]["spec"]["serviceAccountName"] == "otel-agent"


# --- the agent DaemonSet ------------------------------------------------------------------------

@pytest.fixture()
def agent(rendered):
    return find(rendered["default"], "DaemonSet", "otel-agent")["spec"]["template"]["spec"]


def test_agent_pod_shares_no_host_namespace(agent):
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert agent.get(key, False) is False, key


def test_agent_security_context(agent):
    (c,) = agent["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == AGENT_CAPS
    assert len(sc["capabilities"]["add"]) == len(AGENT_CAPS)
    assert agent["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"


def test_agent_host_mounts_are_read_only_and_few(agent):
    (c,) = agent["containers"]
    host_vols = {v["name"]: v["hostPath"]["path"] for v in agent["volumes"] if "hostPath" in v}
    assert set(host_vols.values()) == {"/sys/fs/cgroup", "/sys/kernel/tracing", "/sys/kernel/debug"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    for name, path in host_vols.items():
        assert mounts[name]["readOnly"] is True, name
        # The agent finds the cgroup mount where the host has it.
        assert mounts[name]["mountPath"] == path
    # The only writable mounts are small emptyDirs (tmp, the kernel-headers link).
    for m in c["volumeMounts"]:
        if not m.get("readOnly"):
            vol = next(v for v in agent["volumes"] if v["name"] == m["name"])
            assert "emptyDir" in vol and vol["emptyDir"].get("sizeLimit"), m["name"]


def test_agent_runs_on_every_node_with_priority(agent):
    assert {"operator": "Exists"} in agent["tolerations"]
    assert agent["priorityClassName"] == "otel-agent-node"


def test_agent_env_probes_and_resources(agent):
    (c,) = agent["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-gateway.otel-agent.svc:4317"
    assert env["OTEL_AGENT_CGROUP_ROOT"]["value"] == "/sys/fs/cgroup"
    port = int(env["OTEL_AGENT_HEALTH_LISTEN"]["value"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ports[c["livenessProbe"]["httpGet"]["port"]] == port
    assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]


# --- gateway and cost processor -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["otel-gateway", "otel-agent-cost"])
def test_services_run_restricted(rendered, name):
    spec = find(rendered["default"], "Deployment", name)["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}


def test_network_policy_admits_only_the_gateway_to_otlp(rendered):
    objs = rendered["default"]
    (np,) = [o for o in objs if o["kind"] == "NetworkPolicy"]
    cost = find(objs, "Deployment", "otel-agent-cost")
    gateway = find(objs, "Deployment", "otel-gateway")
    sel = np["spec"]["podSelector"]["matchLabels"]
    assert sel.items() <= cost["spec"]["template"]["metadata"]["labels"].items()
    assert np["spec"]["policyTypes"] == ["Ingress"]
    otlp_rules = []
    for rule in np["spec"]["ingress"]:
        ports = {p["port"] for p in rule.get("ports", [])}
        assert ports, "a rule without ports admits every port"
        if 4317 in ports:
            otlp_rules.append(rule)
        else:
            assert ports == {9003}, ports
    assert len(otlp_rules) == 1
    (peer,) = otlp_rules[0]["from"]
    assert set(peer) == {"podSelector"}
    labels = peer["podSelector"]["matchLabels"]
    assert labels.items() <= gateway["spec"]["template"]["metadata"]["labels"].items()
    agent_labels = find(objs, "DaemonSet", "otel-agent")["spec"]["template"]["metadata"]["labels"]
    assert not labels.items() <= agent_labels.items()


def test_cost_processor_single_writer_with_auth(rendered):
    for overlay in OVERLAYS:
        d = find(rendered[overlay], "Deployment", "otel-agent-cost")
        assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["type"] == "Recreate"
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        for flag in ("--auth-token-file=", "--tls-cert=", "--tls-key=", "--ledger=$(LEDGER_URL)"):
            assert any(a.startswith(flag) for a in args), flag


def test_ledger_storage_per_overlay(rendered):
    sqlite = find(rendered["sqlite"], "Deployment", "otel-agent-cost")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in sqlite["containers"][0]["env"]}
    assert env["LEDGER_URL"]["value"].startswith("sqlite:////var/lib/otel-agent/")
    ledger = next(v for v in sqlite["volumes"] if v["name"] == "ledger")
    claim = ledger["persistentVolumeClaim"]["claimName"]
    find(rendered["sqlite"], "PersistentVolumeClaim", claim)

    pg = find(rendered["postgres"], "Deployment", "otel-agent-cost")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pg["containers"][0]["env"]}
    ref = env["LEDGER_URL"]["valueFrom"]["secretKeyRef"]
    secret = find(rendered["postgres"], "Secret", "otel-agent-ledger")
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["data"]
    assert not any(o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == "otel-agent-ledger"
                   for o in rendered["postgres"])


# --- the gateway gets what its config asks for ---------------------------------------------------

def test_gateway_config_map_is_the_collector_config(rendered):
    cm = find(rendered["default"], "ConfigMap", "otel-gateway-config")
    assert cm["data"]["gateway.yaml"] == (ROOT / "collector-config" / "gateway.yaml").read_text()


def test_gateway_has_every_env_and_file_its_config_uses(rendered):
    objs = rendered["default"]
    text = (ROOT / "collector-config" / "gateway.yaml").read_text()
    spec = find(objs, "Deployment", "otel-gateway")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = {e["name"] for e in c.get("env", [])}
    for src in c.get("envFrom", []):
        env |= set(find(objs, "ConfigMap", src["configMapRef"]["name"])["data"])
    # From the parsed values, not the text: comments may mention ${env:...} as an example.
    used = set(re.findall(r"\$\{env:([A-Z0-9_]+)", yaml.safe_dump(yaml.safe_load(text))))
    assert "MIMIR_ENDPOINT" in used
    for var in used:
        assert var in env, f"{var} is not set on the gateway"

    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    cfg = yaml.safe_load(text)
    files = [s["filename"] for s in cfg["extensions"].values() if s and "filename" in s]
    files += [cfg["exporters"]["otlp_grpc/cost"]["tls"]["ca_file"]]
    for f in files:
        p = Path(f)
        m = mounts[str(p.parent)]
        vol = vols[m["name"]]
        src = vol.get("secret") or vol.get("configMap")
        keys = [i["path"] for i in src["items"]] if "items" in src else None
        if keys is None:
            obj = find(objs, "Secret" if "secret" in vol else "ConfigMap",
                       src.get("secretName") or src.get("name"))
            keys = list(obj.get("data", {}))
        assert p.name in keys, f"{f}: not in volume {m['name']}"
    data_dirs = [cfg["extensions"]["file_storage/queue"]["directory"],
                 cfg["exporters"]["prometheus_remote_write"]["wal"]["directory"]]
    for d in data_dirs:
        (m,) = [m for path, m in mounts.items() if d.startswith(path + "/")]
        assert "persistentVolumeClaim" in vols[m["name"]], f"{d} is not on the PersistentVolume"
