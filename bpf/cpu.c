/* CPU family: on-CPU time and run-queue delay per cgroup, from scheduler tracepoints only.
 *
 * On-CPU time: at every sched_switch the CPU's time since its previous switch belongs to the
 * task being switched out. The current task in sched_switch is still prev, so
 * bpf_get_current_cgroup_id() is prev's cgroup: exact, and no task_struct read (DESIGN rule 6).
 *
 * Run-queue delay ("Whose wait is it?"): a wait that ends at a switch belongs to next, whose
 * cgroup the current-task helper cannot give. We learn each task's cgroup when it is switched
 * out (current == prev), at sched_wakeup_new (the child is in the parent's cgroup, and the
 * parent is current), and at cgroup:cgroup_attach_task when it moves. A wait starts at a
 * wake-up, or at the switch that preempted a still-runnable task: that task goes back on the
 * run queue with no wake-up event.
 */

struct task_info {
    u64 cgroup_id;   /* last cgroup the task was seen in; 0 = not known yet */
    u64 enqueued_ns; /* start of the current run-queue wait; 0 = not waiting */
};

/* Last switch on this CPU: per-CPU, never contended. */
BPF_PERCPU_ARRAY(last_switch, u64, 1);
/* On-CPU ns per cgroup: the hottest map, per-CPU values summed by the reader. */
BPF_TABLE("lru_percpu_hash", u64, u64, cpu_time, MAX_CGROUPS);
/* Per task, updated in place. A plain hash, not LRU: measured here, the LRU lookup on every
 * switch and wake-up costs more than deleting each task's entry once when it exits. */
BPF_HASH(tasks, u32, struct task_info, MAX_TASKS);
/* Run-queue delay histogram per cgroup. Shared (not per-CPU) to keep memory at
 * MAX_CGROUPS * 264 bytes whatever the core count; atomic adds, written once per wait. */
BPF_TABLE("lru_hash", u64, struct hist, runq, MAX_CGROUPS);

static __always_inline void add_on_cpu(u64 cgid, u64 delta)
{
    u64 *v = cpu_time.lookup(&cgid);
    if (v) {
        *v += delta;  /* this CPU's slot: plain add, update in place */
        return;
    }
    if (cpu_time.update(&cgid, &delta) != 0)
        count_failure(FAIL_CPU_TIME);
}

static __always_inline void add_wait(u64 cgid, u64 delta)
{
    struct hist *h = runq.lookup(&cgid);
    if (!h) {
        struct hist zero = {};
        /* BPF_NOEXIST: another CPU may have inserted it meanwhile; then we use its entry. */
        runq.insert(&cgid, &zero);
        h = runq.lookup(&cgid);
        if (!h) {
            count_failure(FAIL_RUNQ);
            return;
        }
    }
    hist_add(h, delta);
}

static __always_inline void mark_enqueued(u32 pid, u64 cgid, u64 now)
{
    struct task_info *t = tasks.lookup(&pid);
    if (t) {
        /* A wake-up of a task that is already runnable (preempted, or woken twice) does not
         * start a new wait: keep the earlier start, as the kernel's run_delay does. */
        if (t->enqueued_ns == 0)
            t->enqueued_ns = now;
        if (cgid)
            t->cgroup_id = cgid;
        return;
    }
    struct task_info fresh = {.cgroup_id = cgid, .enqueued_ns = now};
    if (tasks.update(&pid, &fresh) != 0)
        count_failure(FAIL_TASKS);
}

int cpu_sched_switch(struct tracepoint__sched__sched_switch *args)
{
    u64 now = bpf_ktime_get_ns();
    u32 zero = 0;
    u32 prev_pid = args->prev_pid;
    u32 next_pid = args->next_pid;

    u64 *last = last_switch.lookup(&zero);
    if (!last)
        return 0;
    u64 since = *last;
    *last = now;

    /* pid 0 is this CPU's idle task: idle time is nobody's CPU time. */
    if (prev_pid != 0) {
        u64 cgid = bpf_get_current_cgroup_id();
        if (since != 0)
            add_on_cpu(cgid, now - since);

        /* A preempted task stays runnable: its wait starts now. On this kernel the preemption
         * flag sits above the state bits (0x100), so test only the low byte. Any other state is
         * a sleep: its wait starts at the wake-up. */
        long state = args->prev_state;
        struct task_info *t = tasks.lookup(&prev_pid);
        if (t) {
            t->cgroup_id = cgid;
            t->enqueued_ns = (state & 0xff) == 0 ? now : 0;
        } else {
            struct task_info fresh = {.cgroup_id = cgid,
                                      .enqueued_ns = (state & 0xff) == 0 ? now : 0};
            if (tasks.update(&prev_pid, &fresh) != 0)
                count_failure(FAIL_TASKS);
        }
    }

    if (next_pid != 0) {
        struct task_info *n = tasks.lookup(&next_pid);
        if (n && n->enqueued_ns != 0) {
            u64 waited = now - n->enqueued_ns;
            n->enqueued_ns = 0;
            /* Only a task seen before has a known cgroup; a task asleep since before attach
             * is learnt at its first switch-out and counted from its next wait on. */
            if (n->cgroup_id != 0 && (s64)waited > 0)
                add_wait(n->cgroup_id, waited);
        }
    }
    return 0;
}

int cpu_sched_wakeup(struct tracepoint__sched__sched_wakeup *args)
{
    /* The waker is current here, not the wakee: keep the wakee's known cgroup. */
    mark_enqueued(args->pid, 0, bpf_ktime_get_ns());
    return 0;
}

int cpu_sched_wakeup_new(struct tracepoint__sched__sched_wakeup_new *args)
{
    /* A new task starts in its parent's cgroup, and the parent is current (fork), except with
     * CLONE_INTO_CGROUP, which cgroup_attach_task does not report; the first switch-out
     * corrects it. */
    mark_enqueued(args->pid, bpf_get_current_cgroup_id(), bpf_ktime_get_ns());
    return 0;
}

int cpu_cgroup_attach_task(struct tracepoint__cgroup__cgroup_attach_task *args)
{
    if (args->dst_root != V2_HIERARCHY)
        return 0;  /* a v1 hierarchy of a hybrid mount: not the id the helpers return */
    u32 pid = args->pid;
    struct task_info *t = tasks.lookup(&pid);
    if (t)
        t->cgroup_id = args->dst_id;
    return 0;
}

int cpu_sched_process_exit(struct tracepoint__sched__sched_process_exit *args)
{
    /* Fires for every exiting thread, in its own context: its entry is never needed again. */
    u32 pid = args->pid;
    tasks.delete(&pid);
    return 0;
}
