"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, pg_ctl start on a free
loopback port, torn down (stopped and deleted) afterwards.

Real over mock: the ledger's PostgreSQL path is tested against a real server. PostgreSQL
refuses to run as root, so when the tests run as root the cluster runs as the `postgres` user
(created by the distribution's packages) through `runuser`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")


def find_bin(name: str) -> str | None:
    for d in BIN_DIRS:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which(name)


def available() -> str | None:
    """None if a cluster can be started here, else the reason it cannot."""
    for b in ("initdb", "pg_ctl", "postgres"):
        if find_bin(b) is None:
            return f"PostgreSQL binary {b} not found"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_cluster(password: str | None = None) -> Iterator[str]:
    """Yield a postgresql:// URL of a fresh, empty database; stop and delete it afterwards.
    With `password`, the server checks it (scram-sha-256) and the URL carries it."""
    reason = available()
    if reason:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="otel-agent-pg-"))
    data = root / "data"
    port = _free_port()
    as_root = os.geteuid() == 0
    run_as: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    env = {**os.environ, "LC_ALL": "C"}

    def run(*cmd: str) -> None:
        subprocess.run([*run_as, *cmd], check=True, env=env, cwd=root,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)

    try:
        auth = ["-A", "trust"]
        if password is not None:
            pwfile = root / "pw"
            pwfile.write_text(password + "\n")
            if as_root:
                os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
        run(find_bin("initdb"), "-D", str(data), "-U", "postgres", *auth, "-E", "UTF8",
            "--no-sync")
        opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} "
                "-c fsync=on -c max_connections=50")
        run(find_bin("pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", opts, "-w", "start")
        cred = f"postgres:{password}" if password is not None else "postgres"
        yield f"postgresql://{cred}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, find_bin("pg_ctl") or "pg_ctl", "-D", str(data), "-m",
                        "immediate", "-w", "stop"], env=env, cwd=root,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def reset_database(url: str) -> None:
    """Drop every table so the next test starts from an empty ledger (cheaper than initdb)."""
    import sqlalchemy as sa

    engine = sa.create_engine("postgresql+psycopg://" + url.split("://", 1)[1])
    with engine.begin() as c:
        c.execute(sa.text("DROP SCHEMA public CASCADE"))
        c.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
