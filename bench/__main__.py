"""`make bench`: every benchmark, figures printed with what they are measured against.

Not timed tests: the machine is shared and noisy, so targets are judged here, by people, on
figures taken in one run (ratios within a run), and the README quotes them.
"""

import os
import sys

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")


def main() -> int:
    if os.geteuid() != 0:
        print("bench: needs root (real cgroups, BPF)", file=sys.stderr)
        return 2
    import bench.agent
    import bench.cost
    import bench.ebpf
    import bench.fleet
    import bench.invoice
    import bench.soak

    print("== agent: the whole process against a naive read of its files ==")
    bench.agent.main([])
    print("\n== eBPF: cost per event, ping-pong slowdown, start-up ==")
    bench.ebpf.main()
    print("\n== cost processor: ingest and reports ==")
    bench.cost.main()
    print("\n== cost processor fleet: replicas on one PostgreSQL ledger ==")
    bench.fleet.main()
    print("\n== cost processor: a month's invoice imported ==")
    bench.invoice.main([])
    print("\n== cost processor: 30-day soak (ledger, memory and rebuild stay flat) ==")
    return bench.soak.main()


sys.exit(main())
