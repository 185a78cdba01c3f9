/* Shared by every program family: loaded once, ahead of the family sources.
 *
 * Map sizes come from the loader as -D flags (MAX_CGROUPS, MAX_TASKS, ...), never from string
 * templating, so the same source is what the tests and the agent compile.
 *
 * Each map a program inserts into has a slot in map_failures. An insert that fails (a full
 * plain hash, or an LRU hash that cannot find a free node) is counted there instead of being
 * silently lost; the agent reports it as self.bpf.map.update_failures.
 */
#ifndef OTEL_AGENT_COMMON_H
#define OTEL_AGENT_COMMON_H

#include <uapi/linux/ptrace.h>
#include <uapi/linux/bpf.h>

#ifndef MAX_CGROUPS
#define MAX_CGROUPS 10240
#endif
#ifndef MAX_TASKS
#define MAX_TASKS 65536
#endif
#ifndef MAX_CIDRS
#define MAX_CIDRS 1024
#endif
#ifndef PATH_LEN
#define PATH_LEN 256
#endif
/* Hierarchy id of cgroup v2 in cgroup:* tracepoints (the "0::" line of /proc/self/cgroup). */
#ifndef V2_HIERARCHY
#define V2_HIERARCHY 0
#endif

/* Slots of map_failures; the loader mirrors this list (otel_agent/ebpf/maps.py). */
enum fail_slot {
    FAIL_CG_PATHS = 0,
    FAIL_CG_REMOVED,
    FAIL_CPU_TIME,
    FAIL_TASKS,
    FAIL_RUNQ,
    FAIL_NET,
    FAIL_FAULTS,
    FAIL_SYSCALLS,
    FAIL_SYS_THREADS,
    FAIL_MAX,
};

BPF_PERCPU_ARRAY(map_failures, u64, FAIL_MAX);

static __always_inline void count_failure(int slot)
{
    u64 *n = map_failures.lookup(&slot);
    if (n)
        (*n)++;  /* per-CPU slot: no atomic needed */
}

/* Log2 histograms in 1024 ns units, as bcc's runqlat: slot 0 holds [0, 1024 ns), slot k >= 1
 * holds [2^(k-1), 2^k) units, the last slot everything above. bpf_log2l(v) is floor(log2 v) + 1
 * for v > 0 and 0 for v == 0. */
#define HIST_SLOTS 32

struct hist {
    u64 slots[HIST_SLOTS];
    u64 sum_ns;
};

static __always_inline void hist_add(struct hist *h, u64 delta_ns)
{
    u64 slot = bpf_log2l(delta_ns >> 10);
    if (slot >= HIST_SLOTS)
        slot = HIST_SLOTS - 1;
    __sync_fetch_and_add(&h->slots[slot], 1);
    __sync_fetch_and_add(&h->sum_ns, delta_ns);
}

#endif
