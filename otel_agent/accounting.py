"""One cgroup's numbers between the sources and the wire: the agent's accounting, in one place.

What makes the agent a billing agent rather than a sampler is what it remembers between
cycles. A cgroup's life, as this module sees it:

    live ──(directory gone, or the kernel's cgroup_rmdir)──► dead with a final value
         ──► exported (the final goes out with every export until one succeeds)
         ──► acknowledged (an export succeeded with the pod's metadata, or the grace period
             for unknown pods is over: BPF map entries are freed)
         ──► forgotten

* File readings (cpu.stat, ...) are the truth for a cgroup that is read; its last reading is
  kept, so a cgroup that disappears between two cycles is exported once more with its final
  counters (DESIGN rule 3, "deleted cgroups still have usage").
* BPF counts stand in where no file was read: a cgroup born and dead between two reads has no
  cpu.time of its own, so its BPF on-CPU time is its cpu.time; a final file reading is stale by
  however long the cgroup lived after it, so what BPF counted after that read is added, once,
  unless BPF's own total is larger (`_bpf_tail`: the one place that mixes the two).
* Pod-level BPF series are the sum of the pod's containers (BPF counts in the cgroup a task
  runs in); a dead container's last values are folded into a per-pod base when it is
  acknowledged, so the pod's counter never goes down when the kernel frees its entries. The
  pod cgroup's own file counters already include dead containers: nothing is exported that
  the ledger has to take apart again.
* Kernel counters restart from zero when an LRU map evicts an entry and the cgroup counts
  again: `Cumulative` keeps such a series monotonic; `HeldBack` adds what the CPU program holds
  in its per-CPU slots without ever letting a series go down.

No I/O and no clock: sources hand in plain readings, the agent's loop passes monotonic time,
and tests/unit/agent/test_accounting.py drives it from tables of readings (as the Collector's
kubeletstats accumulator is tested). A cgroup is classified once, where it is found (discovery
for directories, `classify_path` for a path BPF reported).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from itertools import groupby
from typing import Iterable, Mapping, Protocol

from otel_agent.cgroups.layout import classify
from otel_agent.metrics import METRICS, Instrument
from otel_agent.model import CgroupId, CgroupRef, HistogramSample, PodUid, Sample, Scope

MAX_FINALS = 100_000  # bound on remembered dead cgroups while exports keep failing
# A dead cgroup whose pod the metadata source does not know yet (API server down while the
# pod came and went) keeps being exported with its final value for this long, so the ledger
# can attribute it once the metadata arrives: late rather than never.
UNRESOLVED_GRACE_SECONDS = 900.0

BPF_ON_CPU = "bpf.cpu.on_cpu_time"
_CGROUP = operator.itemgetter(0)


class BpfCounts(Protocol):
    """What the BPF source read this cycle (ebpf.collector.BpfReading is one)."""

    samples: list[Sample]
    histograms: list[HistogramSample]
    paths: Mapping[CgroupId, str]  # cgroups the kernel saw created (relative to the v2 root)
    removed: set[CgroupId]  # cgroups the kernel saw removed: their counters are final


@dataclass
class Account:
    """What one cycle exports, and what may be forgotten once that export has succeeded."""

    refs: dict[CgroupId, CgroupRef]  # on disk, dead with a final, and seen only by BPF
    samples: list[Sample]
    histograms: list[HistogramSample] = field(default_factory=list)
    finals: set[CgroupId] = field(default_factory=set)  # dead: these values are final
    bpf_removed: set[CgroupId] = field(default_factory=set)  # to free in the maps once settled


@dataclass(frozen=True)
class Settled:
    forgotten: set[CgroupId]  # finals no longer exported
    bpf_acked: set[CgroupId]  # BPF entries to free


def classify_path(cid: CgroupId, path: str, kubepods: str | None) -> CgroupRef | None:
    """A pod or container cgroup from a path the kernel reported (cgroup_mkdir), or None."""
    c = classify(path, kubepods) if kubepods else classify(path)
    if c is None or c.scope not in (Scope.POD, Scope.CONTAINER):
        return None
    return CgroupRef(cid, c.scope, path, pod_uid=c.pod_uid, container_id=c.container_id,
                     runtime=c.runtime, qos=c.qos)


class Accounts:
    """The agent's memory between cycles. `account()` once a cycle, `settle()` after each
    successful export."""

    def __init__(self, *, kubepods: str | None = None, max_finals: int = MAX_FINALS,
                 grace_seconds: float = UNRESOLVED_GRACE_SECONDS) -> None:
        self.kubepods = kubepods
        self.max_finals = max_finals
        self.grace_seconds = grace_seconds
        self._refs: dict[CgroupId, CgroupRef] = {}  # last cycle's cgroups on disk
        self._last: dict[CgroupId, list[Sample]] = {}  # last file reading, pods and containers
        self._finals: dict[CgroupId, tuple[CgroupRef, list[Sample]]] = {}
        self._dead_since: dict[CgroupId, float] = {}  # monotonic time a final was first held
        self._bpf_at_read: dict[CgroupId, float] = {}  # BPF on-CPU when its files were last read
        self._bpf_settled: set[CgroupId] = set()  # finals whose BPF tail has been added
        # BPF pod roll-up: values of acknowledged (freed) dead containers, per pod series.
        self._bpf_pod_base: dict[tuple, float] = {}
        self._bpf_pod_hist_base: dict[tuple, list] = {}
        self._bpf_final_of: dict[CgroupId, tuple[CgroupId, list]] = {}
        self._seen_bpf_only: dict[CgroupId, CgroupRef] = {}
        # cpu.time exported from BPF for a cgroup no file was read of yet (found between two
        # walks). Once its files are read, their cpu.time may be lower (BPF runs a little high
        # under load): the series holds at the BPF value until the file catches up, never
        # going down, which a consumer would take for a reset and bill twice.
        self._stood_in: dict[CgroupId, float] = {}

    @property
    def finals(self) -> Mapping[CgroupId, tuple[CgroupRef, list[Sample]]]:
        return self._finals

    # --- one cycle ---------------------------------------------------------------------------

    def account(self, refs: Mapping[CgroupId, CgroupRef], files: Iterable[Sample],
                gone: Iterable[CgroupId] = (), bpf: BpfCounts | None = None) -> Account:
        """This cycle's export from the cgroups found on disk (`refs`), their file readings
        (`files`, grouped by cgroup as the reader gives them), the cgroups the reader saw go
        (`gone`) and what the BPF maps hold (None: no BPF, or its read failed)."""
        samples: list[Sample] = []
        fresh: dict[CgroupId, list[Sample]] = {}
        stood_in = self._stood_in
        for cid, run in groupby(files, _CGROUP):  # the reader gives them grouped by cgroup
            run = list(run)
            if stood_in and cid in stood_in:
                run = [self._hold(s) if s.metric == "cpu.time" else s for s in run]
            g = fresh.get(cid)
            if g is None:
                fresh[cid] = run
            else:
                g.extend(run)
            samples.extend(run)

        # Cgroups gone since the last cycle: export their last counters once more (finals).
        for cid in set(gone) | (self._last.keys() - refs.keys()):
            last = self._last.pop(cid, None)
            ref = self._refs.get(cid)
            if last and ref is not None and len(self._finals) < self.max_finals:
                self._finals[cid] = (ref, [s for s in last if METRICS[s.metric].instrument
                                           is Instrument.COUNTER])
            else:
                self._bpf_at_read.pop(cid, None)
        for cid, group in fresh.items():
            ref = refs.get(cid)
            if ref is not None and ref.scope in (Scope.POD, Scope.CONTAINER):
                self._last[cid] = group
        self._refs = dict(refs)

        out = Account(dict(refs), samples)
        if bpf is not None:
            out.histograms, out.bpf_removed = self._merge_bpf(out.refs, samples, fresh, bpf)
        out.finals = set(self._finals)
        for cid, (ref, counters) in self._finals.items():
            out.refs.setdefault(cid, ref)
            samples.extend(counters)
        return out

    def _hold(self, s: Sample) -> Sample:
        held = self._stood_in[s.cgroup_id]
        if s.value < held:
            return Sample(s.cgroup_id, s.metric, held, s.attributes)
        del self._stood_in[s.cgroup_id]
        return s

    def _merge_bpf(self, refs: dict[CgroupId, CgroupRef], samples: list[Sample],
                   fresh: dict[CgroupId, list[Sample]], r: BpfCounts
                   ) -> tuple[list[HistogramSample], set[CgroupId]]:
        for cid, (ref, _) in self._finals.items():  # gone from disk, still counted in maps
            refs.setdefault(cid, ref)
        for cid, path in r.paths.items():
            if cid in refs:
                continue
            ref = self._seen_bpf_only.get(cid)
            if ref is None:
                ref = classify_path(cid, path, self.kubepods)
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
        self._bpf_tail(refs, own, samples, fresh)
        samples.extend(own)
        for cid in list(self._seen_bpf_only):
            if cid in r.removed and cid not in r.paths:
                self._seen_bpf_only.pop(cid, None)
        # To be acknowledged (map entries freed, late ones dropped) once settled. A final that
        # was never acknowledged would keep its BPF entries, and once the final is settled
        # they would come back as a "BPF-only" cgroup exporting its on-CPU time as cpu.time,
        # lower than the final: a counter reset that bills the pod twice.
        counted = {s.cgroup_id for s in r.samples} | {h.cgroup_id for h in r.histograms}
        return hists, set(r.removed) | (set(self._finals) & counted)

    def _bpf_tail(self, refs: Mapping[CgroupId, CgroupRef], own: list[Sample],
                  samples: list[Sample], fresh: Mapping[CgroupId, list[Sample]]) -> None:
        """Where BPF on-CPU time stands in for, or completes, the file's cpu.time.

        A cgroup that was born and died between two file reads has no cpu.time of its own:
        its BPF on-CPU time stands in. BPF counts the scheduler's own runtime deltas, the ones
        cpu.stat adds up (bpf/cpu.c), so it equals cpu.stat for every moment BPF was attached
        and its entry kept, and never exceeds it. A final file reading is stale by however long
        the cgroup lived after it: add what BPF counted after that read (once). That sum falls
        short by what the cgroup used between the file read and the BPF read (a busy node
        preempts the agent between the two: -5.7% on a 0.11 s container in
        tests/e2e/faults/test_busy_node.py); BPF's own total falls short by whatever it did not
        see (life before attach, an evicted entry). Both are lower bounds: the larger is billed.
        Without a BPF value at the last read, the larger of file and BPF."""
        on_cpu = {s.cgroup_id: s.value for s in own if s.metric == BPF_ON_CPU}
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
                self._stood_in[cid] = value

    def _roll_up_to_pods(self, refs: Mapping[CgroupId, CgroupRef], own: list[Sample],
                         hists: list[HistogramSample], removed: set[CgroupId]
                         ) -> tuple[list[Sample], list[HistogramSample]]:
        """Pod-level BPF series are the sum of the pod's containers, plus the base of its
        acknowledged dead containers (see settle())."""
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

    # --- after an export -------------------------------------------------------------------

    def settle(self, acc: Account, *, pods_known: Iterable[PodUid] | Mapping[PodUid, object],
               now: float) -> Settled:
        """`acc` was exported: which finals to forget and which BPF entries to free.

        A dead cgroup is settled once it went out with its pod's metadata, or after the grace
        period if the metadata never came. `now` is monotonic seconds."""
        known = pods_known if isinstance(pods_known, (set, frozenset, dict)) else set(pods_known)
        done = {cid for cid in acc.finals | acc.bpf_removed if self._settled(cid, acc, known, now)}
        forgotten = done & acc.finals
        for cid in done:
            self._stood_in.pop(cid, None)
        for cid in forgotten:
            self._finals.pop(cid, None)
            self._bpf_settled.discard(cid)
            self._bpf_at_read.pop(cid, None)
        acked = done & acc.bpf_removed
        if acked:
            self._fold_into_pod_base(acked)
            for cid in acked:
                self._seen_bpf_only.pop(cid, None)
        for cid in done:
            self._dead_since.pop(cid, None)
        return Settled(forgotten, acked)

    def _settled(self, cid: CgroupId, acc: Account, known, now: float) -> bool:
        ref = acc.refs.get(cid)
        if ref is None or ref.pod_uid is None or ref.pod_uid in known:
            return True
        since = self._dead_since.setdefault(cid, now)
        return now - since > self.grace_seconds

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


# --- monotonic kernel counters ------------------------------------------------------------------

def _flat(v: object) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,)
    out: list[int] = []
    for x in v:  # type: ignore[union-attr]
        out.extend(_flat(x))
    return tuple(out)


def _unflat(template: object, flat: tuple[int, ...], pos: int = 0) -> tuple[object, int]:
    if isinstance(template, int):
        return flat[pos], pos + 1
    out = []
    for x in template:  # type: ignore[union-attr]
        y, pos = _unflat(x, flat, pos)
        out.append(y)
    return tuple(out), pos


class HeldBack:
    """Adds held-back amounts (ebpf.decode.held_back) to map values, keeping every series
    monotonic.

    The maps are read before the slots, so a flush from slot to map between the two reads is
    missed once: that read comes out low, never high. Each value is kept at or above the last
    one reported, so a low read shows as a pause, never as a counter going down. Restarts of an
    evicted entry are still told by the map values alone (Cumulative), before this."""

    def __init__(self) -> None:
        self._last: dict[object, tuple[int, ...]] = {}

    def apply(self, key: object, value: object, extra: object | None) -> object:
        flat = _flat(value)
        if extra is not None:
            flat = tuple(a + b for a, b in zip(flat, _flat(extra)))
        last = self._last.get(key)
        if last is not None and len(last) == len(flat):
            flat = tuple(max(a, b) for a, b in zip(flat, last))
        self._last[key] = flat
        return _unflat(value, flat)[0]

    def forget(self, key: object) -> None:
        self._last.pop(key, None)


class Cumulative:
    """Keeps each series monotonic when its map entry was evicted (LRU) and created again.

    A value that went down means the kernel's entry restarted from zero: the last value read
    becomes a base added from then on. What the entry counted between the last read and the
    eviction is lost; the collector counts such restarts as evictions so that is visible.
    """

    def __init__(self) -> None:
        self._last: dict[object, tuple[int, ...]] = {}
        self._base: dict[object, tuple[int, ...]] = {}

    def update(self, key: object, value: object) -> tuple[object, bool]:
        """(value with base added, whether a restart was detected)."""
        flat = _flat(value)
        last = self._last.get(key)
        restarted = last is not None and len(last) == len(flat) and any(a < b for a, b in zip(flat, last))
        if restarted:
            base = self._base.get(key, (0,) * len(flat))
            self._base[key] = tuple(b + l for b, l in zip(base, last))  # type: ignore[arg-type]
        self._last[key] = flat
        base = self._base.get(key)
        if base is None:
            return value, restarted
        return _unflat(value, tuple(a + b for a, b in zip(flat, base)))[0], restarted

    def forget(self, key: object) -> None:
        self._last.pop(key, None)
        self._base.pop(key, None)

    def keys(self) -> list[object]:
        return list(self._last)
