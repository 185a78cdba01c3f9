/* Faults family: user-space page faults per cgroup (exceptions:page_fault_user).
 *
 * The fault is taken in the faulting task's context, so the current cgroup is the one to
 * charge. Per-CPU counters updated in place: a fault storm on many CPUs never contends.
 * Attached as a raw tracepoint (no perf record built; the arguments are not needed).
 */

BPF_TABLE("lru_percpu_hash", u64, u64, faults, MAX_CGROUPS);

int faults_page_fault_user(struct bpf_raw_tracepoint_args *ctx)
{
    u64 cgid = bpf_get_current_cgroup_id();
    u64 *v = faults.lookup(&cgid);
    if (v) {
        (*v)++;
        return 0;
    }
    u64 one = 1;
    if (faults.update(&cgid, &one) != 0)
        count_failure(FAIL_FAULTS);
    return 0;
}
