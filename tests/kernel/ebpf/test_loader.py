"""The loader child: BCC compiles there, the agent holds descriptors and never maps LLVM."""

from __future__ import annotations

import ctypes as ct
import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from otel_agent.errors import SourceError
from tests.kernel.ebpf.cgtools import V2_ROOT

pytestmark = pytest.mark.kernel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_every_map_read_here_has_the_layout_bcc_compiled(collector):
    from otel_agent.ebpf.layout import MAP_LAYOUTS, size_mismatches

    maps = collector._loaded.maps
    assert set(MAP_LAYOUTS) <= set(maps), set(MAP_LAYOUTS) - set(maps)
    assert size_mismatches({n: (m.key_size, m.value_size) for n, m in maps.items()}) == []


def test_a_layout_drift_refuses_to_start_naming_the_map(monkeypatch):
    from otel_agent.ebpf import BpfCollector, BpfConfig, layout

    class Wider(ct.Structure):
        _fields_ = [("slots", ct.c_uint64 * 33), ("sum_ns", ct.c_uint64)]

    monkeypatch.setitem(layout.MAP_LAYOUTS, "runq", (ct.c_uint64, Wider))
    col = BpfCollector(BpfConfig(profile="minimal", cgroup_root=V2_ROOT, map_max_entries=16,
                                 task_max_entries=64))
    with pytest.raises(SourceError, match=r"runq \(the C source has key 8 / value 264 bytes"):
        col.start()
    col.stop()


def test_compile_errors_come_back_as_one_message_not_a_traceback(tmp_path):
    from otel_agent.ebpf import BpfCollector, BpfConfig

    src = BpfConfig().source_dir
    for f in src.iterdir():
        (tmp_path / f.name).write_text(f.read_text())
    (tmp_path / "faults.c").write_text((src / "faults.c").read_text() + "\nint broken( { return 0; }\n")
    col = BpfCollector(BpfConfig(profile="standard", cgroup_root=V2_ROOT, source_dir=tmp_path))
    with pytest.raises(SourceError) as e:
        col.start()
    msg = str(e.value)
    assert msg.startswith("compiling/loading the BPF programs failed")
    assert "error:" in msg and "Traceback" not in msg  # clang's diagnostic, quoted
    col.stop()


def test_a_hung_loader_is_bounded_by_its_timeout(monkeypatch):
    from otel_agent.ebpf import loader

    monkeypatch.setattr(loader.sys, "executable", "/bin/sleep")  # "sleep -m ..." fails fast
    with pytest.raises(loader.LoaderError) as e:
        loader.load("", [], {}, timeout_seconds=5)
    assert e.value.kind == "crash"
    monkeypatch.setattr(loader, "_child_env", lambda: dict(os.environ))
    monkeypatch.setattr(loader.subprocess, "Popen", _popen_sleep(loader.subprocess.Popen))
    with pytest.raises(loader.LoaderError, match="did not finish within 1 s") as e:
        loader.load("", [], {}, timeout_seconds=1)
    assert e.value.kind == "timeout"


def _popen_sleep(popen):
    def run(args, **kw):
        return popen(["sleep", "30"], **kw)
    return run


def test_the_agent_process_never_maps_bcc_or_llvm():
    code = textwrap.dedent(f"""
        import sys, time
        import otel_agent.ebpf.collector
        from otel_agent.ebpf import BpfCollector, BpfConfig, probe
        def mapped():
            return sorted({{l.split()[-1] for l in open("/proc/self/maps")
                           if "libLLVM" in l or "libbcc.so" in l or "libclang" in l}})
        assert "bcc" not in sys.modules and not mapped(), "import"
        col = BpfCollector(BpfConfig(profile="standard", cgroup_root="{V2_ROOT}"))
        col.start()
        col.read(); time.sleep(0.2); col.read()
        assert "bcc" not in sys.modules and not mapped(), ("started", mapped())
        assert {{c.name: c.ok for c in probe(col.cfg, collector=col)}}["bcc"]
        assert "bcc" not in sys.modules and not mapped(), ("doctor", mapped())
        col.stop()
        print("clean")
    """)
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240,
                       cwd=ROOT, env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("clean"), r.stderr


def test_stop_frees_every_descriptor_it_was_handed():
    from otel_agent.ebpf import BpfCollector, BpfConfig

    before = set(os.listdir("/proc/self/fd"))
    col = BpfCollector(dataclasses.replace(BpfConfig(profile="standard", cgroup_root=V2_ROOT),
                                           map_max_entries=64, task_max_entries=64))
    col.start()
    assert col.program_fds() and set(os.listdir("/proc/self/fd")) - before
    col.stop()
    assert set(os.listdir("/proc/self/fd")) <= before


def test_a_family_the_verifier_refuses_says_why_and_the_others_attach(tmp_path):
    from otel_agent.ebpf import BpfCollector, BpfConfig

    src = BpfConfig().source_dir
    for f in src.iterdir():
        (tmp_path / f.name).write_text(f.read_text())
    faults = (src / "faults.c").read_text()
    bad = faults.replace("u64 cgid = bpf_get_current_cgroup_id();", "u64 cgid = *(u64 *)0x1234;")
    assert bad != faults
    (tmp_path / "faults.c").write_text(bad)
    col = BpfCollector(BpfConfig(profile="standard", cgroup_root=V2_ROOT, source_dir=tmp_path,
                                 map_max_entries=64, task_max_entries=64))
    try:
        status = col.start()
        assert not status["faults"].attached
        assert "faults_page_fault_user" in status["faults"].detail
        assert "invalid mem access" in status["faults"].detail  # the verifier's reason
        assert status["cpu"].attached and status["lifecycle"].attached
    finally:
        col.stop()


def test_without_bcc_in_the_child_start_says_install_python3_bpfcc(tmp_path, monkeypatch):
    from otel_agent.ebpf import BpfCollector, BpfConfig, loader

    (tmp_path / "bcc").mkdir()
    (tmp_path / "bcc" / "__init__.py").write_text("raise ImportError('No module named bcc (test)')\n")
    real = loader._child_env

    def env():
        e = real()
        e["PYTHONPATH"] = os.pathsep.join((e["PYTHONPATH"], str(tmp_path)))  # before site-packages
        return e

    monkeypatch.setattr(loader, "_child_env", env)
    with pytest.raises(SourceError, match=r"BCC is not importable \(No module named bcc \(test\)\): "
                                          "install Debian's python3-bpfcc"):
        BpfCollector(BpfConfig(profile="minimal", cgroup_root=V2_ROOT)).start()
    ok, detail = loader.check_bcc()
    assert not ok and "No module named bcc (test)" in detail
