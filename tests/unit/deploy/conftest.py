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


@pytest.fixture(scope="session")
def deploy_copy(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, dst, ignore=shutil.ignore_patterns("cost-token", "*.crt", "*.key",
                                                               "vendor-token", "ledger-url"))
    subprocess.run(
        ["bash", str(dst / "gen-secrets.sh"), "--postgres-url", "postgresql://ledger:pw@db/ledger"],
        check=True, capture_output=True, text=True, env={**os.environ, "VENDOR_TOKEN": "vendor-key"},
    )
    return dst


@pytest.fixture(scope="session")
def rendered(deploy_copy) -> dict[str, list[dict]]:
    exe = kubectl()
    out: dict[str, list[dict]] = {}
    for name, rel in OVERLAYS.items():
        r = subprocess.run([exe, "kustomize", str(deploy_copy / rel)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"kustomize {name}: {r.stderr}"
        out[name] = [d for d in yaml.safe_load_all(r.stdout) if d]
    return out


def find(objs: list[dict], kind: str, name_prefix: str) -> dict:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(name_prefix)]
    assert len(hits) == 1, f"{kind}/{name_prefix}*: {len(hits)} found"
    return hits[0]
