/* Syscalls family: system calls per cgroup, and their duration as a log2 histogram.
 *
 * raw_syscalls:sys_enter/sys_exit fire in the calling thread, so the current cgroup is the
 * caller's. The entry time is kept per thread (a thread may migrate CPUs inside a syscall, so
 * not per-CPU), updated in place; LRU so exited threads age out. A syscall that never returns
 * (exit, execve) leaves a stale time that the thread's next sys_enter overwrites. Attached as
 * raw tracepoints: no perf record is built on every system call, and no argument is needed.
 */

struct sys_stats {
    struct hist duration;
    u64 count;
};

BPF_TABLE("lru_hash", u32, u64, sys_threads, MAX_TASKS);
BPF_TABLE("lru_hash", u64, struct sys_stats, sys_stats, MAX_CGROUPS);

int syscalls_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();
    u64 *t = sys_threads.lookup(&tid);
    if (t) {
        *t = now;
        return 0;
    }
    if (sys_threads.update(&tid, &now) != 0)
        count_failure(FAIL_SYS_THREADS);
    return 0;
}

int syscalls_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 *t = sys_threads.lookup(&tid);
    if (!t || *t == 0)
        return 0;
    u64 delta = bpf_ktime_get_ns() - *t;
    *t = 0;

    u64 cgid = bpf_get_current_cgroup_id();
    struct sys_stats *s = sys_stats.lookup(&cgid);
    if (!s) {
        struct sys_stats zero = {};
        sys_stats.insert(&cgid, &zero);
        s = sys_stats.lookup(&cgid);
        if (!s) {
            count_failure(FAIL_SYSCALLS);
            return 0;
        }
    }
    __sync_fetch_and_add(&s->count, 1);
    hist_add(&s->duration, delta);
    return 0;
}
