"""Network family: bytes and packets per cgroup, direction and peer class, over loopback TCP.

Loopback keeps the test on this machine while still going through the IP stack and the
cgroup_skb hooks. The peer classes come from the collector's CIDRs (conftest): 127.0.0.1 is
the pod network, 127.0.0.2 and ::1 the cluster, and 127.0.0.3 nothing, hence internet.
"""

from __future__ import annotations

import os
import socket

import pytest

from tests.kernel.ebpf.cgtools import value, wait_json

pytestmark = pytest.mark.kernel

# Largest IP + TCP header of one skb: IPv6 (40) + TCP with a full options area (60). Every
# skb the socket layer hands to IP carries exactly one such header, payload aside.
MAX_HEADER = 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bytes_packets_direction_and_class(collector, cgroups):
    _, pod_a = cgroups.pod()
    _, sender = cgroups.container(pod_a)
    _, pod_b = cgroups.pod()
    _, receiver = cgroups.container(pod_b)
    a, b = os.stat(sender).st_ino, os.stat(receiver).st_ino
    p4, p6 = _free_port(), _free_port()
    sends = {"127.0.0.1": 3_000_000, "127.0.0.2": 1_000_000, "::1": 500_000, "127.0.0.3": 700_000}
    class_of = {"127.0.0.1": "pod-network", "127.0.0.2": "cluster-private", "::1": "cluster-private",
                "127.0.0.3": "internet"}

    recv = cgroups.spawn(receiver, "recv", "4", f"0.0.0.0:{p4}", f"::1:{p6}")
    assert '"listening"' in recv.stdout.readline()
    send = cgroups.spawn(sender, "send", *(f"{h}:{p6 if ':' in h else p4}:{n}" for h, n in sends.items()))
    report = wait_json(send)
    assert wait_json(recv)["received"] == report["sent"] == sum(sends.values())
    r = collector.read()

    for cls in ("pod-network", "cluster-private", "internet"):
        conns = [c for c in report["conns"] if class_of[c["host"]] == cls]
        n = sum(sends[c["host"]] for c in conns)
        wire = sum(c["bytes_sent"] for c in conns)  # payload incl. retransmissions (tcp_info)
        segs = sum(c["segs_out"] for c in conns)  # segments incl. SYN, ACKs, FIN (tcp_info)
        assert wire >= n
        tx = {"network.io.direction": "transmit", "otel_agent.network.class": cls}
        rx = {"network.io.direction": "receive", "otel_agent.network.class": cls}
        tx_bytes = value(r, a, "bpf.network.io", tx)
        tx_pkts = value(r, a, "bpf.network.packets", tx)
        # Every segment TCP sent, and no other: GSO packets count as their segments.
        assert segs <= tx_pkts <= segs + 2, (cls, tx_pkts, segs)
        # IP bytes = payload + at most one IP+TCP header per segment.
        assert wire <= tx_bytes <= wire + MAX_HEADER * segs, (cls, tx_bytes, wire, segs)
        if wire == n:  # no retransmission: the bound, within 1% of N plus headers
            assert tx_bytes <= 1.01 * n
        # The receiver's ingress, classed by source address (the sender bound to the address
        # it sent to), is the same traffic: all of the data, at most what was sent.
        rx_bytes = value(r, b, "bpf.network.io", rx)
        assert n <= rx_bytes <= wire + MAX_HEADER * segs, (cls, rx_bytes, n, wire)
        # ACKs go the other way: small, counted on the other side.
        assert 0 < value(r, b, "bpf.network.io", tx) < n
        assert 0 < value(r, a, "bpf.network.io", rx) < n
    assert value(r, a, "bpf.network.io", {"otel_agent.network.class": "other"}) == 0
