"""The ctypes layouts stand in for the C structs BCC used to build: drift must be refused."""

import ctypes as ct

from otel_agent.ebpf.layout import MAP_LAYOUTS, CgPath, Hist, LpmKey, NetKey, SysStats, per_cpu_value, size_mismatches


def test_layouts_have_the_sizes_of_the_c_structs():
    # bpf/common.h, net.c, lifecycle.c, syscalls.c on x86_64 / arm64
    assert ct.sizeof(Hist) == 33 * 8
    assert ct.sizeof(SysStats) == 34 * 8
    assert ct.sizeof(NetKey) == 16
    assert ct.sizeof(LpmKey) == 20
    assert ct.sizeof(CgPath) == 256


def test_a_map_whose_sizes_differ_is_named():
    reported = {n: (ct.sizeof(k), ct.sizeof(v)) for n, (k, v) in MAP_LAYOUTS.items()}
    assert size_mismatches(reported) == []
    reported["runq"] = (8, 33 * 8 + 8)  # a field added to struct hist in C only
    reported["tasks"] = (4, 64)  # never read here: no layout, no complaint
    out = size_mismatches(reported)
    assert len(out) == 1 and out[0].startswith("runq") and "272" in out[0] and "264" in out[0]


def test_per_cpu_values_are_padded_to_eight_bytes():
    assert ct.sizeof(per_cpu_value(ct.c_uint64, 3)) == 24
    assert ct.sizeof(per_cpu_value(ct.c_uint32, 3)) == 24
    assert ct.sizeof(per_cpu_value(LpmKey, 2)) == 48
