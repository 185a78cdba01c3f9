"""Reading and freeing BPF map entries by descriptor: one batch syscall per map per cycle.

The agent holds map descriptors the loader child handed over (loader.py), never a BCC table,
so maps are read through libbcc_bpf (450 KB, links libbpf, not LLVM), with the key and value
types of layout.py. One key and one value buffer per map are kept and reused. Kernels without
batch ops for a map type (before 5.6) answer EINVAL/ENOTSUPP on the first call; then the map is
read key by key from then on.
"""

from __future__ import annotations

import ctypes as ct
import errno
import logging
import os
from typing import Any, Iterable

from otel_agent.ebpf.layout import PER_CPU_TYPES, per_cpu_value

log = logging.getLogger(__name__)

# enum fail_slot in bpf/common.h, in order: the map each slot counts failed inserts of.
FAIL_SLOTS: tuple[str, ...] = (
    "cg_paths", "cg_removed", "cpu_time", "tasks", "runq", "net_traffic", "faults",
    "sys_stats", "sys_threads",
)

_ENOTSUPP = 524  # kernel-internal "not supported", leaks to user space from bpf()
_UNSUPPORTED = {errno.EINVAL, errno.EOPNOTSUPP, _ENOTSUPP, errno.ENOSYS}
LIBBCC_BPF = "libbcc_bpf.so.0"  # Debian's python3-bpfcc depends on it (libbpfcc)

_lib: Any = None


def lib() -> Any:
    """libbcc_bpf: the bpf() wrappers of BCC without its compiler. Arguments are passed as
    ctypes pointers (byref) or plain ints; every call returns an int (negative errno or -1)."""
    global _lib
    if _lib is None:
        _lib = ct.CDLL(LIBBCC_BPF, use_errno=True)
    return _lib


def _err(res: int) -> int:
    return -res if res < -1 else ct.get_errno()


class MapReader:
    """One BPF map: batch reads into kept buffers, batch deletes, with key-by-key fallback."""

    def __init__(self, name: str, fd: int, key: Any, value: Any, *, capacity: int,
                 map_type: int, cpus: int) -> None:
        self.name = name
        self.fd = fd
        self.Key = key
        self.per_cpu = map_type in PER_CPU_TYPES
        self.Value = per_cpu_value(value, cpus) if self.per_cpu else value
        self.capacity = int(capacity)
        self._keys = (self.Key * self.capacity)()
        self._values = (self.Value * self.capacity)()
        self.batch: bool | None = None  # None until the kernel has answered once

    def read(self) -> list[tuple[Any, Any]]:
        """Every (key, value) in the map, copied out (buffers are reused next call)."""
        if self.batch is not False:
            try:
                n = self._lookup_batch()
                self.batch = True
                return [(_copy(self._keys[i]), self._value(self._values[i])) for i in range(n)]
            except _BatchUnsupported:
                self.batch = False
                log.info("bpf map %s: no batch lookup on this kernel, reading key by key", self.name)
        out = []
        for k in self._iter_keys():
            v = self.Value()
            if lib().bpf_lookup_elem(self.fd, ct.byref(k), ct.byref(v)) == 0:
                out.append((_copy(k), self._value(v)))
        return out

    def _value(self, v: Any) -> Any:
        if self.per_cpu and v._length_ and hasattr(v[0], "_pad"):
            return [e.v for e in v]  # padded per-CPU elements: the values alone
        return _copy(v)

    def count(self) -> int:
        """Entries in the map, without decoding them (for per-task maps read only for health)."""
        if self.batch is not False:
            try:
                n = self._lookup_batch()
                self.batch = True
                return n
            except _BatchUnsupported:
                self.batch = False
        return sum(1 for _ in self._iter_keys())

    def _iter_keys(self) -> Iterable[Any]:
        """Keys by BPF_MAP_GET_NEXT_KEY (NULL first: the first key)."""
        prev = None
        for _ in range(self.capacity + 1):
            k = self.Key()
            res = lib().bpf_get_next_key(self.fd, None if prev is None else ct.byref(prev), ct.byref(k))
            if res != 0:
                return
            yield k
            prev = k

    def update(self, key: Any, value: Any, flags: int = 0) -> None:
        k = key if isinstance(key, self.Key) else self.Key(key)
        v = value if isinstance(value, self.Value) else self.Value(value)
        res = lib().bpf_update_elem(self.fd, ct.byref(k), ct.byref(v), ct.c_ulonglong(flags))
        if res != 0:
            err = _err(res)
            raise OSError(err, f"BPF_MAP_UPDATE_ELEM on {self.name}: {os.strerror(err)}")

    def delete(self, keys: Iterable[Any]) -> int:
        """Delete these keys; how many were there to delete (a missing one was evicted)."""
        keys = [k if isinstance(k, self.Key) else self.Key(k) for k in keys]
        if not keys:
            return 0
        arr = (self.Key * len(keys))(*keys)
        cnt = ct.c_uint32(len(keys))
        res = lib().bpf_delete_batch(self.fd, ct.byref(arr), ct.byref(cnt))
        if res == 0:
            return len(keys)
        # ENOENT stops a batch at the first missing key (already evicted): finish one by one.
        done = cnt.value
        for k in keys[cnt.value:]:
            if lib().bpf_delete_elem(self.fd, ct.byref(k)) == 0:  # a missing key is fine
                done += 1
        return done

    def _lookup_batch(self) -> int:
        ksz, vsz = ct.sizeof(self.Key), ct.sizeof(self.Value)
        in_batch, out_batch, cnt = ct.c_uint32(0), ct.c_uint32(0), ct.c_uint32(0)
        total, first = 0, True
        while total < self.capacity:
            cnt.value = self.capacity - total
            res = lib().bpf_lookup_batch(
                self.fd,
                None if first else ct.byref(in_batch),
                ct.byref(out_batch),
                ct.byref(self._keys, ksz * total),
                ct.byref(self._values, vsz * total),
                ct.byref(cnt),
            )
            err = _err(res) if res != 0 else 0
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
    if isinstance(c, (int, bytes)):
        return c
    if isinstance(c, ct._SimpleCData):
        return c.value
    return type(c).from_buffer_copy(c)


def per_cpu_sum(value: Any) -> int:
    """A per-CPU u64 counter as one number."""
    return sum(int(v) for v in value)
