"""Peer classes for network traffic: configured CIDRs → entries of the BPF LPM trie.

The cost processor prices traffic by where it goes (pod network, the rest of the private
cluster network, the internet), so the class is decided in the kernel per packet and kept as
a key of the counters. Longest prefix wins; on equal prefixes the pod network wins. Pure code.
"""

from __future__ import annotations

import ipaddress

# Values of enum peer_class in bpf/net.c.
CLASS_NAMES: dict[int, str] = {0: "pod-network", 1: "cluster-private", 2: "internet", 3: "other"}
POD, CLUSTER = 0, 1
# Loopback never leaves the node (sidecar <-> app traffic in a service mesh is mostly this):
# it is pod-network, free, unless a configured list names the same prefix.
LOOPBACK = ("127.0.0.0/8", "::1/128")


def _lists(pod_cidrs: tuple[str, ...], cluster_cidrs: tuple[str, ...], loopback_is_local: bool):
    # Later lists override equal (prefix, address) keys: built-in loopback < cluster < pod.
    return ((POD, LOOPBACK if loopback_is_local else ()), (CLUSTER, cluster_cidrs), (POD, pod_cidrs))


def trie_entries(pod_cidrs: tuple[str, ...], cluster_cidrs: tuple[str, ...],
                 loopback_is_local: bool = True) -> dict[tuple[int, bytes], int]:
    """(prefix length, 16-byte address) → class, IPv4 as IPv4-mapped IPv6 (::ffff:0:0/96)."""
    out: dict[tuple[int, bytes], int] = {}
    for cls, cidrs in _lists(pod_cidrs, cluster_cidrs, loopback_is_local):  # pod last: wins ties
        for c in cidrs:
            net = ipaddress.ip_network(c, strict=False)
            if net.version == 4:
                addr = b"\x00" * 10 + b"\xff\xff" + net.network_address.packed
                plen = 96 + net.prefixlen
            else:
                addr = net.network_address.packed
                plen = net.prefixlen
            out[(plen, addr)] = cls
    return out


def classify(address: str, pod_cidrs: tuple[str, ...], cluster_cidrs: tuple[str, ...],
             loopback_is_local: bool = True) -> str:
    """The class the kernel program gives `address` (reference for tests and `doctor`)."""
    ip = ipaddress.ip_address(address)
    best: tuple[int, int] | None = None
    for cls, cidrs in _lists(pod_cidrs, cluster_cidrs, loopback_is_local):
        for c in cidrs:
            net = ipaddress.ip_network(c, strict=False)
            if net.version == ip.version and ip in net:
                if best is None or net.prefixlen >= best[0]:
                    best = (net.prefixlen, cls)  # equal prefix: the later list wins
    return CLASS_NAMES[best[1]] if best else "internet"
