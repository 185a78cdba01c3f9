"""possible_cpus sizes the per-CPU slot array of bpf/cpu.c: a CPU id past it would go uncounted."""

from otel_agent.ebpf.system import possible_cpus


def test_possible_cpus_ranges_and_lists(tmp_path):
    f = tmp_path / "possible"
    for text, want in (("0\n", 1), ("0-1\n", 2), ("0-3,8-11\n", 12), ("0,2,5\n", 6)):
        f.write_text(text)
        assert possible_cpus(f) == want


def test_possible_cpus_covers_this_machine():
    import os

    assert possible_cpus() >= max(os.sched_getaffinity(0)) + 1
