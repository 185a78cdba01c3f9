"""eBPF source: kernel-exact per-cgroup counters (CPU, run queue, network, faults, syscalls).

See collector.py for why counters live in the kernel, decode.py for how map contents become
Samples, and bpf/*.c for the programs themselves.
"""

from otel_agent.ebpf.collector import BpfCollector, BpfReading, FamilyStatus, MapHealth
from otel_agent.ebpf.config import PROFILES, BpfConfig
from otel_agent.ebpf.probe import Check, probe

__all__ = ["BpfCollector", "BpfConfig", "BpfReading", "Check", "FamilyStatus", "MapHealth",
           "PROFILES", "probe"]
