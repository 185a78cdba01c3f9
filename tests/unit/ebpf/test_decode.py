"""Pure parts of the eBPF source: peer classes, histogram bounds, samples, monotonic series."""

from __future__ import annotations

import pytest

from otel_agent.ebpf import BpfConfig
from otel_agent.ebpf.classes import classify, trie_entries
from otel_agent.accounting import Cumulative, HeldBack
from otel_agent.ebpf.decode import BOUNDS, RawCounters, log2_bounds_seconds, to_samples
from otel_agent.ebpf.system import effective_caps, missing_network_caps, missing_tracing_caps, v2_hierarchy_id
from otel_agent.errors import ConfigError
from otel_agent.metrics import METRICS

POD, CLUSTER = ("10.244.0.0/16", "fd00:10:244::/56"), ("10.0.0.0/8", "192.168.0.0/16", "fc00::/7")


@pytest.mark.parametrize("addr, cls", [
    ("10.244.3.7", "pod-network"),          # longest prefix: pod /16 inside cluster /8
    ("10.1.2.3", "cluster-private"),
    ("192.168.1.1", "cluster-private"),
    ("8.8.8.8", "internet"),
    ("fd00:10:244::1", "pod-network"),
    ("fd12::1", "cluster-private"),
    ("2001:db8::1", "internet"),
])
def test_classify(addr, cls):
    assert classify(addr, POD, CLUSTER) == cls


def test_trie_keys_map_ipv4_into_ipv6():
    e = trie_entries(("10.244.0.0/16",), ("10.244.0.0/16", "fc00::/7"))
    assert e[(96 + 16, bytes(10) + b"\xff\xff" + bytes([10, 244, 0, 0]))] == 0  # pod wins a tie
    assert e[(7, bytes([0xfc]) + bytes(15))] == 1


def test_bounds_follow_the_kernel_slots():
    # slot 0 = [0, 1024 ns), slot k = [2^(k-1), 2^k) * 1024 ns; the last slot is overflow
    assert len(BOUNDS) == 31
    assert BOUNDS[0] == pytest.approx(1.024e-6) and BOUNDS[10] == pytest.approx(1024 * 1024e-9)
    assert log2_bounds_seconds(4) == pytest.approx((1.024e-6, 2.048e-6, 4.096e-6))


def test_samples_have_table_keys_units_and_attributes():
    raw = RawCounters(
        cpu_ns={7: 1_500_000_000},
        runq={7: ((1, 2) + (0,) * 30, 5000)},
        net={(7, 0, 2): (1000, 3), (7, 1, 0): (50, 1)},
        faults={7: 9},
        syscalls={7: (4, ((0, 4) + (0,) * 30, 8000))},
    )
    samples, hists = to_samples(raw)
    assert all(s.metric in METRICS for s in samples) and all(h.metric in METRICS for h in hists)
    by = {(s.metric, s.attributes): s.value for s in samples}
    assert by[("bpf.cpu.on_cpu_time", ())] == 1.5
    assert by[("bpf.network.io", (("network.io.direction", "transmit"),
                                  ("otel_agent.network.class", "internet")))] == 1000
    assert by[("bpf.network.packets", (("network.io.direction", "receive"),
                                       ("otel_agent.network.class", "pod-network")))] == 1
    rq = next(h for h in hists if h.metric == "bpf.cpu.run_queue.delay")
    assert rq.count == 3 and rq.sum == pytest.approx(5e-6) and len(rq.bucket_counts) == len(rq.explicit_bounds) + 1
    for s in samples:  # attribute keys are the table's, sorted
        assert [k for k, _ in s.attributes] == sorted(k for k, _ in s.attributes)
        assert {k for k, _ in s.attributes} <= set(METRICS[s.metric].attributes)


def test_cumulative_survives_an_evicted_entry():
    c = Cumulative()
    assert c.update("k", 100) == (100, False)
    assert c.update("k", 150) == (150, False)
    assert c.update("k", 20) == (170, True)  # restarted from zero: 150 kept as a base
    assert c.update("k", 30) == (180, False)
    h = ((1, 2), 10)
    assert c.update("h", h) == (h, False)
    assert c.update("h", ((0, 1), 4)) == (((1, 3), 14), True)
    c.forget("k")
    assert c.update("k", 5) == (5, False)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="profile"):
        BpfConfig(profile="everything")
    with pytest.raises(ConfigError, match="CIDR"):
        BpfConfig(pod_cidrs=("10.0.0.0/33",))
    with pytest.raises(ConfigError, match="map_max_entries"):
        BpfConfig(map_max_entries=0)
    assert BpfConfig(profile="minimal").enabled_families() == ("lifecycle", "cpu")
    assert "syscalls" in BpfConfig(profile="comprehensive").enabled_families()


def test_capabilities_from_status(tmp_path):
    st = tmp_path / "status"
    st.write_text("Name:\tx\nCapEff:\t000001c000001000\n")  # BPF, PERFMON, NET_ADMIN + bit 38..40
    caps = effective_caps(st)
    assert missing_tracing_caps(caps) == [] and missing_network_caps(caps) == []
    assert missing_tracing_caps(1 << 12) == ["CAP_BPF", "CAP_PERFMON"]
    assert missing_tracing_caps(1 << 21) == []  # CAP_SYS_ADMIN covers both
    assert missing_network_caps(0) == ["CAP_NET_ADMIN"]


def test_v2_hierarchy_is_the_line_without_controllers(tmp_path):
    f = tmp_path / "cgroup"
    f.write_text("9:name=systemd:/\n4:memory:/x\n0::/\n")
    assert v2_hierarchy_id(f) == 0
    f.write_text("12:cpu:/\n3::/a\n")
    assert v2_hierarchy_id(f) == 3


def test_loopback_is_pod_network_unless_a_list_names_it():
    from otel_agent.ebpf.classes import classify

    assert classify("127.0.0.1", (), ()) == "pod-network"
    assert classify("::1", (), ("10.0.0.0/8",)) == "pod-network"
    assert classify("127.0.0.9", (), ("127.0.0.0/8",)) == "cluster-private"
    assert classify("127.0.0.9", (), (), loopback_is_local=False) == "internet"


def _slot(**kw):
    from otel_agent.ebpf.layout import CpuSlot

    s = CpuSlot()
    for k, v in kw.items():
        if k == "wait_slots":
            for i, n in v.items():
                s.wait_slots[i] = n
        else:
            setattr(s, k, v)
    return s


def test_held_back_adds_pending_running_and_waits_per_cgroup():
    from otel_agent.ebpf.decode import held_back

    slots = [
        # CPU 0: 3 ms of runtime deltas of cgroup 7 added up, its task running (its slice
        # counted by runtime events: nothing more to add), two waits held
        _slot(last_ns=1_000_000, pend_cgroup=7, pend_ns=3_000_000, cur_cgroup=7, cur_task=0xA0,
              idle_task=0xF0, counted=1, wait_cgroup=7, wait_n=2, wait_sum_ns=5000,
              wait_slots={2: 1, 3: 1}),
        # CPU 1: idle now; 1 ms of cgroup 9 not flushed; one wait of 9 held
        _slot(last_ns=2_500_000, pend_cgroup=9, pend_ns=1_000_000, cur_cgroup=0, cur_task=0xF1,
              idle_task=0xF1, wait_cgroup=9, wait_n=1, wait_sum_ns=700, wait_slots={0: 1}),
        # CPU 2: a task of unknown cgroup running: nothing can be said for it
        _slot(last_ns=2_000_000, cur_cgroup=0, cur_task=0xB0),
        # CPU 3: a task of cgroup 11 running 0.5 ms with no runtime event yet (a real-time
        # task before 6.8): switch-to-switch time, as the program counts it at switch-out
        _slot(last_ns=2_500_000, cur_cgroup=11, cur_task=0xC0, idle_task=0xF3, counted=0),
    ]
    cpu, waits = held_back(slots, now_ns=3_000_000)
    assert cpu == {7: 3_000_000, 9: 1_000_000, 11: 500_000}
    assert waits[7][1] == 5000 and waits[7][0][2] == 1 and waits[7][0][3] == 1 and sum(waits[7][0]) == 2
    assert waits[9] == ((1,) + (0,) * 31, 700)


def test_held_back_values_never_go_down():
    """A flush between the map read and the slot read makes one read low: a pause, never a
    decrease; the next read carries on."""

    h = HeldBack()
    assert h.apply("k", 100, 30) == 130  # 100 in the map, 30 held in a slot
    assert h.apply("k", 100, None) == 130  # flushed between the reads: seen in neither
    assert h.apply("k", 130, 5) == 135
    hist = ((1, 2), 10)
    assert h.apply("h", hist, ((0, 1), 3)) == ((1, 3), 13)
    assert h.apply("h", hist, None) == ((1, 3), 13)
    h.forget("k")
    assert h.apply("k", 7, None) == 7
