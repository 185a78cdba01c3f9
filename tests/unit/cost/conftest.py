"""Ledger fixtures: every ledger test runs on a real SQLite file and, marked `postgres`, on a
real throwaway PostgreSQL 15 cluster (tests/support/postgres.py), through the same code."""

from __future__ import annotations

import pytest

from tests.support import postgres


@pytest.fixture(scope="session")
def _pg_cluster():
    reason = postgres.available()
    if reason:
        pytest.skip(reason)
    with postgres.postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
    else:
        url = request.getfixturevalue("_pg_cluster")
        postgres.reset_database(url)
        yield url
