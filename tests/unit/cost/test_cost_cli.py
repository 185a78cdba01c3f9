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


def test_report_only_replica_flags_are_checked(tmp_path, capsys):
    ledger = f"sqlite:///{tmp_path}/l.db"
    assert main(["serve", "--no-otlp", "--ledger", ledger]) == 2
    assert "--no-otlp serves reports only: it needs --http-listen" in capsys.readouterr().err
    assert main(["serve", "--no-otlp", "--http-listen", "127.0.0.1:0",
                 "--otlp-http-listen", "127.0.0.1:0", "--ledger", ledger]) == 2
    assert "contradict" in capsys.readouterr().err


def test_a_report_only_replica_opens_no_otlp_port_and_serves_reports(tmp_path, caplog):
    import logging
    import threading
    import urllib.request

    from otel_agent.cost.cli import _parser, serve

    caplog.set_level(logging.INFO, logger="otel_agent.cost")
    args = _parser().parse_args(["serve", "--no-otlp", "--http-listen", "127.0.0.1:0",
                                 "--ledger", f"sqlite:///{tmp_path}/l.db", "--refresh-seconds", "0.2"])
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=serve, args=(args,), kwargs={"ready": ready, "stop": stop})
    try:
        t.start()
        assert ready.wait(30)
        [line] = [m for m in caplog.messages if m.startswith("cost processor:")]
        assert "no OTLP (report-only)" in line and "OTLP/gRPC" not in line
        port = int(line.split("report API on port ")[1].split(",")[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.status == 200
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()


def test_a_report_only_replica_holds_only_the_read_token(tmp_path, capsys):
    write = tmp_path / "w"
    write.write_text("write-token-0123456789\n")
    assert main(["serve", "--no-otlp", "--http-listen", "127.0.0.1:0", "--auth-token-file",
                 str(write), "--ledger", f"sqlite:///{tmp_path}/l.db"]) == 2
    assert "must not hold it" in capsys.readouterr().err
