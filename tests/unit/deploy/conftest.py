"""Renders deploy/ the way `kubectl apply -k` would, once per overlay, for the manifest tests.

kustomize is the `kubectl kustomize` built into kubectl (this machine kind's image ships kubectl
with kustomize v5). Secrets are never committed, so the tree is copied to a temporary directory
and deploy/gen-secrets.sh writes throwaway ones there first: the install steps the README gives
are the steps the tests run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
# name -> kustomization directory relative to deploy/ ("" is what `kubectl apply -k deploy/` uses)
OVERLAYS = {"default": "", "sqlite": "overlays/sqlite", "postgres": "overlays/postgres"}


def kubectl() -> str:
    exe = shutil.which("kubectl")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl (with built-in kustomize) is required in CI to render deploy/")
        pytest.skip("kubectl not installed: cannot render the kustomization")
    return exe


def clone_deploy(dst_parent: Path) -> Path:
    """deploy/ as a fresh clone has it: the files git tracks or would add (.gitignore honoured),
    so secrets a developer generated in the work tree never leak into a test."""
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "deploy"],
        check=True, capture_output=True, text=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            dst = dst_parent / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return dst_parent / "deploy"


def gen_secrets(deploy: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(deploy / "gen-secrets.sh"), *args], check=True,
                          capture_output=True, text=True,
                          env={**os.environ, "VENDOR_TOKEN": "vendor-key"})


def render(deploy: Path, rel: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([kubectl(), "kustomize", str(deploy / rel)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def deploy_copy(tmp_path_factory) -> Path:
    # --gateway-san localhost: the agent-to-gateway test dials the gateway on loopback.
    dst = clone_deploy(tmp_path_factory.mktemp("clone"))
    gen_secrets(dst, "--postgres-url", "postgresql://ledger:pw@db/ledger", "--gateway-san", "localhost")
    return dst


@pytest.fixture(scope="session")
def rendered(deploy_copy) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for name, rel in OVERLAYS.items():
        r = render(deploy_copy, rel)
        assert r.returncode == 0, f"kustomize {name}: {r.stderr}"
        out[name] = [d for d in yaml.safe_load_all(r.stdout) if d]
    return out


def find(objs: list[dict], kind: str, name_prefix: str) -> dict:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(name_prefix)]
    assert len(hits) == 1, f"{kind}/{name_prefix}*: {len(hits)} found"
    return hits[0]
