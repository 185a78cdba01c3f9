"""What a data point may claim before the ledger bills it: bounds by meaning (pure).

Why not one bound: a single "sanity" limit shared by every unit let a CPU capacity of 2^60
cores through (it is a fine number of bytes) and crashed the rebuild on an integer overflow.
Each quantity is bounded by what a machine can physically hold, and money by what a node-hour
can cost, so nothing accepted can overflow a ledger row, a roll-up or a report's sum.

Three layers, all here so each rule is written once:
  * per unit (`check_value`): cores, bytes, bytes a second, and how long a counter can have
    counted (a node's uptime), without knowing the node;
  * per node (`NodeFacts`, applied by the store inside the write transaction, where the facts
    are the database's): a counter cannot start before its node booted; what it claims cannot
    exceed the node's capacity × the time it claims; a point far older than the first one the
    ledger heard from the node is history from before the ledger watched it;
  * strings by what Kubernetes allows (`check_resource_strings`): lengths, character sets,
    no NUL or control characters. A bad string is a rejected point with a reason, never a
    database error that sinks the whole batch (PostgreSQL enforces VARCHAR lengths and refuses
    NUL bytes, SQLite does neither: both now see the same strings).

Every rejection has a reason code (metrics, health) and a message naming what was wrong
(OTLP partial_success).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

NANOS_PER_SECOND = 1_000_000_000

# --- per unit -------------------------------------------------------------------------------

# The largest single machines sold have 896 cores / 1,792 hardware threads (HPE Superdome
# Flex) and 32 TiB of memory (EC2 u7inh-32tb); a node above these is not a node.
MAX_NODE_CORES = 4096
MAX_NODE_MEMORY_BYTES = 2**46  # 64 TiB
# GPU devices a node can offer: the largest servers carry 16 GPUs, 112 MIG slices at 7 a GPU;
# device plugins that time-slice advertise replicas (tens a GPU). Above this it is not a node.
MAX_NODE_GPUS = 1024
# The largest single volumes sold are 64 TiB (EBS io2 Block Express, Azure Ultra Disk); network
# file systems say what the claim asked for. 1 PiB bounds one claim (and its money, far under a
# node-hour's bound).
MAX_VOLUME_BYTES = 2**50
# 2^37 B/s ≈ 1.1 Tbit/s: above two 400 Gbit/s NICs at line rate.
MAX_NODE_NETWORK_BYTES_PER_S = 2**37
# No Kubernetes node stays up five years (a kubelet that old is far out of support): a counter
# whose start is older than that is forged or broken, whatever its value.
MAX_UPTIME_NS = 5 * 365 * 86400 * NANOS_PER_SECOND
# A counter read at time t is stamped with one time per collection cycle; the reads spread over
# the cycle (tens of ms). One second of slack on every "rate × elapsed" bound covers it.
CLOCK_SLACK_S = 1.0
# Capacity readings are exact (MemTotal, CPU count), usage readings race with them a little.
CAPACITY_SLACK = 0.01

# --- per node -------------------------------------------------------------------------------

# Points dated more than this before the first point the ledger received for a node are
# history from before the ledger watched it, and are rejected. Within the window, arrival
# order does not matter (the node's first point is the minimum of what arrived). OTLP
# retries and a Collector's persistent queue reorder deliveries by seconds to minutes (a FIFO
# queue drained by a few consumers, retries backing off up to 30 s); an hour is far beyond
# that and still bounds how far back a forged point can move a node's first-seen time.
FIRST_SEEN_WINDOW_NS = 3600 * NANOS_PER_SECOND

# --- money ----------------------------------------------------------------------------------

# Every ledger row is bounded by the cost of its node-hour; a node-hour may cost at most 2^43
# micro-units (8.8 million currency units). A roll-up or a report sums at most one row per
# group and node-hour, over at most 2^20 hours (119 years of monthly rows), so no sum of
# micro-units can reach 2^63: no integer overflow in SQLite, PostgreSQL or a client.
MAX_NODE_HOUR_MICROS = 2**43

# --- strings (Kubernetes' own limits; ledger columns are sized to them) ---------------------

MAX_LABEL_KEY = 317  # an optional DNS-subdomain prefix (253) + "/" + name (63)
MAX_LABEL_VALUE = 63
MAX_LABELS = 64  # labels kept per pod or node: more are dropped (sorted by key), and counted
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}\Z")
_PROVIDER_ID = re.compile(r"[a-z][a-z0-9+.-]{0,31}://[\x21-\x7e]*\Z")  # printable ASCII, no spaces
# C0 and C1 control characters, DEL, and the Unicode line/paragraph separators and BOM.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")

# Reason codes: a small fixed set (metric labels), each rejection also has a message.
R_TYPE = "wrong_type"  # wrong instrument, temporality, unit, or no data
R_ATTRIBUTE = "invalid_attribute"  # missing or invalid resource/point attribute
R_VALUE = "invalid_value"  # no value, NaN, negative, no time, start after time
R_FUTURE = "future"
R_RETENTION = "older_than_retention"
R_RANGE = "out_of_range"  # beyond what any node can hold (per unit)
R_UPTIME = "counter_too_old"
R_FIRST_SEEN = "before_first_seen"
R_BOOT = "start_before_boot"
R_CAPACITY = "exceeds_node_capacity"
R_NAMESPACE = "namespace_changed"
R_SERIES_LIMIT = "series_limit"
R_STORAGE = "storage_error"
REASONS = (R_TYPE, R_ATTRIBUTE, R_VALUE, R_FUTURE, R_RETENTION, R_RANGE, R_UPTIME,
           R_FIRST_SEEN, R_BOOT, R_CAPACITY, R_NAMESPACE, R_SERIES_LIMIT, R_STORAGE)


class Invalid(ValueError):
    """A value or string the ledger refuses: `code` is one of REASONS."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def rate_bound(quantity: str) -> float | None:
    """The most a counter of `quantity` can grow per second on any node (None: unbounded)."""
    if quantity == "cpu":
        return float(MAX_NODE_CORES)
    if quantity == "network":
        return float(MAX_NODE_NETWORK_BYTES_PER_S)
    return None


def gauge_bound(quantity: str) -> float | None:
    """The largest value a gauge of `quantity` can hold on any node."""
    if quantity.startswith("cpu."):  # request, capacity, allocatable: cores
        return float(MAX_NODE_CORES)
    if quantity.startswith("memory."):
        return float(MAX_NODE_MEMORY_BYTES)
    if quantity.startswith("gpu."):  # request, capacity, allocatable: devices (or MIG slices)
        return float(MAX_NODE_GPUS)
    if quantity == "pv.capacity":  # one claim's volume
        return float(MAX_VOLUME_BYTES)
    return None


def counter_allowance(rate_per_s: float, elapsed_ns: int) -> float:
    """What a counter growing at most `rate_per_s` can add in `elapsed_ns`, with clock slack."""
    return rate_per_s * (max(0, elapsed_ns) / NANOS_PER_SECOND * (1 + CAPACITY_SLACK)
                         + CLOCK_SLACK_S)


def check_value(name: str, quantity: str, counter: bool, value: float, start_ns: int,
                time_ns: int) -> None:
    """Per-unit bounds of one point (raises Invalid). Finite and non-negative already."""
    if counter:
        elapsed = time_ns - start_ns
        if elapsed > MAX_UPTIME_NS:
            raise Invalid(R_UPTIME, f"{name}: start time is {elapsed / NANOS_PER_SECOND / 86400:.0f} "
                          f"days before the point: longer than any node stays up")
        rate = rate_bound(quantity)
        if rate is not None and value > counter_allowance(rate, elapsed):
            unit = "CPU seconds" if quantity == "cpu" else "bytes"
            what = f"{MAX_NODE_CORES} cores" if quantity == "cpu" else "any node's network"
            raise Invalid(R_RANGE, f"{name}: {value:g} {unit} in {elapsed / 1e9:g} s is more "
                          f"than {what} can do")
    else:
        bound = gauge_bound(quantity)
        if bound is not None and value > bound:
            unit = ("cores" if quantity.startswith("cpu.") else
                    "GPU devices" if quantity.startswith("gpu.") else "bytes")
            raise Invalid(R_RANGE, f"{name}: {value:g} {unit} is more than any node has "
                          f"({bound:g})")


@dataclass(slots=True)
class NodeFacts:
    """What the ledger knows of a node, from what it accepted (the store keeps them in its
    database). Each fact only moves one way, so merging facts from any order of batches gives
    the same facts: `anchor_ns` is fixed at the node's first arrival, `boot_ns` (the earliest
    start of its node-wide cgroup counters: the agent starts them at boot) only falls, the
    capacities only rise."""

    anchor_ns: int
    boot_ns: int | None = None
    cpu_cores: float | None = None
    memory_bytes: float | None = None

    def merge(self, *, boot_ns: int | None = None, cpu_cores: float | None = None,
              memory_bytes: float | None = None) -> bool:
        """Fold new evidence in; True if a fact changed."""
        changed = False
        if boot_ns is not None and (self.boot_ns is None or boot_ns < self.boot_ns):
            self.boot_ns, changed = boot_ns, True
        if cpu_cores is not None and (self.cpu_cores is None or cpu_cores > self.cpu_cores):
            self.cpu_cores, changed = cpu_cores, True
        if memory_bytes is not None and (self.memory_bytes is None or memory_bytes > self.memory_bytes):
            self.memory_bytes, changed = memory_bytes, True
        return changed


# Counters that start at the node's boot and say so: the node-wide cgroup counters.
BOOT_SCOPES = ("node", "kubepods")
TENANT_SCOPES = ("container", "pod")


def check_first_seen(facts: NodeFacts, node: str, name: str, time_ns: int) -> None:
    """A point dated far before the node's first arrival is history from before the ledger
    watched the node (raises Invalid)."""
    if time_ns < facts.anchor_ns - FIRST_SEEN_WINDOW_NS:
        raise Invalid(R_FIRST_SEEN, f"{name}: dated {(facts.anchor_ns - time_ns) / 3.6e12:.1f} h "
                      f"before the first point the ledger received from node {node}: history "
                      f"from before the ledger watched the node is not billed")


def node_rules_apply(facts: NodeFacts, quantity: str, scope: str, counter: bool) -> bool:
    """Whether check_against_node can refuse anything of such a series with these facts."""
    if counter:
        return ((facts.boot_ns is not None and scope in TENANT_SCOPES)
                or (quantity == "cpu" and facts.cpu_cores is not None))
    if quantity.startswith("memory.") and quantity != "memory.capacity":
        return facts.memory_bytes is not None
    return quantity in ("cpu.request", "cpu.allocatable") and facts.cpu_cores is not None


def check_against_node(facts: NodeFacts, *, node: str, name: str, quantity: str, scope: str,
                       counter: bool, value: float, start_ns: int, time_ns: int) -> None:
    """Boot and capacity rules for one point (raises Invalid)."""
    if counter:
        if facts.boot_ns is not None and scope in TENANT_SCOPES and start_ns < facts.boot_ns:
            raise Invalid(R_BOOT, f"{name}: starts {(facts.boot_ns - start_ns) / 1e9:g} s before "
                          f"node {node} booted")
        if quantity == "cpu" and facts.cpu_cores is not None:
            since = max(start_ns, facts.boot_ns or start_ns)
            if value > counter_allowance(facts.cpu_cores, time_ns - since):
                raise Invalid(R_CAPACITY, f"{name}: {value:g} CPU seconds in "
                              f"{(time_ns - since) / 1e9:g} s is more than node {node}'s "
                              f"{facts.cpu_cores:g} cores can do")
    elif quantity.startswith("memory.") and quantity not in ("memory.capacity",) \
            and facts.memory_bytes is not None \
            and value > facts.memory_bytes * (1 + CAPACITY_SLACK):
        raise Invalid(R_CAPACITY, f"{name}: {value:g} bytes is more than node {node}'s "
                      f"memory ({facts.memory_bytes:g} bytes)")
    elif quantity in ("cpu.request", "cpu.allocatable") and facts.cpu_cores is not None \
            and value > facts.cpu_cores * (1 + CAPACITY_SLACK):
        raise Invalid(R_CAPACITY, f"{name}: {value:g} cores is more than node {node} has "
                      f"({facts.cpu_cores:g})")


# --- strings --------------------------------------------------------------------------------

def _printable(attr: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise Invalid(R_ATTRIBUTE, f"resource attribute {attr} is {len(value)} characters long "
                      f"(at most {limit})")
    m = _CONTROL.search(value)
    if m:
        raise Invalid(R_ATTRIBUTE, f"resource attribute {attr} holds the control character "
                      f"U+{ord(m.group()):04X}")


def _pattern(attr: str, value: str, limit: int, pattern: re.Pattern, what: str) -> None:
    _printable(attr, value, limit)
    if not pattern.match(value):
        raise Invalid(R_ATTRIBUTE, f"resource attribute {attr} {value[:80]!r} is not {what}")


# attribute → its check. Names Kubernetes validates get its rules; the others (the cluster
# name is ours to choose) are bounded and printable.
_STRING_RULES = {
    "k8s.namespace.name": lambda a, v: _pattern(a, v, 63, _DNS_LABEL, "a Kubernetes namespace name"),
    "k8s.node.name": lambda a, v: _pattern(a, v, 253, _DNS_SUBDOMAIN, "a Kubernetes node name"),
    "k8s.pod.uid": lambda a, v: _pattern(a, v, 64, _UID, "a pod uid"),
    "container.id": lambda a, v: _pattern(a, v, 255, _CONTAINER_ID, "a container id"),
    "k8s.pod.name": lambda a, v: _printable(a, v, 253),
    "k8s.container.name": lambda a, v: _printable(a, v, 63),
    "k8s.cluster.name": lambda a, v: _printable(a, v, 253),
    "cloud.availability_zone": lambda a, v: _printable(a, v, 253),
    # spec.providerID: a URL-like id (aws:///zone/i-..., azure:///subscriptions/..., gce://...)
    "otel_agent.k8s.node.provider_id": lambda a, v: _pattern(a, v, 1024, _PROVIDER_ID,
                                                             "a providerID (<scheme>://<id>)"),
}
WORKLOAD_NAME_LIMIT = 253


def check_resource_strings(attrs: Mapping[str, str], workload_attrs: tuple[str, ...]) -> None:
    """The resource's identifying and descriptive strings (raises Invalid)."""
    for attr, v in attrs.items():
        if not v:
            continue
        rule = _STRING_RULES.get(attr)
        if rule is not None:
            rule(attr, v)
        elif attr in workload_attrs:
            _printable(attr, v, WORKLOAD_NAME_LIMIT)


def bounded_labels(labels: Mapping[str, str], kind: str) -> tuple[dict[str, str], int]:
    """Labels with valid keys and values, at most MAX_LABELS of them (by key); raises Invalid on
    a key or value Kubernetes could not hold, returns how many were dropped over the count."""
    out: dict[str, str] = {}
    for k in sorted(labels):
        _printable(f"{kind} label key {k[:40]!r}", k, MAX_LABEL_KEY)
        _printable(f"{kind} label {k[:40]!r}", labels[k], MAX_LABEL_VALUE)
        if len(out) < MAX_LABELS:
            out[k] = labels[k]
    return out, len(labels) - len(out)


def check_point_attribute(attr: str, value: str, limit: int) -> None:
    _printable(attr, value, limit)
