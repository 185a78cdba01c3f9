"""deploy/ renders, validates against Kubernetes 1.30+ schemas offline, and grants no more than
the agent, the gateway and the cost processor need.

The schema check uses kubernetes-validate's bundled schemas in strict mode (unknown fields are
errors), at the oldest version we support and the newest it bundles. The privilege checks pin
the exact ClusterRole rules, the agent's securityContext and capability list, its host mounts,
the NetworkPolicies in front of the gateway and the cost processor, and which pod holds which
credential, so widening any of them is a reviewed change to this file, not a silent edit of a
manifest.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.unit.deploy.conftest import OVERLAYS, ROOT, clone_deploy, find, gen_secrets, render

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

def test_cluster_role_is_exactly_read_pods_nodes_and_volumes(rendered):
    objs = rendered["default"]
    roles = [o for o in objs if o["kind"] in ("ClusterRole", "Role")]
    assert [r["metadata"]["name"] for r in roles] == ["otel-agent"]
    assert roles[0]["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims", "persistentvolumes"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"],
         "verbs": ["get", "list", "watch"]},
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
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "https://otel-gateway.otel-agent.svc:4317"
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


def _policy_for(objs: list[dict], workload: dict) -> dict:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    hits = [o for o in objs if o["kind"] == "NetworkPolicy"
            and o["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
    assert len(hits) == 1, f"{len(hits)} NetworkPolicies select {workload['metadata']['name']}"
    return hits[0]


def test_network_policy_admits_only_the_gateway_to_otlp(rendered):
    objs = rendered["default"]
    np = _policy_for(objs, find(objs, "Deployment", "otel-agent-cost"))
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


def test_cost_processor_replicas_per_ledger_with_auth(rendered):
    """SQLite: one writer, Recreate (two never overlap). PostgreSQL: a fleet of replicas rolled
    one at a time, with a PodDisruptionBudget that keeps one taking exports."""
    for overlay in OVERLAYS:
        d = find(rendered[overlay], "Deployment", "otel-agent-cost")
        if overlay == "postgres":
            assert d["spec"]["replicas"] >= 2
            assert d["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {
                "maxUnavailable": 0, "maxSurge": 1}}
            pdb = find(rendered[overlay], "PodDisruptionBudget", "otel-agent-cost")
            assert 1 <= pdb["spec"]["minAvailable"] < d["spec"]["replicas"]
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
            svc = find(rendered[overlay], "Service", "otel-agent-cost")
            assert svc["spec"]["selector"].items() <= labels.items()
        else:
            assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["type"] == "Recreate"
            assert not [o for o in rendered[overlay] if o["kind"] == "PodDisruptionBudget"]
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        for flag in ("--auth-token-file=", "--tls-cert=", "--tls-key=", "--ledger=$(LEDGER_URL)"):
            assert any(a.startswith(flag) for a in args), flag


def test_postgres_report_only_replicas_hold_no_ingest_credential(rendered):
    """`cost serve --no-otlp` replicas: their own Service, PodDisruptionBudget and
    NetworkPolicy (9003 only); the read token and the ledger URL, never the write token or
    the OTLP certificate; and the processors' Service does not send OTLP to them."""
    objs = rendered["postgres"]
    d = find(objs, "Deployment", "otel-cost-reports")
    spec = d["spec"]["template"]["spec"]
    labels = d["spec"]["template"]["metadata"]["labels"]
    [c] = spec["containers"]
    assert "--no-otlp" in c["args"] and not any(a.startswith("--listen") for a in c["args"])
    assert d["spec"]["replicas"] >= 2 and d["spec"]["strategy"]["type"] == "RollingUpdate"
    assert set(_mounted_secrets(spec)) == {"otel-agent-cost-read"}
    assert _env_secrets(spec) == {"otel-agent-ledger"}
    # the generated names (with their content hash) are the ones rendered
    cm = find(objs, "ConfigMap", "otel-agent-pricing")["metadata"]["name"]
    assert {v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v} == {cm}
    read = find(objs, "Secret", "otel-agent-cost-read")["metadata"]["name"]
    assert {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v} == {read}
    assert c["env"][0]["valueFrom"]["secretKeyRef"]["name"] == find(
        objs, "Secret", "otel-agent-ledger")["metadata"]["name"]
    assert find(objs, "Service", "otel-cost-reports")["spec"]["selector"].items() <= labels.items()
    assert not find(objs, "Service", "otel-agent-cost")["spec"]["selector"].items() <= labels.items()
    assert find(objs, "PodDisruptionBudget", "otel-cost-reports")["spec"]["selector"][
        "matchLabels"].items() <= labels.items()
    policy = _policy_for(objs, d)
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [9003]
    for o in rendered["default"] + rendered["sqlite"]:
        assert o["metadata"]["name"] != "otel-cost-reports"


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
    for proto in cfg["receivers"]["otlp"]["protocols"].values():
        files += [proto["tls"]["cert_file"], proto["tls"]["key_file"]]
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


# --- credentials: who holds which, and none in a manifest ------------------------------------------

def _secret_data(objs: list[dict], name: str) -> dict[str, str]:
    sec = find(objs, "Secret", name)
    return {k: base64.b64decode(v).decode() for k, v in sec["data"].items()}


def _mounted_secrets(spec: dict) -> dict[str, str]:
    """secret name prefix (without kustomize's hash) -> mount path, for one pod spec."""
    vols = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    out = {}
    for c in spec["containers"]:
        for m in c["volumeMounts"]:
            if m["name"] in vols:
                out[vols[m["name"]].rsplit("-", 1)[0]] = m["mountPath"]
    return out


def _env_secrets(spec: dict) -> set[str]:
    return {e["valueFrom"]["secretKeyRef"]["name"].rsplit("-", 1)[0]
            for c in spec["containers"] for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})}


def test_agent_sends_the_gateway_token_from_the_secret(rendered):
    objs = rendered["default"]
    spec = find(objs, "DaemonSet", "otel-agent")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    names = [e["name"] for e in c["env"]]
    env = {e["name"]: e for e in c["env"]}
    ref = env["OTEL_AGENT_GATEWAY_TOKEN"]["valueFrom"]["secretKeyRef"]
    headers = env["OTEL_EXPORTER_OTLP_HEADERS"]["value"]
    # Kubernetes expands $(VAR) only from variables defined earlier in the list.
    assert headers == "authorization=Bearer%20$(OTEL_AGENT_GATEWAY_TOKEN)"
    assert names.index("OTEL_AGENT_GATEWAY_TOKEN") < names.index("OTEL_EXPORTER_OTLP_HEADERS")
    assert "OTEL_EXPORTER_OTLP_INSECURE" not in env
    # The Secret the agent reads is the one whose file the gateway's authenticator checks.
    gateway = find(objs, "Deployment", "otel-gateway")["spec"]["template"]["spec"]
    cfg = yaml.safe_load(find(objs, "ConfigMap", "otel-gateway-config")["data"]["gateway.yaml"])
    auth = cfg["receivers"]["otlp"]["protocols"]["grpc"]["auth"]["authenticator"]
    token_file = Path(cfg["extensions"][auth]["filename"])
    mounts = _mounted_secrets(gateway)
    assert mounts[ref["name"].rsplit("-", 1)[0]] == str(token_file.parent)
    assert ref["key"] == token_file.name
    assert ref["key"] in find(objs, "Secret", ref["name"])["data"]
    # The CA the agent trusts is in the Secret that also holds the gateway's certificate.
    ca = Path(env["OTEL_EXPORTER_OTLP_CERTIFICATE"]["value"])
    assert _mounted_secrets(spec)["otel-gateway-tls"] == str(ca.parent)


def test_no_token_or_key_appears_outside_its_secret(rendered):
    for overlay, objs in rendered.items():
        secrets = [o for o in objs if o["kind"] == "Secret"]
        values = {v for sec in secrets for v in (base64.b64decode(x).decode() for x in sec["data"].values())
                  if len(v) >= 16}
        assert values, overlay
        text = yaml.safe_dump_all([o for o in objs if o["kind"] != "Secret"])
        for v in values:
            for form in (v, base64.b64encode(v.encode()).decode()):
                assert form not in text, f"{overlay}: a secret value appears in a non-Secret object"


def test_each_pod_holds_only_the_credentials_it_uses(rendered):
    objs = rendered["default"]
    pod = lambda kind, name: find(objs, kind, name)["spec"]["template"]["spec"]  # noqa: E731
    held = {
        "agent": set(_mounted_secrets(pod("DaemonSet", "otel-agent"))) | _env_secrets(pod("DaemonSet", "otel-agent")),
        "gateway": set(_mounted_secrets(pod("Deployment", "otel-gateway"))),
        "cost": set(_mounted_secrets(pod("Deployment", "otel-agent-cost"))),
    }
    assert held["agent"] == {"otel-agent-gateway-auth", "otel-gateway-tls"}
    assert held["gateway"] == {"otel-agent-gateway-auth", "otel-gateway-tls", "otel-agent-cost-auth",
                               "otel-agent-cost-tls", "otel-gateway-vendor-auth"}
    assert held["cost"] == {"otel-agent-cost-auth", "otel-agent-cost-read", "otel-agent-cost-tls"}
    # Items narrow what is mounted: the agent gets only the gateway's CA, the gateway only the
    # cost processor's CA; no private key leaves the pod it belongs to.
    for kind, name, secret, keys in (("DaemonSet", "otel-agent", "otel-gateway-tls", ["ca.crt"]),
                                     ("Deployment", "otel-gateway", "otel-agent-cost-tls", ["ca.crt"]),
                                     ("Deployment", "otel-gateway", "otel-gateway-tls", ["tls.crt", "tls.key"])):
        (vol,) = [v for v in pod(kind, name)["volumes"]
                  if v.get("secret", {}).get("secretName", "").startswith(secret + "-")]
        assert sorted(i["key"] for i in vol["secret"]["items"]) == keys, (name, secret)
    # Read and write tokens differ.
    write = _secret_data(objs, "otel-agent-cost-auth")["token"]
    read = _secret_data(objs, "otel-agent-cost-read")["read-token"]
    agents = _secret_data(objs, "otel-agent-gateway-auth")["token"]
    assert len({write, read, agents}) == 3


def test_cost_processor_takes_the_read_token(rendered):
    for overlay in OVERLAYS:
        objs = rendered[overlay]
        spec = find(objs, "Deployment", "otel-agent-cost")["spec"]["template"]["spec"]
        args = spec["containers"][0]["args"]
        (flag,) = [a for a in args if a.startswith("--read-token-file=")]
        path = Path(flag.split("=", 1)[1])
        assert path.name == "read-token"
        assert _mounted_secrets(spec)["otel-agent-cost-read"] == str(path.parent)
        # The sqlite overlay replaces a volume by index: it must still hit the ledger only.
        vols = {v["name"]: v for v in spec["volumes"]}
        assert len(vols) == len(spec["volumes"])
        assert "secret" in vols["tls"] and "secret" in vols["read-auth"], overlay


def test_gateway_network_policy_admits_only_agents_to_otlp(rendered):
    objs = rendered["default"]
    gateway = find(objs, "Deployment", "otel-gateway")
    np = _policy_for(objs, gateway)
    assert np["spec"]["policyTypes"] == ["Ingress"]
    agent_labels = find(objs, "DaemonSet", "otel-agent")["spec"]["template"]["metadata"]["labels"]
    cost_labels = find(objs, "Deployment", "otel-agent-cost")["spec"]["template"]["metadata"]["labels"]
    open_ports: set[int] = set()
    for rule in np["spec"]["ingress"]:
        ports = {p["port"] for p in rule.get("ports", [])}
        assert ports, "a rule without ports admits every port"
        if ports & {4317, 4318}:
            assert ports == {4317, 4318}
            (peer,) = rule["from"]
            assert set(peer) == {"podSelector"}
            sel = peer["podSelector"]["matchLabels"]
            assert sel.items() <= agent_labels.items()
            assert not sel.items() <= cost_labels.items()
            assert not sel.items() <= gateway["spec"]["template"]["metadata"]["labels"].items()
        else:
            assert "from" not in rule
            open_ports |= ports
    assert open_ports == {8888, 13133}


def test_gateway_self_metrics_are_scrapable(rendered):
    objs = rendered["default"]
    cfg = yaml.safe_load(find(objs, "ConfigMap", "otel-gateway-config")["data"]["gateway.yaml"])
    (reader,) = cfg["service"]["telemetry"]["metrics"]["readers"]
    port = reader["pull"]["exporter"]["prometheus"]["port"]
    tmpl = find(objs, "Deployment", "otel-gateway")["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in tmpl["spec"]["containers"][0]["ports"]}
    assert ports["metrics"] == port
    assert tmpl["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert tmpl["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    svc = find(objs, "Service", "otel-gateway")
    assert {"name": "metrics", "port": port, "targetPort": "metrics"} in svc["spec"]["ports"]


def _sans(cert: Path) -> set[str]:
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
                         check=True, capture_output=True, text=True).stdout
    return set(re.findall(r"DNS:([^,\s]+)", out))


def test_certificates_name_what_their_clients_dial(rendered, deploy_copy):
    objs = rendered["default"]
    secrets = deploy_copy / "base" / "secrets"
    env = {e["name"]: e.get("value") for e in
           find(objs, "DaemonSet", "otel-agent")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).hostname in _sans(secrets / "gateway-tls.crt")
    cfg = yaml.safe_load(find(objs, "ConfigMap", "otel-gateway-config")["data"]["gateway.yaml"])
    cost_host = cfg["exporters"]["otlp_grpc/cost"]["endpoint"].rsplit(":", 1)[0]
    assert cost_host in _sans(secrets / "cost-tls.crt")
    for crt in ("gateway-tls.crt", "cost-tls.crt"):
        subprocess.run(["openssl", "verify", "-CAfile", str(secrets / "ca.crt"), str(secrets / crt)],
                       check=True, capture_output=True)


def test_secretless_clone_renders_after_gen_secrets_only(tmp_path):
    # What a new user has: a clone, no secrets. The README says: gen-secrets.sh, then apply -k.
    shutil.which("openssl") or pytest.skip("openssl missing")
    deploy = clone_deploy(tmp_path)
    assert not any(p.name != "README.md" for p in (deploy / "base" / "secrets").iterdir())
    before = render(deploy)
    assert before.returncode != 0 and "secrets/" in before.stderr
    gen_secrets(deploy)
    after = render(deploy)
    assert after.returncode == 0, after.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(after.stdout) if d]
    assert kinds.count("Secret") == 6 and kinds.count("NetworkPolicy") == 2
    # The PostgreSQL overlay also needs its URL, which gen-secrets writes only when given.
    assert render(deploy, "overlays/postgres").returncode != 0
    gen_secrets(deploy, "--postgres-url", "postgresql://u:p@db/ledger")
    assert render(deploy, "overlays/postgres").returncode == 0


def test_gen_secrets_tokens_are_one_line_and_kept_until_forced(tmp_path):
    deploy = clone_deploy(tmp_path)
    gen_secrets(deploy)
    secrets = deploy / "base" / "secrets"
    names = ("gateway-token", "cost-token", "cost-read-token")
    first = {n: (secrets / n).read_bytes() for n in names}
    for n, b in first.items():
        # bearertokenauth reads the file line by line: a trailing newline is an empty token.
        assert re.fullmatch(rb"[0-9a-f]{64}", b), n
        assert (secrets / n).stat().st_mode & 0o077 == 0, n
    crt = (secrets / "gateway-tls.crt").read_bytes()
    gen_secrets(deploy)
    assert {n: (secrets / n).read_bytes() for n in names} == first
    assert (secrets / "gateway-tls.crt").read_bytes() == crt
    # A missing certificate remakes the CA and both certificates, which must still chain.
    (secrets / "gateway-tls.key").unlink()
    gen_secrets(deploy)
    for c in ("gateway-tls.crt", "cost-tls.crt"):
        subprocess.run(["openssl", "verify", "-CAfile", str(secrets / "ca.crt"), str(secrets / c)],
                       check=True, capture_output=True)
    gen_secrets(deploy, "--force")
    assert all((secrets / n).read_bytes() != first[n] for n in names)
    bad = subprocess.run(["bash", str(deploy / "gen-secrets.sh"), "--gateway-san"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "needs a value" in bad.stderr


# --- the manifests pass flags the programs have -----------------------------------------------------

def test_cost_processor_accepts_every_flag_the_manifest_passes(rendered):
    from otel_agent.cost.cli import _parser

    for overlay, name in [(o, "otel-agent-cost") for o in OVERLAYS] + [("postgres", "otel-cost-reports")]:
        c = find(rendered[overlay], "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert c["command"][:3] == ["otel-agent", "cost", "serve"]
        serve = _parser()._subparsers._group_actions[0].choices["serve"]  # argparse keeps subparsers here
        known = {o for a in serve._actions for o in a.option_strings}
        flags = {a.split("=", 1)[0] for a in c["args"]}
        missing = flags - known
        assert not missing, f"{overlay}: `otel-agent cost serve` has no {sorted(missing)}"
        serve.parse_args(c["args"])  # types and choices too
