"""`otel-agent doctor` for eBPF: what is usable on this node, and what to do where it is not.

Each check is one line a person can act on. The attach checks load the comprehensive profile
with tiny maps, so they say exactly which program families this kernel and these privileges
allow, then detach. Compiling happens in the loader child (loader.py), as for the agent itself,
so running doctor next to a live collector never maps LLVM into the caller.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from otel_agent.ebpf import system
from otel_agent.ebpf.config import BpfConfig
from otel_agent.errors import SourceError


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def probe(cfg: BpfConfig, collector: object | None = None) -> list[Check]:
    """Checks in order; pass the running collector to include its map health."""
    checks: list[Check] = []
    caps = system.missing_tracing_caps()
    checks.append(Check("bpf permission", not caps,
                        "CAP_BPF and CAP_PERFMON present" if not caps else
                        f"missing {', '.join(caps)} (or CAP_SYS_ADMIN): grant them to the agent"))
    net = system.missing_network_caps()
    checks.append(Check("network permission", not net,
                        "CAP_NET_ADMIN present" if not net else
                        "missing CAP_NET_ADMIN: network counters (cgroup_skb) will not attach"))
    why = system.ensure_tracefs(cfg.tracefs, cfg.debugfs, mount=cfg.mount_tracefs)
    checks.append(Check("tracefs", why is None,
                        str(system.tracefs_dir(cfg.tracefs, cfg.debugfs)) if why is None else why))
    hdr = system.find_headers()
    checks.append(Check("kernel headers", hdr is not None, hdr or
                        "none under /lib/modules/$(uname -r)/build: run scripts/install-system.sh"))
    # In the loader child, as the collector compiles: bcc (and LLVM) never enter this process.
    from otel_agent.ebpf import loader  # late: the child runs it as __main__ (see collector)

    ok, detail = loader.check_bcc()
    checks.append(Check("bcc", ok, detail if ok else f"{detail}: install Debian's python3-bpfcc"))

    if all(c.ok for c in checks if c.name != "network permission"):
        from otel_agent.ebpf.collector import BpfCollector

        trial = BpfCollector(dataclasses.replace(
            cfg, profile="comprehensive", families=(), map_max_entries=64, task_max_entries=64))
        try:
            status = trial.start()
            for fam, st in status.items():
                checks.append(Check(f"bpf family {fam}", st.attached, st.detail))
        except SourceError as e:
            checks.append(Check("bpf programs", False, str(e)))
        finally:
            trial.stop()

    if collector is not None:
        for h in collector.map_health():  # type: ignore[attr-defined]
            full = h.entries >= cfg.capacity_warning_ratio * h.capacity
            lost = h.update_failures + h.evictions
            checks.append(Check(
                f"bpf map {h.name}", not full and not lost,
                f"{h.entries}/{h.capacity} entries, {h.update_failures} failed inserts, {h.evictions} evictions"
                + (f": near capacity, raise {cfg.setting_for(h.name)}" if full or lost else "")))
    return checks
