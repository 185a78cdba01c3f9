"""Fuzz the three YAML loaders users write files for: pricing (PricingError), agent config and
static metadata (ConfigError). Acceptable: a clear error that names the file, on one line,
of bounded size, quickly; or a correct load. Never another exception, a hang or a traceback
from the CLI."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_agent import config
from otel_agent.cost.pricing import load_pricing
from otel_agent.errors import ConfigError
from otel_agent.k8s.static import load_static

ROOT = Path(__file__).parents[3]
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MAX_MESSAGE = 600

LOADERS = {
    "pricing": load_pricing,
    "config": lambda p: config.load(file=p, env={}),
    "static": load_static,
}
GOOD = {
    "pricing": "currency: USD\nrates:\n  cpu_core_hour: 0.03\n  memory_gib_hour: 0.004\n"
               "  network_gib: {internet: 0.12}\nnodes:\n  - match: {a: b}\n    spot: true\n"
               "    cpu_core_hour: 0.01\n",
    "config": "interval_seconds: 5\nprotocol: grpc\nbpf_profile: minimal\npod_labels: [app, team]\n"
              "resource_attributes: {k8s.cluster.name: c1}\nhealth_listen: off\n",
    "static": "node:\n  name: n1\n  labels: {zone: a}\n  capacity: {cpu: '2', memory: 4Gi}\npods:\n"
              "  - uid: u1\n    name: p1\n    namespace: ns\n    labels: {app: web}\n"
              "    owner: {kind: Deployment, name: web}\n    containers:\n"
              "      - name: c\n        requests: {cpu: 500m, memory: 256Mi}\n",
}


def outcome(kind: str, path: Path) -> str:
    """'ok' or the error message; any other exception propagates (and fails the test)."""
    try:
        LOADERS[kind](path)
    except ConfigError as e:  # PricingError is a ConfigError
        msg = str(e)
        assert str(path) in msg, msg[:300]
        assert "\n" not in msg and len(msg) <= MAX_MESSAGE, msg[:300]
        return msg
    return "ok"


def _child(kind: str, path: str, q) -> None:  # noqa: ANN001
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a bomb must not take the machine
    try:
        q.put(outcome(kind, Path(path)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        q.put(f"UNEXPECTED {type(e).__name__}: {str(e)[:200]}")


def outcome_bounded(kind: str, path: Path, seconds: float = 10.0) -> str:
    """outcome() in a child process with a time and memory limit: a hang fails, not blocks.

    A fresh interpreter (spawn), not a fork: by the time the whole suite gets here the test
    process has BCC's LLVM mapped and gRPC threads running, so a forked child starts with far
    more than the 1 GiB address-space limit and with locks other threads held."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(kind, str(path), q))
    p.start()
    p.join(seconds)
    if p.is_alive():
        p.kill()
        p.join()
        pytest.fail(f"{kind} loader on {path.name}: still running after {seconds} s")
    assert not q.empty(), f"{kind} loader died with exit code {p.exitcode}"
    got = q.get()
    assert not got.startswith("UNEXPECTED"), got
    return got


def bomb() -> str:
    """Nine levels of nine aliases: 9**9 leaves when expanded (a 'billion laughs')."""
    parts, prev = ["&a [x, x, x, x, x, x, x, x, x]"], "a"
    for n in "bcdefghi":
        parts.append(f"&{n} [" + ", ".join([f"*{prev}"] * 9) + "]")
        prev = n
    return "[" + ", ".join(parts) + "]"


HOSTILE = {  # name → {loader: text}
    "bomb": {
        "config": f"interval_seconds: {bomb()}\n",
        "pricing": f"currency: USD\nrates: {{cpu_core_hour: 1, memory_gib_hour: 1}}\n"
                   f"nodes:\n  - match: {{a: b}}\n    spot: {bomb()}\n",
        "static": f"node: {bomb()}\n",
    },
    "bomb-in-list": {
        "config": f"pod_labels: {bomb()}\n",
        "pricing": f"currency: {bomb()}\n",
        "static": f"node: {{name: n, labels: {{a: {bomb()}}}}}\n",
    },
    "deep-list": {k: "node: " + "[" * 5000 + "]" * 5000 + "\n" for k in LOADERS},
    "deep-map": {k: "pods: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n" for k in LOADERS},
}


@pytest.mark.parametrize("kind", sorted(LOADERS))
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_yaml_is_a_clear_error(tmp_path, kind, case):
    path = tmp_path / f"{case}.yaml"
    path.write_text(HOSTILE[case][kind])
    assert outcome_bounded(kind, path) != "ok"


@pytest.mark.parametrize("kind", sorted(LOADERS))
@pytest.mark.parametrize("data", [b"\xff\xfe\x00bad", bytes(range(256)), b"a: \xc3\x28\n"],
                         ids=["bom-ish", "binary", "bad-utf8"])
def test_non_utf8_is_a_clear_error(tmp_path, kind, data):
    path = tmp_path / "f.yaml"
    path.write_bytes(data)
    assert "utf-8" in outcome_bounded(kind, path).lower()


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_the_good_files_load(tmp_path, kind):
    # The fuzz cases below mutate these; they must load to start with.
    path = tmp_path / "good.yaml"
    path.write_text(GOOD[kind])
    assert outcome(kind, path) == "ok"


# Values of every YAML shape; keys both known and unknown.
scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
value = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=20)


def _known_keys(kind: str) -> list[str]:
    return {"config": list(config.SETTINGS),
            "pricing": ["currency", "rates", "nodes", "memory", "cpu_core_hour", "network_gib",
                        "match", "spot"],
            "static": ["node", "pods", "name", "uid", "labels", "containers", "owner", "qos",
                       "requests", "cpu", "memory"]}[kind]


@pytest.mark.parametrize("kind", sorted(LOADERS))
@FUZZ
@given(data=st.data())
def test_wrong_types_and_unknown_keys(tmp_path, kind, data):
    doc = yaml.safe_load(GOOD[kind])
    keys = _known_keys(kind) + ["typo_key"]
    # Replace or add one field somewhere in the good document with a value of any shape.
    target = doc
    for _ in range(data.draw(st.integers(0, 2))):
        inner = [k for k, v in target.items() if isinstance(v, dict)]
        if not inner:
            break
        target = target[data.draw(st.sampled_from(inner))]
    target[data.draw(st.sampled_from(keys))] = data.draw(value)
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(doc))
    outcome(kind, path)


@pytest.mark.parametrize("kind", sorted(LOADERS))
@FUZZ
@given(cut=st.integers(0, 400), junk=st.binary(max_size=12), at=st.integers(0, 400))
def test_byte_mutations(tmp_path, kind, cut, junk, at):
    text = GOOD[kind].encode()
    at = min(at, len(text))
    data = (text[:at] + junk + text[at:])[: max(cut, 1)]
    path = tmp_path / "f.yaml"
    path.write_bytes(data)
    outcome(kind, path)


@FUZZ
@given(interval=st.floats(0.1, 86_400.0), labels=st.lists(st.text("abc-_./", min_size=1, max_size=8),
                                                       max_size=5),
       profile=st.sampled_from(config.BPF_PROFILES))
def test_valid_config_loads_what_was_written(tmp_path, interval, labels, profile):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"interval_seconds": interval, "pod_labels": labels,
                                    "bpf_profile": profile}))
    cfg = config.load(file=path, env={})
    assert (cfg.interval_seconds, cfg.pod_labels, cfg.bpf_profile) == (interval, tuple(labels), profile)


@pytest.mark.parametrize("text, wrong", [
    ("interval_seconds: true\n", "must be a number"),
    ("endpoint: [a, b]\n", "must be a single value"),
    ("pod_labels: [{app: web}]\n", "list items must be strings"),
    ("resource_attributes: {a: [1, 2]}\n", "keys and values must be strings"),
])
def test_config_wrong_shapes_are_named(tmp_path, text, wrong):
    # Found by test_wrong_types_and_unknown_keys: these loaded as 1.0 s, "['a', 'b']", ...
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=wrong):
        config.load(file=path, env={})


# The CLI: user errors are exit 2, one line, no traceback.
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otel_agent", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("case", ["bomb", "deep-list", "binary", "wrong-type"])
@pytest.mark.parametrize("kind", ["pricing", "config"])
def test_cli_reports_bad_files_in_one_line(tmp_path, kind, case):
    path = tmp_path / "bad.yaml"
    if case == "binary":
        path.write_bytes(bytes(range(256)))
    elif case == "wrong-type":
        path.write_text({"pricing": "currency: USD\nrates: {cpu_core_hour: cheap, memory_gib_hour: 1}\n",
                         "config": "interval_seconds: {a: 1}\n"}[kind])
    else:
        path.write_text(HOSTILE[case][kind])
    if kind == "pricing":
        r = _cli("cost", "serve", "--pricing", str(path), "--listen", "127.0.0.1:0",
                 "--ledger", f"sqlite:///{tmp_path}/l.db")
    else:
        r = _cli("once", "--config", str(path))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], r.stderr
