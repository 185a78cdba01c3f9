"""Shared test set-up: tier markers and the checks that decide whether a tier can run here."""

from __future__ import annotations

import os

# Tests fork workloads while gRPC servers run in-process; those children never use gRPC.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    # The kernel tier needs root (cgroup directories, BPF). CI here runs as root, so it runs;
    # elsewhere it is skipped with the reason, never silently passed.
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="kernel tier needs root")
        for item in items:
            if "kernel" in item.keywords:
                item.add_marker(skip)
