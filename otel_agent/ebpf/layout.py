"""Keys and values of the maps the agent reads, as ctypes mirrors of bpf/*.c.

BCC built these types from the C source when it compiled in the agent; now a child compiles
(loader.py) and the agent only holds descriptors, so the layouts are written down here. They
must match the C structs byte for byte: the child reports BCC's key and value sizes of every
map, and the collector refuses to start when one differs from these (check_sizes), naming the
map, rather than reading shifted fields.
"""

from __future__ import annotations

import ctypes as ct
from typing import Any

HIST_SLOTS = 32  # bpf/common.h
PATH_LEN = 256  # bpf/common.h

# enum bpf_map_type (include/uapi/linux/bpf.h): the per-CPU ones have one value per CPU.
PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH = 5, 6, 10
PER_CPU_TYPES = frozenset({PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH})


class Hist(ct.Structure):  # struct hist, bpf/common.h
    _fields_ = [("slots", ct.c_uint64 * HIST_SLOTS), ("sum_ns", ct.c_uint64)]


class CgPath(ct.Structure):  # struct cg_path, bpf/lifecycle.c
    _fields_ = [("path", ct.c_char * PATH_LEN)]


class NetKey(ct.Structure):  # struct net_key, bpf/net.c
    _fields_ = [("cgroup_id", ct.c_uint64), ("direction", ct.c_uint8), ("peer_class", ct.c_uint8),
                ("pad", ct.c_uint8 * 6)]


class NetVal(ct.Structure):  # struct net_val, bpf/net.c
    _fields_ = [("bytes", ct.c_uint64), ("packets", ct.c_uint64)]


class LpmKey(ct.Structure):  # struct lpm_key, bpf/net.c
    _fields_ = [("prefixlen", ct.c_uint32), ("addr", ct.c_uint8 * 16)]


class CpuSlot(ct.Structure):  # struct cpu_slot, bpf/cpu.c
    _fields_ = [("last_ns", ct.c_uint64), ("pend_cgroup", ct.c_uint64), ("pend_ns", ct.c_uint64),
                ("cur_cgroup", ct.c_uint64), ("cur_gen", ct.c_uint64), ("cur_task", ct.c_uint64),
                ("idle_task", ct.c_uint64), ("counted", ct.c_uint64),
                ("wait_cgroup", ct.c_uint64), ("wait_first_ns", ct.c_uint64), ("wait_sum_ns", ct.c_uint64),
                ("wait_n", ct.c_uint64), ("wait_slots", ct.c_uint32 * HIST_SLOTS)]


class SysStats(ct.Structure):  # struct sys_stats, bpf/syscalls.c
    _fields_ = [("duration", Hist), ("count", ct.c_uint64)]


# map name -> (key type, value type); for per-CPU maps the value of one CPU.
MAP_LAYOUTS: dict[str, tuple[Any, Any]] = {
    "map_failures": (ct.c_int32, ct.c_uint64),  # BPF_PERCPU_ARRAY: int keys
    "cg_paths": (ct.c_uint64, CgPath),
    "cg_removed": (ct.c_uint64, ct.c_uint64),
    "lifecycle_inserts": (ct.c_int32, ct.c_uint64),
    "cpu_time": (ct.c_uint64, ct.c_uint64),
    "tasks_used": (ct.c_int32, ct.c_int64),
    "cpu_slots": (ct.c_int32, CpuSlot),
    "runq": (ct.c_uint64, Hist),
    "net_traffic": (NetKey, NetVal),
    "peer_classes": (LpmKey, ct.c_uint8),
    "faults": (ct.c_uint64, ct.c_uint64),
    "sys_stats": (ct.c_uint64, SysStats),
    "sys_threads": (ct.c_uint32, ct.c_uint64),
}


def size_mismatches(reported: dict[str, tuple[int, int]]) -> list[str]:
    """Maps whose (key_size, value_size) as BCC compiled them differ from MAP_LAYOUTS."""
    out = []
    for name, (ksz, vsz) in sorted(reported.items()):
        layout = MAP_LAYOUTS.get(name)
        if layout is None:
            continue  # never read from user space (tasks, path_scratch, ...)
        mine = (ct.sizeof(layout[0]), ct.sizeof(layout[1]))
        if mine != (ksz, vsz):
            out.append(f"{name} (the C source has key {ksz} / value {vsz} bytes, "
                       f"otel_agent/ebpf/layout.py {mine[0]} / {mine[1]})")
    return out


def per_cpu_value(value: Any, cpus: int) -> Any:
    """The user-space value of a per-CPU map: each CPU's value padded to 8 bytes, all CPUs."""
    pad = -ct.sizeof(value) % 8
    if pad:
        value = type(f"{value.__name__}Padded", (ct.Structure,),
                     {"_fields_": [("v", value), ("_pad", ct.c_uint8 * pad)]})
    return value * cpus
