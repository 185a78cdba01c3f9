/* Cgroup lifecycle: the paths of new cgroups and the ids of removed ones.
 *
 * A container that starts and dies between two reads is gone from /sys/fs/cgroup by the time
 * the agent looks, so its path (which names the pod and container) is kept here from
 * cgroup_mkdir. cgroup_rmdir marks its counters final: the agent exports them once more, then
 * frees the entries (ack). Both tracepoints fire for every hierarchy of a hybrid mount; only
 * the v2 one has the ids the BPF helpers return.
 *
 * Both maps are LRU hashes, and an entry evicted between two reads would never be seen from
 * user space: every insert is counted here (slot 0 paths, 1 removals), so the agent can tell
 * evictions as inserts - entries - its own deletes.
 */

struct cg_path {
    char path[PATH_LEN];  /* relative to the v2 root, as in /proc/PID/cgroup */
};

BPF_TABLE("lru_hash", u64, struct cg_path, cg_paths, MAX_CGROUPS);
/* id -> time of removal (ns, monotonic) */
BPF_TABLE("lru_hash", u64, u64, cg_removed, MAX_CGROUPS);
/* struct cg_path is too big for the BPF stack next to the rest: build it in a per-CPU slot. */
BPF_PERCPU_ARRAY(path_scratch, struct cg_path, 1);
BPF_PERCPU_ARRAY(lifecycle_inserts, u64, 2);

static __always_inline void count_insert(int slot)
{
    u64 *n = lifecycle_inserts.lookup(&slot);
    if (n)
        (*n)++;
}

int lifecycle_cgroup_mkdir(struct tracepoint__cgroup__cgroup_mkdir *args)
{
    if (args->root != V2_HIERARCHY)
        return 0;
    u32 zero = 0;
    struct cg_path *p = path_scratch.lookup(&zero);
    if (!p)
        return 0;
    u64 id = args->id;
    TP_DATA_LOC_READ_STR(p->path, path, sizeof(p->path));
    if (cg_paths.update(&id, p) != 0)
        count_failure(FAIL_CG_PATHS);
    else
        count_insert(0);
    return 0;
}

int lifecycle_cgroup_rmdir(struct tracepoint__cgroup__cgroup_rmdir *args)
{
    if (args->root != V2_HIERARCHY)
        return 0;
    u64 id = args->id;
    u64 now = bpf_ktime_get_ns();
    if (cg_removed.update(&id, &now) != 0)
        count_failure(FAIL_CG_REMOVED);
    else
        count_insert(1);
    return 0;
}
