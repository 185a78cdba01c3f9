"""The collection cycle and the export loop.

Each cycle: find the pod and container cgroups, read their stat files, read the BPF maps,
resolve pod metadata, convert (pure) and export. What makes it a billing agent rather than a
sampler is what it remembers between cycles:

* the last reading of every cgroup, so a cgroup that disappears between two cycles is
  exported once more with its final value (DESIGN rule 3, "deleted cgroups still have usage");
* BPF counters of cgroups that lived and died between two cycles, attributed through the path
  the kernel reported when they were created;
* finals are dropped (and BPF map entries freed) only after an export has succeeded; a failed
  export loses nothing because every value is cumulative and the next export carries it.

One entity failing never fails the cycle (DESIGN rule 5): it is skipped and counted in
`otel_agent.entities.skipped`.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData

from otel_agent.cgroups.discovery import discover
from otel_agent.cgroups.layout import classify
from otel_agent.cgroups.reader import CgroupReader
from otel_agent.config import AgentConfig
from otel_agent.k8s.source import MetadataSource
from otel_agent.metrics import METRICS, Instrument
from otel_agent.model import (
    CgroupId,
    CgroupRef,
    HistogramSample,
    NodeMeta,
    PodMeta,
    PodUid,
    Sample,
    Scope,
)
from otel_agent.otlp.convert import Converter, Snapshot, StartTimes, count_points
from otel_agent.otlp.exporter import export

log = logging.getLogger(__name__)

NODE_ID = CgroupId(0)  # stands for the node when the cgroup root itself could not be read
MAX_FINALS = 100_000  # bound on remembered dead cgroups while exports keep failing
# A dead cgroup whose pod the metadata source does not know yet (API server down while the
# pod came and went) keeps being exported with its final value for this long, so the ledger
# can attribute it once the metadata arrives: late rather than never.
UNRESOLVED_GRACE_SECONDS = 900.0


def boot_time_ns(proc: Path = Path("/proc")) -> int:
    """The node's boot time, the start of every cgroup-file counter (see otlp/convert.py)."""
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1]) * 1_000_000_000
    raise RuntimeError(f"{proc}/stat has no btime line")


@dataclass
class Cycle:
    """What one collection produced, and what to forget once it has been exported."""

    data: MetricsData
    duration_seconds: float
    points: int
    finals: set[CgroupId] = field(default_factory=set)
    bpf_removed: set[CgroupId] = field(default_factory=set)
    refs: dict[CgroupId, CgroupRef] = field(default_factory=dict)
    pods: dict[PodUid, PodMeta] = field(default_factory=dict)


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        *,
        cgroup_root: Path,
        metadata: MetadataSource,
        exporter: MetricExporter | None,
        bpf: Any | None = None,
        proc: Path = Path("/proc"),
    ) -> None:
        self.cfg = cfg
        self.cgroup_root = cgroup_root
        self.metadata = metadata
        self.exporter = exporter
        self.bpf = bpf
        self.reader = CgroupReader(cgroup_root)
        now = time.time_ns()
        self.converter = Converter(
            node_name=cfg.node_name,
            extra_attributes=cfg.resource_attributes,
            start_times=StartTimes(
                cgroup=boot_time_ns(proc),
                ebpf=getattr(bpf, "start_time_unix_nano", now) if bpf else now,
                agent=now,
            ),
        )
        self._refs: dict[CgroupId, CgroupRef] = {}
        self._last: dict[CgroupId, list[Sample]] = {}
        self._finals: dict[CgroupId, tuple[CgroupRef, list[Sample]]] = {}
        self._dead_since: dict[CgroupId, float] = {}  # monotonic time a cgroup was seen gone
        self._bpf_at_read: dict[CgroupId, float] = {}  # BPF on-CPU when its files were last read
        self._bpf_settled: set[CgroupId] = set()  # finals whose BPF tail has been added
        # BPF pod roll-up: values of acknowledged (freed) dead containers, per pod series.
        self._bpf_pod_base: dict[tuple, float] = {}
        self._bpf_pod_hist_base: dict[tuple, list] = {}
        self._bpf_final_of: dict[CgroupId, tuple[CgroupId, list]] = {}
        self._seen_bpf_only: dict[CgroupId, CgroupRef] = {}
        self._skipped: Counter[str] = Counter()
        self._logged_skips: set[str] = set()
        self._absent_logged = False
        self.series_exported = 0
        self.export_failures = 0
        self.last_duration_seconds = 0.0
        self.cycles = 0
        self.heartbeat = time.monotonic()

    # --- collection ----------------------------------------------------------------------
    def collect(self) -> Cycle:
        # A cycle allocates tens of thousands of short-lived tuples on a big node; refcounting
        # frees them. Letting the cyclic GC run in the middle scans the agent's whole long-lived
        # heap again and again (measured: conversion ~2x slower at 1000 pods), so it waits.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._collect()
        finally:
            if was_enabled:
                gc.enable()

    def _collect(self) -> Cycle:
        t0 = time.perf_counter()
        now_ns = time.time_ns()
        refs: dict[CgroupId, CgroupRef] = {}
        try:
            disc = discover(self.cgroup_root, kubepods=self.cfg.kubepods)
            refs = {r.cgroup_id: r for r in disc.refs}
            self._skip(disc.skipped)
        except Exception as e:  # a whole source failing is loud, but the agent goes on
            self._skip({"discovery_failed": 1})
            log.error("cgroup discovery under %s failed: %s", self.cgroup_root, e)

        reading = self.reader.read(list(refs.values()))
        self._skip(reading.skipped)
        if reading.absent and not self._absent_logged:
            self._absent_logged = True
            log.info("cgroup v2 here does not offer %s: those metrics are absent, not zero",
                     ", ".join(sorted(reading.absent)))

        samples: list[Sample] = []
        fresh: dict[CgroupId, list[Sample]] = {}
        for s in reading.samples:
            fresh.setdefault(s.cgroup_id, []).append(s)
            samples.append(s)

        # Cgroups gone since the last cycle: export their last counters once more (finals).
        gone = set(reading.gone) | (set(self._last) - set(refs))
        for cid in gone:
            last = self._last.pop(cid, None)
            ref = self._refs.get(cid)
            if last and ref is not None and len(self._finals) < MAX_FINALS:
                counters = [s for s in last if METRICS[s.metric].instrument is Instrument.COUNTER]
                self._finals[cid] = (ref, counters)
            else:
                self._bpf_at_read.pop(cid, None)
        for cid, group in fresh.items():
            ref = refs.get(cid)
            if ref is not None and ref.scope in (Scope.POD, Scope.CONTAINER):
                self._last[cid] = group
        self._refs = refs

        histograms: list[HistogramSample] = []
        bpf_removed: set[CgroupId] = set()
        all_refs = dict(refs)
        if self.bpf is not None:
            histograms, bpf_removed = self._merge_bpf(all_refs, samples, fresh)

        finals = set(self._finals)
        for cid, (ref, counters) in self._finals.items():
            all_refs.setdefault(cid, ref)
            samples.extend(counters)

        node_ref = next((r for r in refs.values() if r.scope is Scope.NODE), None)
        if node_ref is None:
            node_ref = CgroupRef(NODE_ID, Scope.NODE, str(self.cgroup_root))
            all_refs[NODE_ID] = node_ref

        pods: dict[PodUid, PodMeta] = {}
        for ref in all_refs.values():
            if ref.pod_uid and ref.pod_uid not in pods:
                meta = self.metadata.pod(ref.pod_uid)
                if meta is not None:
                    pods[ref.pod_uid] = meta
                else:
                    self._skip({"pod_metadata_unknown": 1})
        node = self.metadata.node()
        samples.extend(_spec_samples(all_refs.values(), pods, node, node_ref.cgroup_id))

        # The agent's own health; cycle.duration is the last completed cycle's.
        samples.extend(self._self_samples(node_ref.cgroup_id))
        snap = Snapshot(now_ns, all_refs, samples, histograms, pods, node)
        data = self.converter.convert(snap)
        duration = time.perf_counter() - t0
        self.last_duration_seconds = duration
        self.cycles += 1
        self.heartbeat = time.monotonic()
        return Cycle(data, duration, count_points(data), finals, bpf_removed, all_refs, pods)

    def _merge_bpf(self, refs: dict[CgroupId, CgroupRef], samples: list[Sample],
                   fresh: dict[CgroupId, list[Sample]]) -> tuple[list[HistogramSample], set[CgroupId]]:
        try:
            r = self.bpf.read()
        except Exception as e:
            self._skip({"bpf_read_failed": 1})
            log.error("reading BPF maps failed: %s", e)
            return [], set()
        for cid, (ref, _) in self._finals.items():  # gone from disk, still counted in maps
            refs.setdefault(cid, ref)
        for cid, path in r.paths.items():
            if cid in refs:
                continue
            ref = self._seen_bpf_only.get(cid)
            if ref is None:
                ref = _ref_from_path(cid, path, self.cfg.kubepods)
                if ref is None:
                    continue
                self._seen_bpf_only[cid] = ref
            refs[cid] = ref
        own = [s for s in r.samples if s.cgroup_id in refs]
        hists = [h for h in r.histograms if h.cgroup_id in refs]
        # Dead: removed as BPF saw it, or gone from disk (a final). The removal record can be
        # missing (cg_removed is an LRU hash; a burst of removals can push records out before
        # a read), and then the directory being gone is what says the counters are final.
        dead = set(r.removed) | set(self._finals)
        own, hists = self._roll_up_to_pods(refs, own, hists, dead)

        on_cpu = {s.cgroup_id: s.value for s in own if s.metric == "bpf.cpu.on_cpu_time"}
        # A cgroup that was born and died between two file reads has no cpu.time of its own:
        # its BPF on-CPU time stands in. BPF counts the scheduler's own runtime deltas, the
        # ones cpu.stat adds up (bpf/cpu.c), so it equals cpu.stat for every moment BPF was
        # attached and its entry kept, and never exceeds it. A final file reading is stale by
        # however long the cgroup lived after it: add what BPF counted after that read (once).
        # That sum falls short by what the cgroup used between the file read and the BPF read
        # (milliseconds of a preempted agent on a busy node: -5% on a 50 ms container); BPF's
        # own total falls short by whatever it did not see (life before attach, an evicted
        # entry). Both are lower bounds: bill the larger. Without a BPF value at the last read,
        # the larger of file and BPF.
        for cid in fresh:
            if cid not in on_cpu:
                self._bpf_at_read.pop(cid, None)
        for cid, value in on_cpu.items():
            ref = refs.get(cid)
            if ref is None or ref.scope not in (Scope.POD, Scope.CONTAINER):
                continue
            if cid in fresh:
                self._bpf_at_read[cid] = value
            elif cid in self._finals and cid not in self._bpf_settled:
                fref, counters = self._finals[cid]
                base = self._bpf_at_read.pop(cid, None)
                if base is not None:
                    self._bpf_settled.add(cid)
                self._finals[cid] = (fref, [
                    Sample(s.cgroup_id, s.metric,
                           max(s.value + max(0.0, value - base), value) if base is not None
                           else max(s.value, value),
                           s.attributes)
                    if s.metric == "cpu.time" else s for s in counters
                ])
            elif cid not in fresh and cid in self._seen_bpf_only:
                samples.append(Sample(cid, "cpu.time", value))
        samples.extend(own)
        samples.extend(r.health)
        for cid in list(self._seen_bpf_only):
            if cid in r.removed and cid not in r.paths:
                self._seen_bpf_only.pop(cid, None)
        # To be acknowledged (map entries freed, late ones dropped) once settled. A final that
        # was never acknowledged would keep its BPF entries, and once the final is settled
        # they would come back as a "BPF-only" cgroup exporting its on-CPU time as cpu.time,
        # lower than the final: a counter reset that bills the pod twice.
        counted = {s.cgroup_id for s in r.samples} | {h.cgroup_id for h in r.histograms}
        return hists, set(r.removed) | (set(self._finals) & counted)

    def _roll_up_to_pods(self, refs: dict[CgroupId, CgroupRef], own: list[Sample],
                         hists: list[HistogramSample], removed: set[CgroupId]
                         ) -> tuple[list[Sample], list[HistogramSample]]:
        """Pod-level BPF series are the sum of the pod's containers.

        BPF counts in the cgroup a task runs in, the container's, while the pod cgroup's own
        files include its containers (and its dead ones). To keep a pod's BPF counters
        cumulative after a dead container's map entries are freed, its last values are
        folded into a per-pod base when it is acknowledged (see export()).
        """
        pod_of_uid = {ref.pod_uid: cid for cid, ref in refs.items()
                      if ref.scope is Scope.POD and ref.pod_uid}
        sums: dict[tuple, float] = dict(
            (k, v) for k, v in self._bpf_pod_base.items() if k[0] in refs)
        hsum: dict[tuple, list] = {}
        out: list[Sample] = []
        last: dict[CgroupId, list] = {}
        for s in own:
            ref = refs[s.cgroup_id]
            if ref.scope is Scope.CONTAINER:
                out.append(s)
                last.setdefault(s.cgroup_id, []).append(s)
                pod = pod_of_uid.get(ref.pod_uid)
                if pod is not None:
                    key = (pod, s.metric, s.attributes)
                    sums[key] = sums.get(key, 0.0) + s.value
            elif ref.scope is Scope.POD:
                key = (s.cgroup_id, s.metric, s.attributes)
                sums[key] = sums.get(key, 0.0) + s.value
            else:
                out.append(s)
        out.extend(Sample(k[0], k[1], v, k[2]) for k, v in sums.items())
        hout: list[HistogramSample] = []
        for h in hists:
            ref = refs[h.cgroup_id]
            target = h.cgroup_id if ref.scope is Scope.POD else pod_of_uid.get(ref.pod_uid)
            if ref.scope is Scope.CONTAINER:
                hout.append(h)
                last.setdefault(h.cgroup_id, []).append(h)
            elif ref.scope is not Scope.POD:
                hout.append(h)
            if target is None:
                continue
            key = (target, h.metric, h.attributes, h.explicit_bounds)
            acc = hsum.get(key)
            if acc is None:
                hsum[key] = [list(h.bucket_counts), h.sum, h.count]
            else:
                acc[0] = [a + b for a, b in zip(acc[0], h.bucket_counts)]
                acc[1] += h.sum
                acc[2] += h.count
        for key, base in self._bpf_pod_hist_base.items():
            if key[0] in refs:
                acc = hsum.setdefault(key, [[0] * len(base[0]), 0.0, 0])
                acc[0] = [a + b for a, b in zip(acc[0], base[0])]
                acc[1] += base[1]
                acc[2] += base[2]
        hout.extend(HistogramSample(k[0], k[1], k[3], tuple(v[0]), v[1], v[2], k[2])
                    for k, v in hsum.items())
        # Remember removed containers' last values and their pod, for the base at ack time.
        for cid in removed:
            ref = refs.get(cid)
            if ref is not None and ref.scope is Scope.CONTAINER and cid in last:
                pod = pod_of_uid.get(ref.pod_uid)
                if pod is not None:
                    self._bpf_final_of[cid] = (pod, last[cid])
        return out, hout

    def _fold_into_pod_base(self, acked: set[CgroupId]) -> None:
        for cid in acked:
            entry = self._bpf_final_of.pop(cid, None)
            if entry is None:
                continue
            pod, items = entry
            for it in items:
                if isinstance(it, HistogramSample):
                    key = (pod, it.metric, it.attributes, it.explicit_bounds)
                    base = self._bpf_pod_hist_base.setdefault(key, [[0] * len(it.bucket_counts), 0.0, 0])
                    base[0] = [a + b for a, b in zip(base[0], it.bucket_counts)]
                    base[1] += it.sum
                    base[2] += it.count
                else:
                    key = (pod, it.metric, it.attributes)
                    self._bpf_pod_base[key] = self._bpf_pod_base.get(key, 0.0) + it.value
        # A pod that is itself gone and settled needs no base any more.
        for cid in acked:
            for store in (self._bpf_pod_base, self._bpf_pod_hist_base):
                for key in [k for k in store if k[0] == cid]:
                    del store[key]

    def _skip(self, counts: dict[str, int] | Counter[str]) -> None:
        for reason, n in counts.items():
            if n:
                self._skipped[reason] += n
                if reason not in self._logged_skips:
                    self._logged_skips.add(reason)
                    log.warning("skipping entities: %s (counted in otel_agent.entities.skipped)", reason)

    def _self_samples(self, node_id: CgroupId) -> list[Sample]:
        out = [
            Sample(node_id, "self.cycle.duration", self.last_duration_seconds),
            Sample(node_id, "self.series.exported", float(self.series_exported)),
            Sample(node_id, "self.export.failures", float(self.export_failures)),
        ]
        for reason, n in sorted(self._skipped.items()):
            out.append(Sample(node_id, "self.entities.skipped", float(n), (("reason", reason),)))
        return out

    # --- export --------------------------------------------------------------------------
    def export(self, cycle: Cycle) -> bool:
        if self.exporter is None:
            return True
        ok = export(self.exporter, cycle.data)
        if ok:
            self.series_exported += cycle.points
            done = {cid for cid in cycle.finals | cycle.bpf_removed if self._settled(cid, cycle)}
            for cid in done & cycle.finals:
                self._finals.pop(cid, None)
                self._bpf_settled.discard(cid)
                self._bpf_at_read.pop(cid, None)
            self.converter.forget(done & cycle.finals)
            acked = done & cycle.bpf_removed
            if self.bpf is not None and acked:
                self._fold_into_pod_base(acked)
                try:
                    self.bpf.ack(acked)
                except Exception as e:
                    log.error("freeing BPF entries of removed cgroups failed: %s", e)
                for cid in acked:
                    self._seen_bpf_only.pop(cid, None)
            for cid in done:
                self._dead_since.pop(cid, None)
        else:
            self.export_failures += 1
            log.warning("OTLP export failed (%d so far); the next export carries the totals",
                        self.export_failures)
        return ok

    def _settled(self, cid: CgroupId, cycle: Cycle) -> bool:
        """May a dead cgroup's final value stop being exported? Yes once it went out with its
        pod's metadata, or after the grace period if the metadata never came."""
        ref = cycle.refs.get(cid)
        if ref is None or ref.pod_uid is None or ref.pod_uid in cycle.pods:
            return True
        since = self._dead_since.setdefault(cid, time.monotonic())
        return time.monotonic() - since > UNRESOLVED_GRACE_SECONDS

    def run(self, stop: threading.Event) -> None:
        """Collect and export every interval until `stop` is set, then flush once more."""
        interval = self.cfg.interval_seconds
        next_at = time.monotonic()
        while not stop.is_set():
            self._cycle_once()
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (slow export): skip ahead rather than burst
                next_at = time.monotonic()
                delay = 0
            stop.wait(delay)
        log.info("stopping: one last export")
        self._cycle_once()

    def _cycle_once(self) -> None:
        try:
            cycle = self.collect()
        except Exception:  # the thread boundary: log, count, keep going
            log.exception("collection cycle failed")
            self._skip({"cycle_failed": 1})
            return
        self.export(cycle)

    def close(self) -> None:
        self.reader.close()
        if self.exporter is not None:
            try:
                self.exporter.shutdown()
            except Exception:
                pass


def _ref_from_path(cid: CgroupId, path: str, kubepods: str | None) -> CgroupRef | None:
    c = classify(path, kubepods) if kubepods else classify(path)
    if c is None or c.scope not in (Scope.POD, Scope.CONTAINER):
        return None
    return CgroupRef(cid, c.scope, path, pod_uid=c.pod_uid, container_id=c.container_id,
                     runtime=c.runtime, qos=c.qos)


def _spec_samples(refs: Iterable[CgroupRef], pods: dict[PodUid, PodMeta], node: NodeMeta | None,
                  node_id: CgroupId) -> list[Sample]:
    """Requests and limits (the cost processor prices request-or-usage), node capacity."""
    out: list[Sample] = []
    for ref in refs:
        if ref.scope is not Scope.CONTAINER or not ref.pod_uid or not ref.container_id:
            continue
        pod = pods.get(ref.pod_uid)
        meta = pod.container_by_id(ref.container_id) if pod else None
        if meta is None:
            continue
        for key, value in (("k8s.cpu.request", meta.cpu_request_cores),
                           ("k8s.cpu.limit", meta.cpu_limit_cores),
                           ("k8s.memory.request", meta.memory_request_bytes),
                           ("k8s.memory.limit", meta.memory_limit_bytes)):
            if value is not None:
                out.append(Sample(ref.cgroup_id, key, float(value)))
    if node is not None:
        for key, value in (("k8s.node.cpu.capacity", node.cpu_capacity_cores),
                           ("k8s.node.cpu.allocatable", node.cpu_allocatable_cores),
                           ("k8s.node.memory.capacity", node.memory_capacity_bytes),
                           ("k8s.node.memory.allocatable", node.memory_allocatable_bytes)):
            if value is not None:
                out.append(Sample(node_id, key, float(value)))
    return out
