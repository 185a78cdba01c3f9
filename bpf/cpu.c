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
 *
 * Cost (bench/ebpf.py): sched_switch is the hottest event of the node, so the common switch
 * touches only this CPU's slot and the two tasks' entries it cannot do without:
 * - bpf_get_current_cgroup_id() walks task -> css_set -> cgroup -> kernfs node and measured
 *   ~90 ns here, a third of the program. A task's cgroup is learnt once with it (at a switch-out,
 *   or cgroup_attach_task) and remembered in its entry; the cgroup of the task switched in is
 *   kept in this CPU's slot, and used at its switch-out unless any task changed cgroup since
 *   (a global generation, bumped at every cgroup_attach_task).
 * - On-CPU time is added up in this CPU's slot while consecutive tasks belong to one cgroup,
 *   and written to cpu_time when the cgroup changes, the CPU goes idle, or FLUSH_NS has built
 *   up. So what is held back at any moment belongs to the cgroup running on that CPU now and
 *   is at most FLUSH_NS; a task's last slice is in the map once the next task (of another
 *   cgroup, or idle) is switched in, as before.
 * - The switched-out task's entry is written only when it was preempted (its wait starts
 *   now) or its cgroup is not known yet. A running task's entry always says "not waiting":
 *   switch-in clears it, and a wake-up of a task that is current on its CPU (it was woken
 *   before it got to sleep) starts no wait, so a sleeping switch-out has nothing to reset.
 */

#ifndef FLUSH_NS
#define FLUSH_NS 10000000  /* 10 ms of one cgroup's on-CPU time held in a CPU's slot at most */
#endif
#ifndef MAX_CPUS
#define MAX_CPUS 256
#endif

struct task_info {
    u64 cgroup_id;   /* last cgroup the task was seen in; 0 = not known yet */
    u64 enqueued_ns; /* start of the current run-queue wait; 0 = not waiting (always, while running) */
    u32 cpu;         /* CPU it was last switched in on */
    u32 exact;       /* cgroup_id came from the kernel (switch-out, attach), not guessed at fork */
};

/* One slot per CPU, in a plain array indexed by CPU id so that a wake-up on another CPU can
 * see which task this CPU runs. 64 bytes: one cache line, written only by its own CPU. */
struct cpu_slot {
    u64 last_ns;      /* time of this CPU's last switch */
    u64 pend_cgroup;  /* cgroup whose on-CPU time is being added up here */
    u64 pend_ns;      /* on-CPU ns of pend_cgroup not yet in cpu_time */
    u64 cur_cgroup;   /* exact cgroup of the task switched in last; 0 = ask the kernel */
    u64 cur_gen;      /* cg_gen when cur_cgroup was taken */
    u32 cur_pid;      /* task switched in last (0 = idle) */
    u32 pad0;
    u64 pad1[2];
};

BPF_ARRAY(cpu_slots, struct cpu_slot, MAX_CPUS);
/* Bumped at every cgroup_attach_task: cached cgroups of running tasks are then re-asked. */
BPF_ARRAY(cg_gen, u64, 1);
/* On-CPU ns per cgroup: per-CPU values summed by the reader. */
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

static __always_inline void flush_on_cpu(struct cpu_slot *s)
{
    if (s->pend_ns != 0) {
        add_on_cpu(s->pend_cgroup, s->pend_ns);
        s->pend_ns = 0;
    }
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

static __always_inline u64 cgroup_generation(void)
{
    u32 zero = 0;
    u64 *g = cg_gen.lookup(&zero);
    return g ? *g : 0;
}

/* A wake-up: the wait starts now, unless the task is already waiting (preempted, or woken
 * twice: keep the earlier start, as the kernel's run_delay does) or is still current on its
 * CPU (woken between setting its sleep state and switching out: it never left the CPU). */
static __always_inline void mark_enqueued(u32 pid, u64 now)
{
    struct task_info *t = tasks.lookup(&pid);
    if (t) {
        if (t->enqueued_ns == 0) {
            u32 c = t->cpu;
            struct cpu_slot *s = cpu_slots.lookup(&c);
            if (!s || s->cur_pid != pid)
                t->enqueued_ns = now;
        }
        return;
    }
    struct task_info fresh = {.cgroup_id = 0, .enqueued_ns = now, .cpu = MAX_CPUS, .exact = 0};
    if (tasks.update(&pid, &fresh) != 0)
        count_failure(FAIL_TASKS);
}

int cpu_sched_switch(struct tracepoint__sched__sched_switch *args)
{
    u64 now = bpf_ktime_get_ns();
    u32 cpu = bpf_get_smp_processor_id();
    u32 prev_pid = args->prev_pid;
    u32 next_pid = args->next_pid;

    struct cpu_slot *s = cpu_slots.lookup(&cpu);
    if (!s)
        return 0;
    u64 since = s->last_ns;
    s->last_ns = now;
    u64 gen = cgroup_generation();

    /* pid 0 is this CPU's idle task: idle time is nobody's CPU time. */
    if (prev_pid != 0) {
        u64 cgid = 0;
        if (prev_pid == s->cur_pid && s->cur_gen == gen)
            cgid = s->cur_cgroup;
        int known = cgid != 0;
        if (!known)
            cgid = bpf_get_current_cgroup_id();
        if (since != 0) {
            if (cgid != s->pend_cgroup) {
                flush_on_cpu(s);
                s->pend_cgroup = cgid;
            }
            s->pend_ns += now - since;
        }

        /* A preempted task stays runnable: its wait starts now. On this kernel the preemption
         * flag sits above the state bits (0x100), so test only the low byte. Any other state is
         * a sleep: its wait starts at the wake-up, and its entry already says "not waiting". */
        long state = args->prev_state;
        int preempted = (state & 0xff) == 0;
        if (preempted || !known) {
            struct task_info *t = tasks.lookup(&prev_pid);
            if (t) {
                t->cgroup_id = cgid;
                t->exact = 1;
                t->enqueued_ns = preempted ? now : 0;
            } else {
                struct task_info fresh = {.cgroup_id = cgid, .enqueued_ns = preempted ? now : 0,
                                          .cpu = cpu, .exact = 1};
                if (tasks.update(&prev_pid, &fresh) != 0)
                    count_failure(FAIL_TASKS);
            }
        }
    }

    u64 next_cgroup = 0;
    if (next_pid != 0) {
        struct task_info *n = tasks.lookup(&next_pid);
        if (n) {
            n->cpu = cpu;
            if (n->exact)
                next_cgroup = n->cgroup_id;
            if (n->enqueued_ns != 0) {
                u64 waited = now - n->enqueued_ns;
                n->enqueued_ns = 0;
                /* Only a task seen before has a known cgroup; a task asleep since before
                 * attach is learnt at its first switch-out and counted from its next wait on. */
                if (n->cgroup_id != 0 && (s64)waited > 0)
                    add_wait(n->cgroup_id, waited);
            }
        }
    }
    s->cur_pid = next_pid;
    s->cur_cgroup = next_cgroup;
    s->cur_gen = gen;
    /* Keep adding up only while the next task is known to be of the same cgroup. */
    if (next_cgroup != s->pend_cgroup || s->pend_ns >= FLUSH_NS)
        flush_on_cpu(s);
    return 0;
}

int cpu_sched_wakeup(struct tracepoint__sched__sched_wakeup *args)
{
    /* The waker is current here, not the wakee: keep the wakee's known cgroup. */
    mark_enqueued(args->pid, bpf_ktime_get_ns());
    return 0;
}

int cpu_sched_wakeup_new(struct tracepoint__sched__sched_wakeup_new *args)
{
    /* A new task starts in its parent's cgroup, and the parent is current (fork), except with
     * CLONE_INTO_CGROUP, which cgroup_attach_task does not report: a guess (exact = 0) until
     * its first switch-out asks the kernel. A fresh entry also replaces whatever a reused pid
     * left behind (an exit the program missed). */
    u32 pid = args->pid;
    struct task_info fresh = {.cgroup_id = bpf_get_current_cgroup_id(),
                              .enqueued_ns = bpf_ktime_get_ns(), .cpu = MAX_CPUS, .exact = 0};
    if (tasks.update(&pid, &fresh) != 0)
        count_failure(FAIL_TASKS);
    return 0;
}

int cpu_cgroup_attach_task(struct tracepoint__cgroup__cgroup_attach_task *args)
{
    if (args->dst_root != V2_HIERARCHY)
        return 0;  /* a v1 hierarchy of a hybrid mount: not the id the helpers return */
    u32 pid = args->pid;
    struct task_info *t = tasks.lookup(&pid);
    if (t) {
        t->cgroup_id = args->dst_id;
        t->exact = 1;
    }
    /* The task may be running on some CPU with its old cgroup cached there: make every CPU
     * ask the kernel at its next switch-out. Moves are rare next to switches. */
    u32 zero = 0;
    u64 *g = cg_gen.lookup(&zero);
    if (g)
        __sync_fetch_and_add(g, 1);
    return 0;
}

int cpu_sched_process_exit(struct tracepoint__sched__sched_process_exit *args)
{
    /* Fires for every exiting thread, in its own context: its entry is never needed again. */
    u32 pid = args->pid;
    tasks.delete(&pid);
    return 0;
}
