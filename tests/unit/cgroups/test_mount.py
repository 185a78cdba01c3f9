"""Finding the v2 mount from mountinfo fixtures of a pure-v2, a hybrid and a v1-only node."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_agent.cgroups.mount import cgroup2_mounts, controllers, find_cgroup2_mount
from otel_agent.errors import CgroupMountError, ParseError

MOUNTINFO = Path(__file__).parents[2] / "fixtures" / "cgroups" / "mountinfo"
TREES = Path(__file__).parents[2] / "fixtures" / "cgroups" / "trees"


def test_pure_v2():
    assert find_cgroup2_mount(MOUNTINFO / "pure-v2") == Path("/sys/fs/cgroup")


def test_hybrid_is_the_unified_mount_not_the_tmpfs_above_it():
    assert find_cgroup2_mount(MOUNTINFO / "hybrid") == Path("/sys/fs/cgroup/unified")


def test_v1_only_says_so_and_names_the_file():
    with pytest.raises(CgroupMountError, match=r"v1-only: no cgroup2 filesystem is mounted"):
        find_cgroup2_mount(MOUNTINFO / "v1-only")


def test_a_sole_mount_elsewhere_is_used_with_escapes_undone():
    assert find_cgroup2_mount(MOUNTINFO / "elsewhere-escaped") == Path("/host/cgroup v2")


def test_several_mounts_elsewhere_is_ambiguous():
    with pytest.raises(CgroupMountError, match="several cgroup2 mounts.*/a, /b"):
        find_cgroup2_mount(MOUNTINFO / "two-elsewhere")
    assert cgroup2_mounts(MOUNTINFO / "two-elsewhere") == [Path("/a"), Path("/b")]


@pytest.mark.parametrize("name, message", [
    ("no-separator", "no-separator:2: no ' - ' separator"),
    ("truncated", "truncated:2: no filesystem type after ' - '"),
])
def test_malformed_mountinfo_names_file_and_line(name, message):
    with pytest.raises(ParseError, match=message):
        find_cgroup2_mount(MOUNTINFO / name)


def test_unreadable_mountinfo(tmp_path):
    with pytest.raises(CgroupMountError, match="cannot read mount table"):
        find_cgroup2_mount(tmp_path / "missing")


def test_controllers_of_fixture_trees():
    assert controllers(TREES / "pure-v2") == {"cpuset", "cpu", "io", "memory", "hugetlb", "pids",
                                              "rdma", "misc"}
    assert controllers(TREES / "systemd") == set()  # hybrid: every controller bound to v1


def test_controllers_of_a_directory_that_is_not_a_cgroup(tmp_path):
    with pytest.raises(CgroupMountError, match="is not a cgroup v2 directory"):
        controllers(tmp_path)
