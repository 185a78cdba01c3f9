"""The collection cycle and the export loop: sources read, accounting decides, the encoder writes.

Each cycle: find the pod and container cgroups, read their stat files, read the BPF maps,
hand those readings to the accounting core (otel_agent/accounting.py: what the agent remembers
between cycles, finals of dead cgroups, BPF standing in for files, pod roll-ups), resolve pod
metadata, encode (otel_agent/otlp/encode.py) and export. A failed export loses nothing: every
value is cumulative and the next export carries it; dead cgroups are forgotten (and their BPF
map entries freed) only after an export has succeeded.

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

from otel_agent.accounting import Account, Accounts
from otel_agent.cgroups.discovery import Discoverer
from otel_agent.cgroups.reader import CgroupReader
from otel_agent.config import AgentConfig
from otel_agent.k8s.source import MetadataSource
from otel_agent.metrics import ATTR_ACCESS_MODE, ATTR_GPU_RESOURCE, ATTR_MOUNTED, ATTR_SKIP_REASON
from otel_agent.model import CgroupId, CgroupRef, NodeMeta, PodMeta, PodUid, Sample, Scope
from otel_agent.otlp.encode import Encoded, Encoder, Snapshot, StartTimes
from otel_agent.otlp.exporter import Exporter

log = logging.getLogger(__name__)

NODE_ID = CgroupId(0)  # stands for the node when the cgroup root itself could not be read


def boot_time_ns(proc: Path = Path("/proc")) -> int:
    """The node's boot time, the start of every cgroup-file counter (see otlp/convert.py)."""
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1]) * 1_000_000_000
    raise RuntimeError(f"{proc}/stat has no btime line")


@dataclass
class Cycle:
    """What one collection produced, and what to forget once it has been exported."""

    data: Encoded  # valid until the next collect()
    duration_seconds: float
    points: int
    account: Account
    pods: dict[PodUid, PodMeta] = field(default_factory=dict)

    @property
    def refs(self) -> dict[CgroupId, CgroupRef]:
        return self.account.refs


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        *,
        cgroup_root: Path,
        metadata: MetadataSource,
        exporter: Exporter | None,
        bpf: Any | None = None,
        proc: Path = Path("/proc"),
        cluster: Any | None = None,
    ) -> None:
        self.cfg = cfg
        self.cluster = cluster  # k8s.volumes.ClusterObjects when cluster_objects is on
        self.cgroup_root = cgroup_root
        self.metadata = metadata
        self.exporter = exporter
        self.bpf = bpf
        self.reader = CgroupReader(cgroup_root)
        self.discoverer = Discoverer(cgroup_root, kubepods=cfg.kubepods)
        now = time.time_ns()
        self.encoder = Encoder(
            node_name=cfg.node_name,
            extra_attributes=cfg.resource_attributes,
            start_times=StartTimes(
                cgroup=boot_time_ns(proc),
                ebpf=getattr(bpf, "start_time_unix_nano", now) if bpf else now,
                agent=now,
            ),
        )
        self.accounts = Accounts(kubepods=cfg.kubepods)
        self._spec_cache: dict[CgroupId, tuple[object, list[Sample]]] = {}
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
            disc = self.discoverer.discover(time.monotonic())
            refs = {r.cgroup_id: r for r in disc.refs}
            self._skip(disc.skipped)
        except Exception as e:  # a whole source failing is loud, but the agent goes on
            self._skip({"discovery_failed": 1})
            log.error("cgroup discovery under %s failed: %s", self.cgroup_root, e)

        reading = self.reader.read(list(refs.values()))
        if reading.gone and not self.discoverer.walked:
            # Something went since the last walk, and something may have come with the count
            # unchanged: walk now and read what is new, in this cycle (see Discoverer).
            try:
                disc = self.discoverer.discover(time.monotonic(), force=True)
                new = [r for r in disc.refs if r.cgroup_id not in refs]
                refs.update((r.cgroup_id, r) for r in new)  # the gone ones: accounting's finals
                if new:
                    more = self.reader.read(new, more=True)
                    reading.samples.extend(more.samples)
                    reading.gone |= more.gone
                    reading.absent |= more.absent
                    reading.skipped.update(more.skipped)
            except Exception as e:
                self._skip({"discovery_failed": 1})
                log.error("cgroup discovery under %s failed: %s", self.cgroup_root, e)
        self._skip(reading.skipped)
        if reading.absent and not self._absent_logged:
            self._absent_logged = True
            log.info("cgroup v2 here does not offer %s: those metrics are absent, not zero",
                     ", ".join(sorted(reading.absent)))

        bpf = None
        if self.bpf is not None:
            try:
                bpf = self.bpf.read()
            except Exception as e:
                self._skip({"bpf_read_failed": 1})
                log.error("reading BPF maps failed: %s", e)
        acc = self.accounts.account(refs, reading.samples, reading.gone, bpf)
        samples = acc.samples
        if bpf is not None:
            samples.extend(bpf.health)
        all_refs = acc.refs

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
        samples.extend(self._spec_samples(all_refs.values(), pods, node, node_ref.cgroup_id))

        if self.cluster is not None:
            samples.extend(self._claim_samples(node_ref.cgroup_id))
        # The agent's own health; cycle.duration is the last completed cycle's.
        samples.extend(self._self_samples(node_ref.cgroup_id))
        snap = Snapshot(now_ns, all_refs, samples, acc.histograms, pods, node)
        data = self.encoder.encode(snap)
        duration = time.perf_counter() - t0
        self.last_duration_seconds = duration
        self.cycles += 1
        self.heartbeat = time.monotonic()
        return Cycle(data, duration, data.points, acc, pods)

    def _skip(self, counts: dict[str, int] | Counter[str]) -> None:
        for reason, n in counts.items():
            if n:
                self._skipped[reason] += n
                if reason not in self._logged_skips:
                    self._logged_skips.add(reason)
                    log.warning("skipping entities: %s (counted in otel_agent.entities.skipped)", reason)

    def _claim_samples(self, node_id: CgroupId) -> list[Sample]:
        """Every bound claim of the cluster (k8s/volumes.py), on this node's resource."""
        out = []
        for c in self.cluster.claims():
            base = (("k8s.namespace.name", c.namespace), ("k8s.persistentvolumeclaim.name", c.name),
                    ("k8s.persistentvolumeclaim.uid", c.uid),
                    ("k8s.storageclass.name", c.storage_class),
                    ("k8s.persistentvolume.name", c.volume), (ATTR_ACCESS_MODE, c.access_modes))
            # both mount states, the other one 0: a claim whose state changes is billed on each
            # side up to the export, with no overlap (a level holds until its next point)
            for mounted in (True, False):
                attrs = tuple(sorted((*base, (ATTR_MOUNTED, "true" if mounted else "false"))))
                value = float(c.capacity_bytes) if mounted == c.mounted else 0.0
                out.append(Sample(node_id, "k8s.claim.capacity", value, attrs))
        return out

    def _self_samples(self, node_id: CgroupId) -> list[Sample]:
        out = [
            Sample(node_id, "self.cycle.duration", self.last_duration_seconds),
            Sample(node_id, "self.series.exported", float(self.series_exported)),
            Sample(node_id, "self.export.failures", float(self.export_failures)),
        ]
        for reason, n in sorted(self._skipped.items()):
            out.append(Sample(node_id, "self.entities.skipped", float(n), ((ATTR_SKIP_REASON, reason),)))
        return out

    def _spec_samples(self, refs: Iterable[CgroupRef], pods: dict[PodUid, PodMeta],
                      node: NodeMeta | None, node_id: CgroupId) -> list[Sample]:
        """Requests and limits (the cost processor prices request-or-usage), node capacity.

        A container's samples are kept while its metadata is the same, so the encoder sees
        the same objects and writes only their time (see otlp/encode.py)."""
        out: list[Sample] = []
        cache, self._spec_cache = self._spec_cache, {}
        for ref in refs:
            if ref.scope is not Scope.CONTAINER or not ref.pod_uid or not ref.container_id:
                continue
            pod = pods.get(ref.pod_uid)
            meta = pod.container_by_id(ref.container_id) if pod else None
            if meta is None:
                continue
            hit = cache.get(ref.cgroup_id)
            if hit is not None and (hit[0] is meta or hit[0] == meta):
                made = hit[1]
            else:
                made = [Sample(ref.cgroup_id, key, float(value)) for key, value in (
                    ("k8s.cpu.request", meta.cpu_request_cores),
                    ("k8s.cpu.limit", meta.cpu_limit_cores),
                    ("k8s.memory.request", meta.memory_request_bytes),
                    ("k8s.memory.limit", meta.memory_limit_bytes)) if value is not None]
                made.extend(Sample(ref.cgroup_id, "k8s.gpu.request", n, ((ATTR_GPU_RESOURCE, name),))
                            for name, n in meta.gpus)
            self._spec_cache[ref.cgroup_id] = (meta, made)
            out.extend(made)
        if node is not None:
            for key, value in (("k8s.node.cpu.capacity", node.cpu_capacity_cores),
                               ("k8s.node.cpu.allocatable", node.cpu_allocatable_cores),
                               ("k8s.node.memory.capacity", node.memory_capacity_bytes),
                               ("k8s.node.memory.allocatable", node.memory_allocatable_bytes)):
                if value is not None:
                    out.append(Sample(node_id, key, float(value)))
            for key, counts in (("k8s.node.gpu.capacity", node.gpu_capacity),
                                ("k8s.node.gpu.allocatable", node.gpu_allocatable)):
                out.extend(Sample(node_id, key, n, ((ATTR_GPU_RESOURCE, name),)) for name, n in counts)
        return out

    # --- export --------------------------------------------------------------------------
    def export(self, cycle: Cycle) -> bool:
        if self.exporter is None:
            return True
        try:
            ok = self.exporter.export(cycle.data)
        except Exception:  # the thread boundary: an exporter bug must not kill the loop
            log.exception("OTLP export raised")
            ok = False
        if ok:
            self.series_exported += cycle.points
            done = self.accounts.settle(cycle.account, pods_known=cycle.pods, now=time.monotonic())
            self.encoder.forget(done.forgotten)
            if self.bpf is not None and done.bpf_acked:
                try:
                    self.bpf.ack(done.bpf_acked)
                except Exception as e:
                    log.error("freeing BPF entries of removed cgroups failed: %s", e)
        else:
            self.export_failures += 1
            log.warning("OTLP export failed (%d so far); the next export carries the totals",
                        self.export_failures)
        return ok

    def run(self, stop: threading.Event) -> None:
        """Collect and export every interval until `stop` is set, then flush once more."""
        interval = self.cfg.interval_seconds
        next_at = time.monotonic()
        while not stop.is_set():
            self._cycle_once()
            if self.cycles == 1:
                # What exists after the first cycle (imported modules, the metadata cache, kept
                # descriptors and encoded resources) lives as long as the agent: move it out of
                # the cyclic GC's way, so a full collection does not scan it again and again.
                gc.collect()
                gc.freeze()
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
        if self.cluster is not None:
            self.cluster.stop()
        self.reader.close()
        self.discoverer.close()
        if self.exporter is not None:
            try:
                self.exporter.shutdown()
            except Exception:
                pass
