"""Every stat file format on fixture text: well-formed, malformed and truncated."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_agent.cgroups import parsers
from otel_agent.errors import ParseError

FILES = Path(__file__).parents[2] / "fixtures" / "cgroups" / "files"
TREE = Path(__file__).parents[2] / "fixtures" / "cgroups" / "trees" / "pure-v2" / "kubepods.slice"


def text(rel: str) -> str:
    return (FILES / rel).read_text()


def test_cpu_stat_hybrid_has_no_throttling_fields():
    st = parsers.parse_cpu_stat(text("cpu.stat/hybrid"))
    assert (st.usage_usec, st.user_usec, st.system_usec) == (90738725, 63072550, 27666175)
    # absent, not zero: the cpu controller is not enabled for this cgroup
    assert st.nr_periods is None and st.nr_throttled is None and st.throttled_usec is None


def test_cpu_stat_with_cpu_controller_and_unknown_keys():
    st = parsers.parse_cpu_stat(text("cpu.stat/throttled"))
    assert (st.nr_periods, st.nr_throttled, st.throttled_usec) == (120, 7, 35000)
    assert st.usage_usec == st.user_usec + st.system_usec


def test_flat_keyed_fast_and_slow_paths_agree():
    # Tabs and double spaces are refused by the fast path's regex but are still well-formed.
    clean = text("cpu.stat/throttled")
    spaced = clean.replace(" ", "  ").replace("usage_usec  ", "usage_usec\t")
    assert parsers.parse_flat_keyed(spaced, "x") == parsers.parse_flat_keyed(clean, "x")
    assert len(parsers.parse_flat_keyed(clean, "x")) == clean.count("\n")


def test_memory_stat_from_tree():
    ms = parsers.parse_memory_stat((TREE / "memory.stat").read_text())
    raw = dict(line.split() for line in (TREE / "memory.stat").read_text().splitlines())
    assert ms["anon"] == int(raw["anon"]) and ms["inactive_file"] == int(raw["inactive_file"])
    assert len(ms) == len(raw)  # kernel keys we do not use are kept, not dropped


def test_memory_events_and_single_values():
    assert parsers.parse_memory_events(text("memory.events/valid"))["oom_kill"] == 2
    assert parsers.parse_single_value(text("memory.current/valid"), "memory.current") == 52428800
    assert parsers.parse_single_value(text("pids.max/max"), "pids.max", allow_max=True) is None


def test_io_stat_per_device_ignores_unknown_keys():
    io = parsers.parse_io_stat(text("io.stat/valid"))
    assert set(io) == {"8:0", "253:1"}
    assert io["8:0"] == parsers.IoStat(1048576, 2097152, 256, 512, 0, 0)
    assert io["253:1"].rbytes == 4096  # the cost.* keys of iocost did not get in the way


def test_io_stat_before_discard_stats_and_empty():
    io = parsers.parse_io_stat(text("io.stat/old-kernel"))
    assert io["8:0"].dbytes is None and io["8:0"].wios == 512
    assert parsers.parse_io_stat(text("io.stat/empty")) == {}


def test_pressure():
    p = parsers.parse_pressure(text("pressure/cpu"), "cpu.pressure")
    assert (p.some_total_usec, p.full_total_usec) == (5408510, 1234)
    p = parsers.parse_pressure(text("pressure/some-only"), "cpu.pressure")
    assert p.full_total_usec is None  # cpu.pressure before 5.13 has no 'full' line


def _parse_as(kind: str):
    return {
        "cpu.stat": lambda t, src: parsers.parse_cpu_stat(t, src),
        "memory.stat": lambda t, src: parsers.parse_memory_stat(t, src),
        "memory.events": lambda t, src: parsers.parse_memory_events(t, src),
        "memory.current": lambda t, src: parsers.parse_single_value(t, src),
        "io.stat": lambda t, src: parsers.parse_io_stat(t, src),
        "pressure": lambda t, src: parsers.parse_pressure(t, src),
    }[kind]


BAD = [
    # fixture file, what the message must say (file name is always checked too)
    ("cpu.stat/truncated", "truncated"),
    ("cpu.stat/empty", "missing key(s) usage_usec, user_usec, system_usec"),
    ("cpu.stat/missing-usage", "missing key(s) usage_usec"),
    ("cpu.stat/not-integer", ":1: usage_usec: not an integer: '9073x725'"),
    ("cpu.stat/negative", ":1: usage_usec: negative"),
    ("cpu.stat/three-fields", ":1: expected 'key value'"),
    ("cpu.stat/key-only", ":2: expected 'key value', got 'user_usec'"),
    ("memory.stat/missing-inactive-file", "missing key(s) inactive_file"),
    ("memory.stat/truncated", "truncated: last line 'active_fi'"),
    ("memory.events/no-oom-kill", "missing key(s) oom_kill"),
    ("memory.current/empty", "expected one line with one value, got 0 lines"),
    ("memory.current/two-lines", "got 2 lines"),
    ("memory.current/max", "not an integer: 'max'"),
    ("memory.current/truncated", "truncated"),
    ("memory.current/garbage", "not an integer: 'lots'"),
    ("io.stat/bad-device", ":1: expected a MAJ:MIN device first, got 'sda'"),
    ("io.stat/missing-wios", ":1: device 8:0: missing wios"),
    ("io.stat/no-equals", ":1: expected key=value, got 'wbytes'"),
    ("io.stat/not-integer", ":1: wbytes: not an integer: '2x'"),
    ("io.stat/duplicate", ":2: device 8:0 listed twice"),
    ("io.stat/truncated", "truncated"),
    ("pressure/no-total", ":1: 'some' line has no total="),
    ("pressure/bad-kind", ":1: expected a 'some' or 'full' line"),
    ("pressure/full-only", "no 'some' line"),
    ("pressure/truncated", "truncated"),
    ("pressure/negative", ":1: some total: negative"),
]


@pytest.mark.parametrize("rel, message", BAD, ids=[b[0] for b in BAD])
def test_malformed_files_raise_parse_error_naming_file_and_problem(rel, message):
    kind = rel.split("/")[0]
    source = f"/sys/fs/cgroup/x/{kind}"
    with pytest.raises(ParseError) as info:
        _parse_as(kind)(text(rel), source)
    assert str(info.value).startswith(source)
    assert message in str(info.value)


def test_every_bad_fixture_is_in_the_table():
    good = {"cpu.stat/hybrid", "cpu.stat/throttled", "memory.events/valid", "memory.current/valid",
            "pids.max/max", "io.stat/valid", "io.stat/old-kernel", "io.stat/empty", "pressure/cpu",
            "pressure/some-only"}
    on_disk = {str(p.relative_to(FILES)) for p in FILES.rglob("*") if p.is_file()}
    assert on_disk - good == {b[0] for b in BAD}
