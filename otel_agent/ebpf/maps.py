"""Reading and freeing BPF map entries: one batch syscall per map per cycle.

BCC's own items_lookup_batch allocates max_entries-sized buffers on every call (and in 0.26
aliases its in/out batch tokens), so this keeps one key and one value buffer per map and calls
libbcc's bpf_lookup_batch itself. Kernels without batch ops for a map type (before 5.6) answer
EINVAL/ENOTSUPP on the first call; then the map is read key by key from then on.
"""

from __future__ import annotations

import ctypes as ct
import errno
import logging
from typing import Any, Iterable

log = logging.getLogger(__name__)

# enum fail_slot in bpf/common.h, in order: the map each slot counts failed inserts of.
FAIL_SLOTS: tuple[str, ...] = (
    "cg_paths", "cg_removed", "cpu_time", "tasks", "runq", "net_traffic", "faults",
    "sys_stats", "sys_threads",
)

_ENOTSUPP = 524  # kernel-internal "not supported", leaks to user space from bpf()
_UNSUPPORTED = {errno.EINVAL, errno.EOPNOTSUPP, _ENOTSUPP, errno.ENOSYS}


def _lib() -> Any:
    from bcc.libbcc import lib  # imported late: BCC must see tracefs mounted first

    return lib


class MapReader:
    """One BPF map: batch reads into kept buffers, batch deletes, with key-by-key fallback."""

    def __init__(self, name: str, table: Any) -> None:
        self.name = name
        self.table = table
        self.capacity = int(table.max_entries)
        self._keys = (table.Key * self.capacity)()
        self._values = (table.Leaf * self.capacity)()
        self.batch: bool | None = None  # None until the kernel has answered once

    def read(self) -> list[tuple[Any, Any]]:
        """Every (key, value) in the map, copied out (buffers are reused next call)."""
        if self.batch is not False:
            try:
                n = self._lookup_batch()
                self.batch = True
                return [(_copy(self._keys[i]), _copy(self._values[i])) for i in range(n)]
            except _BatchUnsupported:
                self.batch = False
                log.info("bpf map %s: no batch lookup on this kernel, reading key by key", self.name)
        return [(_copy(k), _copy(v)) for k, v in self.table.items()]

    def count(self) -> int:
        """Entries in the map, without decoding them (for per-task maps read only for health)."""
        if self.batch is not False:
            try:
                n = self._lookup_batch()
                self.batch = True
                return n
            except _BatchUnsupported:
                self.batch = False
        return sum(1 for _ in self.table.keys())

    def delete(self, keys: Iterable[Any]) -> None:
        keys = list(keys)
        if not keys:
            return
        arr = (self.table.Key * len(keys))(*keys)
        cnt = ct.c_uint32(len(keys))
        res = _lib().bpf_delete_batch(self.table.map_fd, ct.byref(arr), ct.byref(cnt))
        if res == 0:
            return
        # ENOENT stops a batch at the first missing key (already evicted): finish one by one.
        for k in keys[cnt.value:]:
            try:
                del self.table[k]
            except KeyError:
                pass

    def _lookup_batch(self) -> int:
        lib = _lib()
        ksz, vsz = ct.sizeof(self.table.Key), ct.sizeof(self.table.Leaf)
        in_batch, out_batch, cnt = ct.c_uint32(0), ct.c_uint32(0), ct.c_uint32(0)
        total, first = 0, True
        while total < self.capacity:
            cnt.value = self.capacity - total
            res = lib.bpf_lookup_batch(
                self.table.map_fd,
                None if first else ct.byref(in_batch),
                ct.byref(out_batch),
                ct.byref(self._keys, ksz * total),
                ct.byref(self._values, vsz * total),
                ct.byref(cnt),
            )
            err = -res if res < 0 else ct.get_errno()
            total += cnt.value
            if res != 0:
                if err == errno.ENOENT:  # walked the whole map
                    break
                if first and err in _UNSUPPORTED:
                    raise _BatchUnsupported(err)
                raise OSError(err, f"BPF_MAP_LOOKUP_BATCH on {self.name}: {errno.errorcode.get(err, err)}")
            if cnt.value == 0:
                break
            in_batch.value = out_batch.value
            first = False
        return total


class _BatchUnsupported(Exception):
    pass


def _copy(c: Any) -> Any:
    """Detach a ctypes element from the reused buffer; plain integers come out as int."""
    if isinstance(c, int):
        return c
    if isinstance(c, ct._SimpleCData):
        return c.value
    return type(c).from_buffer_copy(c)


def per_cpu_sum(value: Any) -> int:
    """A per-CPU u64 counter as one number."""
    return sum(int(v) for v in value)
