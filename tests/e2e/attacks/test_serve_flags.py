"""Attack: hostile `cost serve` flags and ledger URLs (issue 12, "smaller ones").

Every user error is one line on stderr and exit 2, naming the flag; nothing starts half-way.
Before: `--listen HOST:99999` bound a random port, `--refresh-seconds 0` or `nan` spun a core,
and a ledger URL's password was printed on error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from otel_agent.cost.cli import main
from tests.support import postgres

pytestmark = pytest.mark.e2e

SERVE = ["serve", "--listen", "127.0.0.1:0"]


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("flag", ["--listen", "--otlp-http-listen", "--http-listen"])
@pytest.mark.parametrize("value", ["127.0.0.1:99999", "127.0.0.1:-1", "127.0.0.1:http", ":4317",
                                   "::1:4317", "[::1]x", "no-such-host.invalid:4317"])
def test_every_listen_flag_is_checked(tmp_path, capsys, flag, value):
    argv = ["serve", "--listen", "127.0.0.1:0", "--ledger", f"sqlite:///{tmp_path}/l.db",
            flag, value]
    code, err = _run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1, err
    assert flag in err and "Traceback" not in err


@pytest.mark.parametrize("flag, value", [
    ("--refresh-seconds", "0"), ("--refresh-seconds", "-1"), ("--refresh-seconds", "nan"),
    ("--refresh-seconds", "inf"), ("--refresh-seconds", "1e308"),
    ("--max-message-bytes", "0"), ("--max-message-bytes", "-5"), ("--max-message-bytes", "99999999999"),
    ("--max-series-per-namespace", "0"),
    ("--retention-points-days", "0"), ("--retention-hourly-days", "-3"),
    ("--retention-daily-days", "9999999"), ("--retention-monthly-days", "0"),
    ("--cost-otlp-interval-seconds", "nan"), ("--cost-otlp-interval-seconds", "0"),
    ("--http-max-connections", "0"),
])
def test_every_numeric_flag_is_range_checked(tmp_path, capsys, flag, value):
    code, err = _run(capsys, *SERVE, "--ledger", f"sqlite:///{tmp_path}/l.db",
                     "--cost-otlp-endpoint", "127.0.0.1:4317", f"{flag}={value}")
    assert code == 2 and flag in err and "Traceback" not in err, err


def test_tokens_fail_closed(tmp_path, capsys):
    (tmp_path / "w").write_text("write-token\n")
    (tmp_path / "r").write_text("read-token\n")
    (tmp_path / "same").write_text("write-token\n")
    (tmp_path / "empty").write_text("\n")
    base = [*SERVE, "--ledger", f"sqlite:///{tmp_path}/l.db", "--http-listen", "127.0.0.1:0"]
    for extra, needle in [
        (["--auth-token-file", str(tmp_path / "w")], "--auth-token-file without --read-token-file"),
        (["--read-token-file", str(tmp_path / "r")], "--read-token-file without --auth-token-file"),
        (["--auth-token-file", str(tmp_path / "w"), "--read-token-file", str(tmp_path / "same")],
         "the same token"),
        (["--auth-token-file", str(tmp_path / "w"), "--read-token-file", str(tmp_path / "empty")],
         "empty"),
        (["--auth-token-file", str(tmp_path / "w"), "--read-token-file", str(tmp_path / "nope")],
         "cannot read"),
    ]:
        code, err = _run(capsys, *base, *extra)
        assert code == 2 and needle in err, (extra, err)
    # a read token without a report API to open is a mistake too
    code, err = _run(capsys, *SERVE, "--ledger", f"sqlite:///{tmp_path}/l.db",
                     "--read-token-file", str(tmp_path / "r"))
    assert code == 2 and "needs --http-listen" in err


def test_refresh_zero_exits_2_as_a_real_process(tmp_path):
    p = subprocess.run([sys.executable, "-m", "otel_agent.cost.cli", "serve", "--listen",
                        "127.0.0.1:99999", "--ledger", f"sqlite:///{tmp_path}/l.db"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
    assert "--listen" in p.stderr and "99999" in p.stderr
    p = subprocess.run([sys.executable, "-m", "otel_agent.cost.cli", "serve", "--listen",
                        "127.0.0.1:0", "--refresh-seconds", "nan", "--ledger",
                        f"sqlite:///{tmp_path}/l.db"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--refresh-seconds" in p.stderr


SECRET = "Pw-9f1c7e22"


@pytest.mark.postgres
@pytest.mark.skipif(postgres.available() is not None, reason=str(postgres.available()))
def test_a_ledger_password_is_never_printed(tmp_path):
    with postgres.postgres_cluster(password=SECRET) as url:
        good_port = url.rsplit(":", 1)[1].split("/")[0]
        urls = [
            url.replace(SECRET, SECRET + "-wrong"),  # wrong password, real server
            f"postgresql://postgres:{SECRET}@no-such-host.invalid:5432/postgres",  # bad host
            f"postgresql://postgres:{SECRET}@127.0.0.1:1/postgres",  # nothing listens
            f"postgresql://postgres:{SECRET}@127.0.0.1:{good_port}/nodb",  # no such database
            f"postgresql://postgres:{SECRET}@127.0.0.1:notaport/postgres",  # unparseable
            f"mysql://postgres:{SECRET}@127.0.0.1/postgres",  # wrong scheme
        ]
        for bad in urls:
            for argv in (["serve", "--listen", "127.0.0.1:0", "--ledger", bad],
                         ["report", "--ledger", bad, "--window", "today"]):
                p = subprocess.run([sys.executable, "-m", "otel_agent.cost.cli", *argv],
                                   capture_output=True, text=True, timeout=120)
                out = p.stdout + p.stderr
                assert p.returncode in (1, 2), (bad, out)
                assert SECRET not in out, (bad, out)
                assert "Traceback" not in out, (bad, out)
        # and the right password works (the test would pass vacuously otherwise)
        from otel_agent.cost.pricing import default_pricing
        from otel_agent.cost.store import Store

        Store(url, pricing=default_pricing()).close()
