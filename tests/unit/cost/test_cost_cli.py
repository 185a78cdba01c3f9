"""`otel-agent cost ...` user errors: one line, exit 2, no traceback."""

from __future__ import annotations

from otel_agent.cost.cli import main


def test_bad_pricing_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "p.yaml"
    bad.write_text("currency: USD\nrates: {cpu_core_hour: x, memory_gib_hour: 1}\n")
    assert main(["serve", "--listen", "127.0.0.1:0", "--pricing", str(bad),
                 "--ledger", f"sqlite:///{tmp_path}/l.db"]) == 2
    err = capsys.readouterr().err
    assert "p.yaml:2: rates.cpu_core_hour" in err and "Traceback" not in err


def test_bad_ledger_url_exits_2(tmp_path, capsys):
    assert main(["serve", "--listen", "127.0.0.1:0", "--ledger", "mysql://x"]) == 2
    assert "must start with sqlite:/// or postgresql://" in capsys.readouterr().err
    assert main(["serve", "--listen", "127.0.0.1:0", "--ledger", f"sqlite:///{tmp_path}/no/dir/l.db"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_flag_exits_2(capsys):
    assert main(["serve", "--colour"]) == 2
