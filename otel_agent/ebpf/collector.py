"""The eBPF source: load bpf/*.c (compiled by BCC in a child), attach, read maps into Samples,
free dead cgroups.

Counters live in the kernel, keyed by cgroup id, from attach on (DESIGN rules 1 and 2), so a
container that starts and dies between two reads is still counted: its entries stay until the
agent has exported their final values and acked them. Paths come from cgroup_mkdir (or a scan
of the v2 tree for cgroups older than the agent) so such a container can still be attributed.

The source does I/O only; decode.py turns map contents into Samples. One map failing to read
skips that map for the cycle; BPF being unusable at all is a SourceError from start().

This process never imports bcc: LLVM would stay mapped in it for good (~100 MB). loader.py
compiles and loads in a short-lived child and hands over program and map descriptors; here
programs are attached and maps read through libbcc_bpf (maps.py), keys and values typed by
layout.py.
"""

from __future__ import annotations

import ctypes as ct
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from otel_agent.ebpf import system
from otel_agent.ebpf.classes import trie_entries
from otel_agent.ebpf.config import BpfConfig
from otel_agent.accounting import Cumulative, HeldBack
from otel_agent.ebpf.decode import RawCounters, held_back, to_samples
from otel_agent.ebpf.layout import MAP_LAYOUTS, LpmKey, size_mismatches
from otel_agent.ebpf.maps import FAIL_SLOTS, MapReader, lib, per_cpu_sum
from otel_agent.errors import SourceError
from otel_agent.metrics import ATTR_BPF_MAP
from otel_agent.model import CgroupId, HistogramSample, Sample

if TYPE_CHECKING:
    from otel_agent.ebpf.loader import Loaded

log = logging.getLogger(__name__)

SOURCES = {"lifecycle": "lifecycle.c", "cpu": "cpu.c", "network": "net.c",
           "faults": "faults.c", "syscalls": "syscalls.c"}
TRACEPOINTS: dict[str, tuple[tuple[str, str], ...]] = {
    "lifecycle": (("cgroup:cgroup_mkdir", "lifecycle_cgroup_mkdir"),
                  ("cgroup:cgroup_rmdir", "lifecycle_cgroup_rmdir")),
    "cpu": (("sched:sched_switch", "cpu_sched_switch"),
            ("sched:sched_stat_runtime", "cpu_sched_stat_runtime"),
            ("sched:sched_wakeup", "cpu_sched_wakeup"),
            ("sched:sched_wakeup_new", "cpu_sched_wakeup_new"),
            ("cgroup:cgroup_attach_task", "cpu_cgroup_attach_task"),
            ("sched:sched_process_exit", "cpu_sched_process_exit")),
    "network": (),
    "faults": (("exceptions:page_fault_user", "faults_page_fault_user"),),
    "syscalls": (("raw_syscalls:sys_enter", "syscalls_sys_enter"),
                 ("raw_syscalls:sys_exit", "syscalls_sys_exit")),
}
# Families attached as raw tracepoints: the program gets TP_PROTO's arguments and the kernel
# builds no perf record for it (~40 ns an event here; see bpf/cpu.c). Lifecycle stays on the
# classic tracepoints: its raw arguments are struct cgroup pointers, their format gives the id.
RAW_FAMILIES = frozenset({"cpu", "faults", "syscalls"})
MAPS = {"lifecycle": ("cg_paths", "cg_removed"), "cpu": ("cpu_time", "runq"),
        "network": ("net_traffic",), "faults": ("faults",), "syscalls": ("sys_stats", "sys_threads")}
PER_CGROUP_MAPS = ("cpu_time", "runq", "net_traffic", "faults", "sys_stats")
BPF_F_ALLOW_MULTI = 2  # share the root's hooks with other programs (systemd, CNI)
NET_PROGRAMS = (("net_egress", 1), ("net_ingress", 0))  # BPFAttachType CGROUP_INET_EGRESS/INGRESS
SCAN_INTERVAL_SECONDS = 2.0


def _programs(fam: str) -> list[tuple[str, str]]:
    """The programs of a family and the type each is loaded as (loader.PROG_TYPES)."""
    if fam == "network":
        return [(name, "cgroup_skb") for name, _ in NET_PROGRAMS]
    typ = "raw_tracepoint" if fam in RAW_FAMILIES else "tracepoint"
    return [(fn, typ) for _, fn in TRACEPOINTS[fam]]


def task_set_bits(task_max_entries: int) -> int:
    """log2 of the per-task table's sets (two tasks each): room for task_max_entries tasks."""
    return max(1, (max(task_max_entries, 2) - 1).bit_length() - 1)


@dataclass(frozen=True, slots=True)
class FamilyStatus:
    name: str
    attached: bool
    detail: str  # what is attached, or why not and what to do


@dataclass(frozen=True, slots=True)
class MapHealth:
    name: str
    entries: int
    capacity: int
    update_failures: int  # inserts the BPF program could not make (per-CPU counters)
    evictions: int  # entries an LRU map dropped before their values were final (seen here)


@dataclass
class BpfReading:
    samples: list[Sample] = field(default_factory=list)
    histograms: list[HistogramSample] = field(default_factory=list)
    paths: dict[CgroupId, str] = field(default_factory=dict)  # relative to the v2 root: "/kubepods/..."
    removed: set[CgroupId] = field(default_factory=set)  # counters final; ack() once exported
    health: list[Sample] = field(default_factory=list)


class BpfCollector:
    def __init__(self, cfg: BpfConfig) -> None:
        self.cfg = cfg
        self.start_time_unix_nano = 0
        self.status: dict[str, FamilyStatus] = {}
        self._loaded: Loaded | None = None  # program and map descriptors
        self._root_fd: int | None = None
        self._net_fns: list[tuple[str, int, int | None]] = []  # (program, attach type, link fd)
        self._tp_fds: dict[str, list[tuple[str, int]]] = {}  # family -> (tracepoint, attachment fd)
        self._readers: dict[str, MapReader] = {}
        self._attached: list[str] = []
        self._cum = Cumulative()
        self._held = HeldBack()
        self._deleted: dict[str, int] = {}  # entries of cg_paths / cg_removed this agent deleted
        self._evictions: dict[str, int] = {}
        self._present: dict[str, set[Any]] = {}  # map → raw keys in the last read
        self._present_now: dict[str, set[Any]] = {}
        self._keys: dict[str, dict[int, list[Any]]] = {}  # map → cgroup id → keys last read
        self._acked: OrderedDict[int, None] = OrderedDict()
        self._scan: dict[int, str] = {}
        self._scanned_at = 0.0
        self._warned: set[str] = set()
        self._health: list[MapHealth] = []
        self._entries_now: dict[str, int] = {}
        self._root_id = 0
        self._task_ways = 0

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> dict[str, FamilyStatus]:
        if self._loaded is not None:
            return self.status
        cfg = self.cfg
        missing = system.missing_tracing_caps()
        if missing:
            raise SourceError(
                f"eBPF needs {' and '.join(missing)} (or CAP_SYS_ADMIN); this process lacks "
                f"{', '.join(missing)}: grant them to the agent's container, or run on cgroup files only")
        why = system.ensure_tracefs(cfg.tracefs, cfg.debugfs, mount=cfg.mount_tracefs)
        if why:
            raise SourceError(why)
        headers = system.find_headers()
        if headers is None:
            raise SourceError(
                f"no kernel headers for BCC at /lib/modules/{os.uname().release}/build: run "
                "scripts/install-system.sh (links Debian's generic headers; our programs read no "
                "kernel structs, so any recent headers do)")
        try:
            self._root_id = system.cgroup_id(cfg.cgroup_root)
        except OSError as e:
            raise SourceError(f"cgroup v2 root {cfg.cgroup_root} is not readable: {e}") from e

        tfs = system.tracefs_dir(cfg.tracefs, cfg.debugfs)
        chosen: list[str] = []
        for fam in cfg.enabled_families():
            gone = system.missing_tracepoints(tfs, tuple(tp for tp, _ in TRACEPOINTS[fam]))
            if gone:
                self.status[fam] = FamilyStatus(fam, False, f"this kernel has no tracepoint {', '.join(gone)}")
            elif fam == "network" and system.missing_network_caps():
                self.status[fam] = FamilyStatus(
                    fam, False, "cgroup_skb programs need CAP_NET_ADMIN, which this process lacks "
                    "(the kernel answers EINVAL/EPERM): add NET_ADMIN to the container's capabilities")
            else:
                chosen.append(fam)

        text = "\n".join((cfg.source_dir / f).read_text() for f in ("common.h", *(SOURCES[f] for f in chosen)))
        set_bits = task_set_bits(cfg.task_max_entries)
        cflags = [f"-DMAX_CGROUPS={cfg.map_max_entries}", f"-DMAX_TASKS={cfg.task_max_entries}",
                  f"-DTASK_SETS={1 << set_bits}", f"-DTASK_SET_BITS={set_bits}",
                  f"-DSWITCH_HAS_PREV_STATE={int(system.kernel_at_least(5, 18))}",
                  f"-DMAX_CIDRS={cfg.cidr_max_entries}", f"-DV2_HIERARCHY={system.v2_hierarchy_id()}",
                  f"-DMAX_CPUS={system.possible_cpus()}"]
        # Imported here, not at the top: the package must not import the module that
        # `python -m otel_agent.ebpf.loader` runs as __main__ in the child.
        from otel_agent.ebpf import loader

        try:  # in a child, after tracefs: BCC picks its tracefs directory at import
            loaded = loader.load(text, cflags, {f: _programs(f) for f in chosen},
                                 timeout_seconds=cfg.loader_timeout_seconds)
        except loader.LoaderError as e:
            if e.kind == "import":
                raise SourceError(f"BCC is not importable ({e}): install Debian's python3-bpfcc "
                                  "(never the PyPI package named bcc)") from e
            raise SourceError(f"compiling/loading the BPF programs failed (headers {headers}): {e}") from e
        if loaded.stderr.strip():
            log.debug("bpf loader said: %s", loaded.stderr.strip())
        drift = size_mismatches({n: (m.key_size, m.value_size) for n, m in loaded.maps.items()})
        if drift:
            loaded.close()
            raise SourceError("BPF map layouts differ between bpf/*.c and the agent, refusing to read "
                              f"them: {'; '.join(drift)}")
        self._loaded = loaded

        self.start_time_unix_nano = time.time_ns()
        for fam in chosen:
            try:
                if fam in loaded.family_errors:
                    raise OSError(loaded.family_errors[fam])
                self._attach(fam)
            except Exception as e:
                self._detach(fam)
                self.status[fam] = FamilyStatus(fam, False, self._explain(fam, e))
                log.error("bpf family %s not attached: %s", fam, self.status[fam].detail)
                continue
            self._attached.append(fam)
            progs = [tp for tp, _ in TRACEPOINTS[fam]] or ["cgroup_skb/egress", "cgroup_skb/ingress"]
            how = "attached (raw tracepoints): " if fam in RAW_FAMILIES else "attached: "
            self.status[fam] = FamilyStatus(fam, True, how + ", ".join(progs))
            for m in MAPS[fam]:
                self._readers[m] = self._reader(m)
            if fam == "cpu":
                self._readers["tasks_used"] = self._reader("tasks_used")
                self._readers["cpu_slots"] = self._reader("cpu_slots")
                self._task_ways = 2 << set_bits
            if fam == "lifecycle":
                self._readers["lifecycle_inserts"] = self._reader("lifecycle_inserts")
        self._readers["map_failures"] = self._reader("map_failures")

        if not any(f != "lifecycle" for f in self._attached):
            why = "; ".join(f"{s.name}: {s.detail}" for s in self.status.values() if not s.attached)
            self.stop()
            raise SourceError(f"no BPF program family could be attached ({why})")
        return self.status

    def _reader(self, name: str) -> MapReader:
        assert self._loaded is not None
        m = self._loaded.maps[name]
        key, value = MAP_LAYOUTS[name]
        return MapReader(name, m.fd, key, value, capacity=m.max_entries, map_type=m.type,
                         cpus=system.possible_cpus())

    def program_fds(self) -> dict[str, int]:
        """Program name -> descriptor (for per-program statistics in /proc/self/fdinfo)."""
        return dict(self._loaded.programs) if self._loaded is not None else {}

    def _attach(self, fam: str) -> None:
        assert self._loaded is not None
        progs = self._loaded.programs
        if fam == "network":
            trie = self._reader("peer_classes")
            for (plen, addr), cls in trie_entries(self.cfg.pod_cidrs, self.cfg.cluster_cidrs,
                                                     self.cfg.loopback_is_local).items():
                k = LpmKey(plen)
                k.addr = type(k.addr)(*addr)
                trie.update(k, cls)
            self._root_fd = os.open(self.cfg.cgroup_root, os.O_RDONLY | os.O_DIRECTORY)
            for name, attach_type in NET_PROGRAMS:
                # A link detaches when the agent dies (even SIGKILLed); a plain attach would
                # stay on the root cgroup for good (see system.link_cgroup_prog).
                link = system.link_cgroup_prog(progs[name], self._root_fd, attach_type)
                if link is None:
                    system.attach_cgroup_prog(progs[name], self._root_fd, attach_type, BPF_F_ALLOW_MULTI)
                self._net_fns.append((name, attach_type, link))
            return
        fds = self._tp_fds.setdefault(fam, [])
        for tp, fn_name in TRACEPOINTS[fam]:
            category, event = tp.split(":", 1)
            if fam in RAW_FAMILIES:
                # A raw tracepoint attachment is a descriptor of its own: closing it detaches.
                fd = lib().bpf_attach_raw_tracepoint(progs[fn_name], event.encode())
            else:
                # A perf event carrying the program: it stays attached while the event is open.
                fd = lib().bpf_attach_tracepoint(progs[fn_name], category.encode(), event.encode())
            if fd < 0:
                err = -fd if fd < -1 else ct.get_errno()
                kind = "raw tracepoint" if fam in RAW_FAMILIES else "tracepoint"
                raise OSError(err, f"Failed to attach BPF program {fn_name} to {kind} {tp}: "
                              f"{os.strerror(err)}")
            fds.append((tp, fd))

    def _detach(self, fam: str) -> None:
        if fam == "network":
            for name, attach_type, link in self._net_fns:
                try:
                    if link is not None:
                        os.close(link)  # the last reference: the kernel detaches
                    elif self._loaded is not None and self._root_fd is not None:
                        system.detach_cgroup_prog(self._loaded.programs[name], self._root_fd, attach_type)
                except Exception as e:  # already gone: nothing left to undo
                    log.debug("detach %s: %s", name, e)
            self._net_fns.clear()
            if self._root_fd is not None:
                os.close(self._root_fd)
                self._root_fd = None
            return
        for tp, fd in self._tp_fds.pop(fam, ()):
            if fam in RAW_FAMILIES:
                os.close(fd)
            else:
                lib().bpf_close_perf_event_fd(fd)  # disable, then close: the program detaches

    def _explain(self, fam: str, e: Exception) -> str:
        msg = str(e)
        if fam == "network" and ("Invalid argument" in msg or "not permitted" in msg):
            lacking = system.missing_network_caps()
            if lacking:
                return f"cgroup_skb attach refused ({msg}): needs CAP_NET_ADMIN, which this process lacks"
            return (f"cgroup_skb attach to {self.cfg.cgroup_root} refused ({msg}): is it the cgroup v2 "
                    "root, and are net_cls/net_prio v1 controllers (which disable it) unused?")
        return msg

    def stop(self) -> None:
        """Detach everything; safe to call twice, and after a failed start."""
        if self._loaded is None:
            return
        for fam in ("network", *TRACEPOINTS):
            self._detach(fam)
        try:
            self._loaded.close()  # the last references: the kernel frees programs and maps
        finally:
            self._loaded = None
            self._readers.clear()
            self._attached.clear()

    # --- reading ---------------------------------------------------------------------------

    def read(self) -> BpfReading:
        if self._loaded is None:
            raise SourceError("BpfCollector.read() before start() (or after stop())")
        out = BpfReading()
        # Inserts counted before the entries are read: evictions are never overestimated.
        inserts = [per_cpu_sum(v) for _, v in sorted(self._read("lifecycle_inserts"), key=lambda kv: int(kv[0]))]
        # Removed ids first: a cgroup that is in the removal map now has all its counters in
        # the maps already, so the counter read below cannot miss the end of its life.
        removed = {int(k) for k, _ in self._read("cg_removed")}
        raw = RawCounters()
        self._keys = {}
        cpu_entries, runq_entries = self._read("cpu_time"), self._read("runq")
        # After the maps the slots flush into (see HeldBack), with the clock of the programs.
        slots = [v for _, v in self._read("cpu_slots")]
        held_cpu, held_waits = held_back(slots, time.monotonic_ns())
        for k, v in cpu_entries:
            self._put(raw.cpu_ns, "cpu_time", k, int(k), per_cpu_sum(v))
        for k, v in runq_entries:
            self._put(raw.runq, "runq", k, int(k), (tuple(v.slots), int(v.sum_ns)))
        for into, mapname, held in ((raw.cpu_ns, "cpu_time", held_cpu), (raw.runq, "runq", held_waits)):
            for cg in into:
                into[cg] = self._held.apply((mapname, cg), into[cg], held.get(cg))
        for k, v in self._read("net_traffic"):
            val = (sum(c.bytes for c in v), sum(c.packets for c in v))
            self._put(raw.net, "net_traffic", k, (int(k.cgroup_id), int(k.direction), int(k.peer_class)), val)
        for k, v in self._read("faults"):
            self._put(raw.faults, "faults", k, int(k), per_cpu_sum(v))
        for k, v in self._read("sys_stats"):
            val = (int(v.count), (tuple(v.duration.slots), int(v.duration.sum_ns)))
            self._put(raw.syscalls, "sys_stats", k, int(k), val)
        self._drop_late_entries()
        self._count_vanished(removed)
        paths = {int(k): bytes(v.path).split(b"\0", 1)[0].decode(errors="replace")
                 for k, v in self._read("cg_paths")}
        for name, n, entries in zip(("cg_paths", "cg_removed"), inserts, (len(paths), len(removed))):
            # Not seen by _count_vanished: an entry may be evicted before any read sees it.
            evicted = n - entries - self._deleted.get(name, 0)
            self._evictions[name] = max(self._evictions.get(name, 0), evicted)

        have = raw.cgroup_ids()
        out.samples, out.histograms = to_samples(raw)
        out.removed = {CgroupId(i) for i in removed & have}
        nothing_to_export = removed - have
        if nothing_to_export:  # removed before counting anything: free now, there is no final value
            self._free_lifecycle(nothing_to_export)
        # What the lifecycle maps hold now, for their health: they were read whole just above.
        self._entries_now = {"cg_removed": len(removed) - len(nothing_to_export),
                             "cg_paths": len(paths) - len(nothing_to_export & paths.keys())}
        unknown = [i for i in have if i not in paths and i not in self._scan]
        if unknown and time.monotonic() - self._scanned_at > SCAN_INTERVAL_SECONDS:
            self._rescan()
        for i in have:
            p = paths.get(i) or self._scan.get(i)
            if p is not None:
                out.paths[CgroupId(i)] = p
        out.health = self._health_samples()
        return out

    def _read(self, name: str) -> list[tuple[Any, Any]]:
        r = self._readers.get(name)
        if r is None:
            return []
        try:
            return r.read()
        except Exception as e:  # one map failing skips that map this cycle, never the read
            self._present_now[name] = set(self._present.get(name, ()))  # not "all evicted"
            if f"read:{name}" not in self._warned:
                self._warned.add(f"read:{name}")
                log.error("bpf map %s could not be read: %s", name, e)
            return []

    def _put(self, into: dict, mapname: str, key: Any, rawkey: Any, value: Any) -> None:
        cgid = rawkey[0] if isinstance(rawkey, tuple) else rawkey
        self._keys.setdefault(mapname, {}).setdefault(cgid, []).append(key)
        if cgid in self._acked:
            return  # a late packet of an exported, freed cgroup: dropped below
        self._present_now.setdefault(mapname, set()).add(rawkey)
        value, restarted = self._cum.update((mapname, rawkey), value)
        if restarted and rawkey in self._present.get(mapname, ()):
            # evicted and created again since the last read: what it counted in between is lost
            self._evictions[mapname] = self._evictions.get(mapname, 0) + 1
        into[rawkey] = value

    def _count_vanished(self, removed: set[int]) -> None:
        """An entry read last time and gone now, for a cgroup neither acked nor removed, was
        evicted by its LRU map: the counters restart at zero if the cgroup counts again."""
        for mapname, before in self._present.items():
            now = self._present_now.get(mapname, set())
            for rawkey in before - now:
                cg = rawkey[0] if isinstance(rawkey, tuple) else rawkey
                if cg not in self._acked and cg not in removed:
                    self._evictions[mapname] = self._evictions.get(mapname, 0) + 1
        self._present, self._present_now = self._present_now, {}

    def _drop_late_entries(self) -> None:
        """Entries created for a cgroup after its final values were exported and freed (e.g. a
        FIN retransmitted by a socket that outlived its cgroup): too late to bill, freed again."""
        for mapname, by_cg in self._keys.items():
            late = [k for cg, keys in by_cg.items() if cg in self._acked for k in keys]
            if late:
                self._readers[mapname].delete(late)

    def _rescan(self) -> None:
        """Ids of cgroups older than the agent (no cgroup_mkdir seen): walk the v2 tree."""
        self._scanned_at = time.monotonic()
        root = str(self.cfg.cgroup_root)
        found: dict[int, str] = {}
        for dirpath, dirnames, _ in os.walk(root):
            try:
                found[os.stat(dirpath).st_ino] = "/" + os.path.relpath(dirpath, root).removeprefix(".")
            except OSError:
                continue  # removed while walking
        self._scan = found

    # --- freeing ---------------------------------------------------------------------------

    def ack(self, removed_ids: Iterable[int]) -> None:
        """The agent has exported the final values of these cgroups: free their entries."""
        ids = {int(i) for i in removed_ids}
        if not ids or self._loaded is None:
            return
        for mapname, by_cg in self._keys.items():
            keys = [k for cg in ids for k in by_cg.get(cg, ())]
            if keys:
                self._readers[mapname].delete(keys)
            for cg in ids:
                by_cg.pop(cg, None)
        self._free_lifecycle(ids)
        for key in self._cum.keys():
            mapname, rawkey = key  # type: ignore[misc]
            cg = rawkey[0] if isinstance(rawkey, tuple) else rawkey
            if cg in ids:
                self._cum.forget(key)
                self._held.forget(key)
        for i in ids:
            self._acked[i] = None
        while len(self._acked) > 4 * self.cfg.map_max_entries:
            self._acked.popitem(last=False)

    def _free_lifecycle(self, ids: set[int]) -> None:
        for name in ("cg_removed", "cg_paths"):
            r = self._readers.get(name)
            if r is not None:
                self._deleted[name] = self._deleted.get(name, 0) + r.delete([r.Key(i) for i in ids])
        for i in ids:
            self._scan.pop(i, None)

    # --- health ----------------------------------------------------------------------------

    def _health_samples(self) -> list[Sample]:
        failures = [0] * len(FAIL_SLOTS)
        for k, v in self._read("map_failures"):
            if int(k) < len(failures):
                failures[int(k)] = per_cpu_sum(v)
        health: list[MapHealth] = []
        for fam in self._attached:
            for name in MAPS[fam]:
                r = self._readers[name]
                if name in PER_CGROUP_MAPS:
                    entries = sum(len(v) for v in self._keys.get(name, {}).values())
                elif name in self._entries_now:
                    entries = self._entries_now[name]
                else:
                    try:
                        entries = r.count()
                    except Exception:
                        continue
                fail = failures[FAIL_SLOTS.index(name)] if name in FAIL_SLOTS else 0
                health.append(MapHealth(name, entries, r.capacity, fail, self._evictions.get(name, 0)))
            if fam == "cpu":  # the per-task table: ways taken (counted in BPF), ways taken over
                used = sum(per_cpu_sum(v) for _, v in self._read("tasks_used"))
                health.append(MapHealth("tasks", max(used, 0), self._task_ways,
                                        failures[FAIL_SLOTS.index("tasks")], 0))
        self._health = health
        self._warn(health)
        node = CgroupId(self._root_id)
        out: list[Sample] = []
        for h in health:
            attrs = ((ATTR_BPF_MAP, h.name),)
            out.append(Sample(node, "self.bpf.map.entries", float(h.entries), attrs))
            out.append(Sample(node, "self.bpf.map.capacity", float(h.capacity), attrs))
            out.append(Sample(node, "self.bpf.map.update_failures", float(h.update_failures), attrs))
            out.append(Sample(node, "self.bpf.map.evictions", float(h.evictions), attrs))
        return out

    def _warn(self, health: list[MapHealth]) -> None:
        for h in health:
            full = h.entries >= self.cfg.capacity_warning_ratio * h.capacity
            if full and f"full:{h.name}" not in self._warned:
                self._warned.add(f"full:{h.name}")
                log.warning("bpf map %s is near capacity (%d of %d entries): raise %s, "
                            "or new %s may go uncounted", h.name, h.entries, h.capacity,
                            self.cfg.setting_for(h.name), "threads" if h.name == "tasks" else "cgroups")
            elif not full and h.entries < 0.8 * self.cfg.capacity_warning_ratio * h.capacity:
                self._warned.discard(f"full:{h.name}")
            if (h.update_failures or h.evictions) and f"lost:{h.name}" not in self._warned:
                self._warned.add(f"lost:{h.name}")
                log.warning("bpf map %s lost data: %d failed inserts, %d evictions: raise %s",
                            h.name, h.update_failures, h.evictions, self.cfg.setting_for(h.name))

    @property
    def loader_peak_rss_bytes(self) -> int:
        """Peak RSS of the loader child that compiled the programs (0 before start)."""
        return self._loaded.peak_rss_bytes if self._loaded is not None else 0

    def map_health(self) -> list[MapHealth]:
        """Map health as of the last read (for `doctor`)."""
        return list(self._health)
