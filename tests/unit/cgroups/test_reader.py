"""The reader on fixture trees: units, attributes, absent files, gone cgroups, bad files."""

from __future__ import annotations

import logging
import os
import resource
import shutil
from pathlib import Path

import pytest

from otel_agent.cgroups.discovery import discover
from otel_agent.cgroups.reader import FILE_METRICS, MALFORMED, CgroupReader
from otel_agent.errors import ConfigError
from otel_agent.metrics import METRICS
from otel_agent.model import CgroupId, CgroupRef, Scope

TREES = Path(__file__).parents[2] / "fixtures" / "cgroups" / "trees"
HYBRID_ABSENT = {"memory.current", "memory.stat", "memory.peak", "memory.events", "io.stat",
                 "pids.current"}


def kv(path: str, name: str) -> dict[str, int]:
    """The fixture file as the kernel documents it, split independently of the parsers."""
    return {k: int(v) for k, v in (line.split() for line in open(os.path.join(path, name)))}


def one(path: str, name: str) -> int:
    return int(open(os.path.join(path, name)).read())


def psi_total(path: str, name: str, kind: str) -> int:
    for line in open(os.path.join(path, name)):
        if line.startswith(kind):
            return int(line.rsplit("total=", 1)[1])
    raise AssertionError(f"no {kind} line in {name}")


def by_cgroup(samples):
    out: dict[int, dict[tuple, float]] = {}
    for s in samples:
        key = (s.metric, s.attributes)
        assert key not in out.setdefault(s.cgroup_id, {}), f"duplicate sample {s}"
        out[s.cgroup_id][key] = s.value
    return out


@pytest.fixture
def pure_v2():
    d = discover(TREES / "pure-v2")
    with CgroupReader(TREES / "pure-v2") as reader:
        yield d, reader.read(d.refs)


def test_container_on_pure_v2_gets_every_metric_in_table_units(pure_v2):
    d, reading = pure_v2
    assert not reading.skipped and not reading.gone
    got = by_cgroup(reading.samples)
    container = next(r for r in d.refs if r.scope is Scope.CONTAINER and r.runtime == "cri-o")
    p = container.path
    cpu, mem, ev = kv(p, "cpu.stat"), kv(p, "memory.stat"), kv(p, "memory.events")
    expected = {
        ("cpu.time", ()): cpu["usage_usec"] / 1e6,
        ("cpu.mode_time", (("cpu.mode", "user"),)): cpu["user_usec"] / 1e6,
        ("cpu.mode_time", (("cpu.mode", "system"),)): cpu["system_usec"] / 1e6,
        ("cpu.periods", ()): cpu["nr_periods"],
        ("cpu.throttled_periods", ()): cpu["nr_throttled"],
        ("cpu.throttled_time", ()): cpu["throttled_usec"] / 1e6,
        ("memory.usage", ()): one(p, "memory.current"),
        ("memory.working_set", ()): one(p, "memory.current") - mem["inactive_file"],
        ("memory.rss", ()): mem["anon"],
        ("memory.page_cache", ()): mem["file"],
        ("memory.peak", ()): one(p, "memory.peak"),
        ("memory.oom_kills", ()): ev["oom_kill"],
        ("pids", ()): one(p, "pids.current"),
    }
    for res in ("cpu", "memory", "io"):
        for kind in ("some", "full"):
            attrs = (("otel_agent.pressure.kind", kind), ("otel_agent.pressure.resource", res))
            expected[("pressure.stall_time", attrs)] = psi_total(p, f"{res}.pressure", kind) / 1e6
    for line in open(os.path.join(p, "io.stat")):
        dev, *fields = line.split()
        f = dict(x.split("=") for x in fields)
        for direction, b, ops in (("read", "rbytes", "rios"), ("write", "wbytes", "wios")):
            attrs = (("disk.io.direction", direction), ("system.device", dev))
            expected[("disk.io", attrs)] = int(f[b])
            expected[("disk.operations", attrs)] = int(f[ops])
    assert got[container.cgroup_id] == pytest.approx(expected)
    assert len(expected) == 13 + 6 + 8  # two devices in the fixture


def test_each_scope_gets_only_what_the_metric_table_exports(pure_v2):
    d, reading = pure_v2
    scope = {r.cgroup_id: r.scope for r in d.refs}
    for s in reading.samples:
        assert scope[s.cgroup_id] in METRICS[s.metric].names, s
        assert list(s.attributes) == sorted(s.attributes)
        assert {k for k, _ in s.attributes} == set(METRICS[s.metric].attributes)
    kubepods = next(r for r in d.refs if r.scope is Scope.KUBEPODS)
    assert {m for m, _ in by_cgroup(reading.samples)[kubepods.cgroup_id]} == {
        "cpu.time", "memory.usage", "memory.working_set"}


def test_node_reads_what_the_root_offers(pure_v2):
    d, reading = pure_v2
    node = d.refs[0]
    assert node.scope is Scope.NODE
    metrics = {m for m, _ in by_cgroup(reading.samples)[node.cgroup_id]}
    assert metrics == {"cpu.time", "cpu.mode_time", "pressure.stall_time"}
    # the fixture's root has no memory files, like a real v2 root has no memory.current
    assert reading.absent == {"memory.current", "memory.stat"}


def test_hybrid_node_reports_absent_files_and_no_samples_for_them():
    d = discover(TREES / "systemd")
    with CgroupReader(TREES / "systemd") as reader:
        reading = reader.read(d.refs)
        again = reader.read(d.refs)
    assert reading.absent == HYBRID_ABSENT and again.absent == HYBRID_ABSENT
    metrics = {s.metric for s in reading.samples}
    assert metrics == {"cpu.time", "cpu.mode_time", "pressure.stall_time"}  # no zeros for absent
    assert len(again.samples) == len(reading.samples) and not reading.skipped


def test_working_set_is_floored_at_zero(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(TREES / "pure-v2", root)
    d = discover(root)
    pod = next(r for r in d.refs if r.scope is Scope.POD)
    inactive = kv(pod.path, "memory.stat")["inactive_file"]
    Path(pod.path, "memory.current").write_text(f"{inactive - 4096}\n")
    with CgroupReader(root) as reader:
        got = by_cgroup(reader.read([pod]).samples)[pod.cgroup_id]
    assert got[("memory.working_set", ())] == 0
    assert got[("memory.usage", ())] == inactive - 4096


def test_malformed_file_skips_that_file_only_and_logs_once(tmp_path, caplog):
    root = tmp_path / "root"
    shutil.copytree(TREES / "pure-v2", root)
    d = discover(root)
    victim = next(r for r in d.refs if r.scope is Scope.CONTAINER)
    Path(victim.path, "cpu.stat").write_text("usage_usec 12\nuser_usec 1")  # truncated
    with caplog.at_level(logging.WARNING), CgroupReader(root) as reader:
        reading = reader.read(d.refs)
        reader.read(d.refs)
    assert reading.skipped == {MALFORMED: 1}
    got = by_cgroup(reading.samples)
    assert ("cpu.time", ()) not in got[victim.cgroup_id]
    assert ("memory.usage", ()) in got[victim.cgroup_id]  # the other files still count
    assert all(("cpu.time", ()) in got[r.cgroup_id] for r in d.refs if r is not victim)
    messages = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(messages) == 1 and victim.path in messages[0] and "truncated" in messages[0]


def test_gone_cgroups_are_reported_and_forgotten(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(TREES / "cgroupfs", root)
    d = discover(root)
    pods = [r for r in d.refs if r.scope is Scope.POD]
    with CgroupReader(root) as reader:
        reader.read(d.refs)
        assert reader.open_cgroups == len(d.refs)
        # 1) no longer asked for: closed, reported once
        rest = [r for r in d.refs if r is not pods[0]]
        assert reader.read(rest).gone == {pods[0].cgroup_id}
        assert reader.open_cgroups == len(rest)
        assert reader.read(rest).gone == set()
        # 2) removed before it was ever opened
        shutil.rmtree(pods[0].path)
        reading = reader.read(rest + [pods[0]])
        assert reading.gone == {pods[0].cgroup_id}
        assert pods[0].cgroup_id not in {s.cgroup_id for s in reading.samples}
        # 3) removed and re-created under the same path: another cgroup, not this one
        shutil.rmtree(pods[1].path)
        os.mkdir(pods[1].path)
        reader.close()
        reading = reader.read([pods[1]])
        assert reading.gone == {pods[1].cgroup_id} and not reading.samples


def test_relative_ref_paths_are_under_root():
    root = TREES / "systemd"
    ref = CgroupRef(CgroupId(os.stat(root / "kubepods.slice").st_ino), Scope.KUBEPODS,
                    "kubepods.slice")
    with CgroupReader(root) as reader:
        (sample,) = [s for s in reader.read([ref]).samples if s.metric == "cpu.time"]
    assert sample.value == kv(str(root / "kubepods.slice"), "cpu.stat")["usage_usec"] / 1e6


def test_files_longer_than_the_read_size_are_read_whole():
    d = discover(TREES / "pure-v2")
    with CgroupReader(TREES / "pure-v2") as big, \
            CgroupReader(TREES / "pure-v2", read_size_bytes=16) as small:
        assert sorted(map(repr, small.read(d.refs).samples)) == \
            sorted(map(repr, big.read(d.refs).samples))
        assert sorted(map(repr, small.read(d.refs).samples)) == \
            sorted(map(repr, big.read(d.refs).samples))


def test_files_knob():
    d = discover(TREES / "pure-v2")
    no_psi = [f for f in FILE_METRICS if not f.endswith(".pressure")]
    with CgroupReader(TREES / "pure-v2", files=no_psi) as reader:
        reading = reader.read(d.refs)
    assert reading.samples and not [s for s in reading.samples if s.metric.startswith("pressure")]
    with pytest.raises(ConfigError, match="cgroup files memory.high: not known"):
        CgroupReader(TREES / "pure-v2", files=["cpu.stat", "memory.high"])


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_close_releases_every_descriptor():
    d = discover(TREES / "pure-v2")
    before = _open_fds()
    reader = CgroupReader(TREES / "pure-v2")
    reader.read(d.refs)
    assert _open_fds() > before + len(d.refs)  # kept open between reads: that is the point
    reader.close()
    assert _open_fds() == before


def test_open_file_limit_falls_back_to_reading_per_cycle():
    d = discover(TREES / "pure-v2")
    with CgroupReader(TREES / "pure-v2") as reader:
        expected = sorted(map(repr, reader.read(d.refs).samples))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    reader = CgroupReader(TREES / "pure-v2")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (_open_fds() + 12, hard))
        first = reader.read(d.refs)
        second = reader.read(d.refs)
    finally:
        reader.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert sorted(map(repr, first.samples)) == expected
    assert sorted(map(repr, second.samples)) == expected
    assert not first.skipped


def test_unchanged_files_reuse_their_samples_changed_ones_do_not(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(TREES / "pure-v2", root)
    d = discover(root)
    pod = next(r for r in d.refs if r.scope is Scope.POD)
    with CgroupReader(root) as reader, CgroupReader(root, reuse_unchanged=False) as fresh:
        first = reader.read(d.refs)
        cpu = Path(pod.path, "cpu.stat")
        usage = kv(pod.path, "cpu.stat")["usage_usec"]
        cpu.write_text(cpu.read_text().replace(f"usage_usec {usage}", f"usage_usec {usage + 1}"))
        mem = Path(pod.path, "memory.current")
        mem.write_text(f"{one(pod.path, 'memory.current') + 4096}\n")
        second = reader.read(d.refs)
        assert sorted(map(repr, second.samples)) == sorted(map(repr, fresh.read(d.refs).samples))
    old = {(s.cgroup_id, s.metric, s.attributes): s for s in first.samples}
    new = {(s.cgroup_id, s.metric, s.attributes): s for s in second.samples}
    assert old.keys() == new.keys()
    changed = {k for k in new if new[k] is not old[k]}
    # the edited files and those derived from them (working set) were rebuilt; the rest reused
    assert {k[1] for k in changed if k[0] == pod.cgroup_id} >= {"cpu.time", "memory.usage",
                                                                 "memory.working_set"}
    assert new[(pod.cgroup_id, "cpu.time", ())].value == (usage + 1) / 1e6
    # elsewhere only what memory.current and memory.stat feed is rebuilt (working set needs both)
    rebuilt_always = set(FILE_METRICS["memory.current"] + FILE_METRICS["memory.stat"])
    assert {k[1] for k in changed if k[0] != pod.cgroup_id} == rebuilt_always


def test_max_open_files_caps_kept_descriptors_not_results():
    d = discover(TREES / "pure-v2")
    with CgroupReader(TREES / "pure-v2") as reader:
        expected = sorted(map(repr, reader.read(d.refs).samples))
        assert reader.open_files > 20
    before = _open_fds()
    with CgroupReader(TREES / "pure-v2", max_open_files=20) as reader:
        assert sorted(map(repr, reader.read(d.refs).samples)) == expected
        assert sorted(map(repr, reader.read(d.refs).samples)) == expected
        assert reader.open_files == 20 and _open_fds() == before + 20
        reader.read(d.refs[:1])  # the rest are dropped, their descriptors closed
        assert reader.open_files == len(reader._open[d.refs[0].cgroup_id].files)


def test_a_cgroup_that_cannot_be_opened_is_skipped_not_fatal():
    root = TREES / "systemd"
    d = discover(root)
    not_a_dir = CgroupRef(CgroupId(os.stat(root / "cpu.stat").st_ino), Scope.POD,
                          str(root / "cpu.stat"))
    with CgroupReader(root) as reader:
        reading = reader.read([not_a_dir, *d.refs])
    assert reading.skipped == {"read_error": 1}
    assert {s.cgroup_id for s in reading.samples} == {r.cgroup_id for r in d.refs}


def test_a_file_that_fails_to_read_is_counted_and_the_rest_of_its_cgroup_still_read(tmp_path):
    """A kept descriptor that fails (here: made a directory's, EISDIR) after files of the same
    cgroup that did not change: that file is counted and skipped, the others all come out."""
    d = discover(TREES / "pure-v2")
    pod = next(r for r in d.refs if r.scope is Scope.POD)
    with CgroupReader(TREES / "pure-v2") as reader:
        first = reader.read(d.refs)
        files = reader._open[pod.cgroup_id].files
        i = next(i for i, f in enumerate(files) if i >= 1 and f[3])  # cached, not the first
        lost = {(s.cgroup_id, s.metric, s.attributes) for s in files[i][3]}
        other = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        os.dup2(other, files[i][1])
        os.close(other)
        second = reader.read(d.refs)
    assert second.skipped == {"read_error": 1} and not second.gone
    keys = [(s.cgroup_id, s.metric, s.attributes) for s in second.samples]
    assert sorted(keys) == sorted({(s.cgroup_id, s.metric, s.attributes) for s in first.samples} - lost)
    assert len(keys) == len(set(keys))
