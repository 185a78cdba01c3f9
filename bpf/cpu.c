/* CPU family: on-CPU time and run-queue delay per cgroup, from scheduler tracepoints only.
 *
 * Attached as raw tracepoints: the program gets the tracepoint's own arguments (TP_PROTO) and
 * the kernel skips building the perf trace record (both task names copied, ~40 ns an event
 * here), which is most of what a scheduler tracepoint costs. Task arguments are task_struct
 * addresses, used only as opaque keys: no field of any kernel struct is read (DESIGN rule 6).
 *
 * On-CPU time is the scheduler's own: sched_stat_runtime reports each runtime delta the
 * scheduler adds to a task (update_curr: at every tick, enqueue, dequeue and switch-out), the
 * very deltas cgroup_account_cputime() adds to the cgroup's cpu.stat usage. A clock read at
 * each sched_switch would also count what cpu.stat leaves out: on a VM, time the hypervisor
 * stole while the task was current (paravirt steal accounting; measured +8% on one short-lived
 * container of 17 on a busy node here, while the runtime sums matched cpu.stat to the
 * microsecond). The delta is almost always the current task's: its cgroup is the current
 * cgroup, cached in the CPU's slot. A delta of a task running on another CPU (a remote wake-up
 * or /proc/PID/schedstat read that updates that CPU's clock) is charged to the cgroup the
 * task's entry remembers. Before 6.8 only the fair class reported its deltas: a slice of any
 * other class (real-time) that saw no runtime event is counted from switch to switch instead.
 *
 * Run-queue delay ("Whose wait is it?"): a wait that ends at a switch belongs to next, whose
 * cgroup the current-task helper cannot give. We learn each task's cgroup when it is switched
 * out (current == prev), at its first runtime event after a switch-in, and at sched_wakeup_new
 * (the child is in the parent's cgroup, and the parent is current); cgroup_attach_task marks it
 * to be learnt again. A wait starts at a wake-up, or at the switch that took a still-runnable
 * task off the CPU (preempted, yielded, or woken before it got to sleep): it goes back on the
 * run queue with no wake-up event.
 *
 * Cost (bench/ebpf.py): sched_switch and sched_stat_runtime are the hottest events of the node,
 * so the common case touches only this CPU's slot and the tasks' entries it cannot do without:
 * - bpf_get_current_cgroup_id() walks task -> css_set -> cgroup -> kernfs node and measured
 *   ~90 ns here. A task's cgroup is learnt once with it and remembered in its entry; the cgroup
 *   of the task running on a CPU is kept in that CPU's slot, and used by its runtime events and
 *   at its switch-out unless any task changed cgroup since (a global generation, bumped at
 *   every cgroup_attach_task).
 * - On-CPU time is added up in this CPU's slot while consecutive deltas belong to one cgroup,
 *   and written to cpu_time when the cgroup changes, the CPU goes idle, or FLUSH_NS has built
 *   up. So what is held back at any moment belongs to the cgroup running on that CPU now and
 *   is at most FLUSH_NS; a task's last slice is in the map once the next task (of another
 *   cgroup, or idle) is switched in. The reader adds what the slots hold.
 * - Run-queue waits are held back the same way: a wait ends when its task is switched in, so
 *   while that task's cgroup keeps the CPU its waits add up in a small histogram in the CPU's
 *   slot (no map lookup, no atomic), and go to runq (one lookup, one atomic add per bucket
 *   used) when a task of another cgroup is switched in, the CPU goes idle, or the oldest has
 *   been held FLUSH_NS. A cgroup's last waits are in runq once its last task has left the CPU.
 * - Per-task state lives in a set-associative table in a plain array (two tasks a 64-byte
 *   set, the set chosen by a multiplicative hash of the task's address), not a BPF hash map:
 *   an array lookup is inlined by the verifier (~1 ns), a hash lookup measured ~55 ns, and the
 *   switch and the wake-up each need one. A third task hashing to a full set takes one of the
 *   two ways over (counted as a failed update of "tasks"); the task that lost it has its
 *   cgroup learnt again at its next switch-out, and a wait it was in is not counted. An entry
 *   is claimed with its key written last and readers check the key again after reading, so a
 *   wait is never charged from another task's entry except in a race of a few instructions
 *   between two colliding tasks.
 * - The switched-out task's entry is written only when it stays runnable (its wait starts
 *   now) or its cgroup is not known yet. A running task's entry always says "not waiting":
 *   switch-in clears it, and a wake-up of a task that is current on its CPU starts no wait, so
 *   a sleeping switch-out has nothing to reset.
 */

#ifndef FLUSH_NS
#define FLUSH_NS 10000000  /* 10 ms of one cgroup's on-CPU time held in a CPU's slot at most */
#endif
#ifndef MAX_CPUS
#define MAX_CPUS 256
#endif
#ifndef TASK_SETS
#define TASK_SETS 32768  /* a power of two: the loader rounds MAX_TASKS / 2 up */
#endif
#ifndef TASK_SET_BITS
#define TASK_SET_BITS 15  /* log2(TASK_SETS) */
#endif
/* sched_switch has had prev_state as its fourth argument since 5.18; before, the preemption
 * flag alone says whether prev stays runnable (a yield then looks like a sleep). */
#ifndef SWITCH_HAS_PREV_STATE
#define SWITCH_HAS_PREV_STATE 1
#endif

struct task_info {
    u64 task;        /* key: the task_struct's address; 0 = a free way */
    u64 cgroup_id;   /* last cgroup the task was seen in; 0 = not known yet */
    u64 enqueued_ns; /* start of the current run-queue wait; 0 = not waiting (always, while running) */
    u32 cpu;         /* CPU it was last switched in on */
    u32 exact;       /* cgroup_id came from the kernel at a switch-out, not guessed at fork */
};

struct task_set {
    struct task_info way[2];  /* 64 bytes: one cache line */
};

/* One slot per CPU, in a plain array indexed by CPU id so that a wake-up on another CPU can
 * see which task this CPU runs (first cache line). Written only by its own CPU. */
struct cpu_slot {
    u64 last_ns;      /* time of this CPU's last switch */
    u64 pend_cgroup;  /* cgroup whose on-CPU time is being added up here */
    u64 pend_ns;      /* on-CPU ns of pend_cgroup not yet in cpu_time */
    u64 cur_cgroup;   /* exact cgroup of the task running here; 0 = ask the kernel */
    u64 cur_gen;      /* cg_gen when cur_cgroup was taken */
    u64 cur_task;     /* task switched in last (or seen current by a runtime event) */
    u64 idle_task;    /* this CPU's idle task, once seen (pid 0 at a switch-out); 0 = not yet */
    u64 counted;      /* a runtime event counted the running task's slice (see the top) */
    /* Run-queue waits of wait_cgroup ended on this CPU and not yet in runq: a histogram held
     * back the way pend_ns is (see "Cost" above). */
    u64 wait_cgroup;
    u64 wait_first_ns;  /* when the oldest of them ended */
    u64 wait_sum_ns;
    u64 wait_n;
    u32 wait_slots[HIST_SLOTS];
};

BPF_ARRAY(cpu_slots, struct cpu_slot, MAX_CPUS);
/* Bumped at every cgroup_attach_task: cached cgroups of running tasks are then re-asked. */
BPF_ARRAY(cg_gen, u64, 1);
/* On-CPU ns per cgroup: per-CPU values summed by the reader. */
BPF_TABLE("lru_percpu_hash", u64, u64, cpu_time, MAX_CGROUPS);
/* Per-task state (see "Cost" above), and how many ways are taken: +1 at a claim of a free way,
 * -1 at exit, on whichever CPU; the reader sums the per-CPU values. */
BPF_ARRAY(tasks, struct task_set, TASK_SETS);
BPF_PERCPU_ARRAY(tasks_used, s64, 1);
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

/* The waits held in this CPU's slot go to the cgroup's histogram in runq. */
static __always_inline void flush_waits(struct cpu_slot *s)
{
    u64 cgid = s->wait_cgroup;
    struct hist *h = runq.lookup(&cgid);
    if (!h) {
        struct hist zero = {};
        /* BPF_NOEXIST: another CPU may have inserted it meanwhile; then we use its entry. */
        runq.insert(&cgid, &zero);
        h = runq.lookup(&cgid);
        if (!h)
            count_failure(FAIL_RUNQ);
    }
#pragma unroll
    for (int i = 0; i < HIST_SLOTS; i++) {
        u32 c = s->wait_slots[i];
        if (c != 0) {
            if (h)
                __sync_fetch_and_add(&h->slots[i], c);
            s->wait_slots[i] = 0;
        }
    }
    if (h)
        __sync_fetch_and_add(&h->sum_ns, s->wait_sum_ns);
    s->wait_sum_ns = 0;
    s->wait_n = 0;
}

/* A wait of cgid that ended now: held in this CPU's slot with the others of the same cgroup. */
static __always_inline void add_wait(struct cpu_slot *s, u64 cgid, u64 delta, u64 now)
{
    if (s->wait_n != 0 && s->wait_cgroup != cgid)
        flush_waits(s);
    if (s->wait_n == 0) {
        s->wait_cgroup = cgid;
        s->wait_first_ns = now;
    }
    u64 slot = bpf_log2l(delta >> 10);
    if (slot >= HIST_SLOTS)
        slot = HIST_SLOTS - 1;
    s->wait_slots[slot]++;
    s->wait_sum_ns += delta;
    s->wait_n++;
}

static __always_inline u64 cgroup_generation(void)
{
    u32 zero = 0;
    u64 *g = cg_gen.lookup(&zero);
    return g ? *g : 0;
}

static __always_inline void tasks_used_add(s64 d)
{
    u32 zero = 0;
    s64 *n = tasks_used.lookup(&zero);
    if (n)
        *n += d;  /* per-CPU slot */
}

static __always_inline struct task_set *task_set_of(u64 task)
{
    u32 i = (u32)((task * 0x9E3779B97F4A7C15ULL) >> (64 - TASK_SET_BITS)) & (TASK_SETS - 1);
    return tasks.lookup(&i);
}

static __always_inline struct task_info *task_find(struct task_set *set, u64 task)
{
    if (set->way[0].task == task)
        return &set->way[0];
    if (set->way[1].task == task)
        return &set->way[1];
    return 0;
}

/* The entry of task, or NULL: never seen, exited, or its way taken over by another. */
static __always_inline struct task_info *task_entry(u64 task)
{
    struct task_set *set = task_set_of(task);
    return set ? task_find(set, task) : 0;
}

/* Take a way for task (which has none): a free one, else the one not in a wait (a wait in
 * progress is data; a remembered cgroup can be learnt again), else way 1. */
static __always_inline void task_claim(struct task_set *set, u64 task, u64 cgid, u64 enqueued,
                                       u32 cpu, u32 exact)
{
    struct task_info *t;
    if (set->way[0].task == 0) {
        t = &set->way[0];
        tasks_used_add(1);
    } else if (set->way[1].task == 0) {
        t = &set->way[1];
        tasks_used_add(1);
    } else {
        t = set->way[1].enqueued_ns == 0 || set->way[0].enqueued_ns != 0 ? &set->way[1] : &set->way[0];
        count_failure(FAIL_TASKS);
    }
    /* Key cleared first and written last (volatile: in this order), so that a reader of the
     * previous owner sees its key change and drops what it read. */
    *(volatile u64 *)&t->task = 0;
    *(volatile u64 *)&t->cgroup_id = cgid;
    *(volatile u64 *)&t->enqueued_ns = enqueued;
    *(volatile u32 *)&t->cpu = cpu;
    *(volatile u32 *)&t->exact = exact;
    *(volatile u64 *)&t->task = task;
}

int cpu_sched_switch(struct bpf_raw_tracepoint_args *ctx)
{
    /* TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next,
     *          unsigned int prev_state) */
    u64 prev = ctx->args[1];
    u64 next = ctx->args[2];
#if SWITCH_HAS_PREV_STATE
    /* Still runnable: preempted, or its state is TASK_RUNNING (a yield, or woken before it
     * got to sleep; the kernel sets the state back to running when a signal is pending). */
    int runnable = ctx->args[0] != 0 || (u32)ctx->args[3] == 0;
#else
    int runnable = ctx->args[0] != 0;
#endif
    u64 now = bpf_ktime_get_ns();
    u32 cpu = bpf_get_smp_processor_id();

    struct cpu_slot *s = cpu_slots.lookup(&cpu);
    if (!s)
        return 0;
    u64 since = s->last_ns;
    s->last_ns = now;
    u64 gen = cgroup_generation();

    /* The idle task's time is nobody's CPU time. It is told by its address once it has been
     * seen switched out as pid 0; until then, by asking for the current pid. */
    int prev_idle;
    if (s->idle_task != 0) {
        prev_idle = prev == s->idle_task;
    } else {
        prev_idle = (u32)bpf_get_current_pid_tgid() == 0;
        if (prev_idle)
            s->idle_task = prev;
    }

    if (!prev_idle) {
        u64 cgid = 0;
        if (prev == s->cur_task && s->cur_gen == gen)
            cgid = s->cur_cgroup;
        int known = cgid != 0;
        if (!known)
            cgid = bpf_get_current_cgroup_id();
        /* A slice no runtime event counted (a real-time task before 6.8): switch to switch. */
        if (!s->counted && since != 0) {
            if (cgid != s->pend_cgroup) {
                flush_on_cpu(s);
                s->pend_cgroup = cgid;
            }
            s->pend_ns += now - since;
        }
        /* A task that sleeps starts its wait at its wake-up; its entry already says "not
         * waiting", and its cgroup is remembered unless unknown. */
        if (runnable || !known) {
            struct task_set *set = task_set_of(prev);
            if (set) {
                struct task_info *t = task_find(set, prev);
                if (t) {
                    t->cgroup_id = cgid;
                    t->exact = 1;
                    t->enqueued_ns = runnable ? now : 0;
                } else {
                    task_claim(set, prev, cgid, runnable ? now : 0, cpu, 1);
                }
            }
        }
    }

    u64 next_cgroup = 0;
    if (next != s->idle_task) {
        struct task_info *n = task_entry(next);
        if (n) {
            u64 cgid = n->cgroup_id;
            u64 enq = n->enqueued_ns;
            u32 exact = n->exact;
            if (*(volatile u64 *)&n->task == next) {  /* not taken over while we read */
                n->cpu = cpu;
                if (exact)
                    next_cgroup = cgid;
                if (enq != 0) {
                    n->enqueued_ns = 0;
                    u64 waited = now - enq;
                    /* Only a task seen before has a known cgroup; a task asleep since before
                     * attach is learnt at its first switch-out and counted from its next wait. */
                    if (cgid != 0 && (s64)waited > 0)
                        add_wait(s, cgid, waited, now);
                }
            }
        }
    }
    s->cur_task = next;
    s->cur_cgroup = next_cgroup;
    s->cur_gen = gen;
    s->counted = 0;
    /* Keep adding up only while the next task is known to be of the same cgroup. */
    if (next_cgroup != s->pend_cgroup || s->pend_ns >= FLUSH_NS)
        flush_on_cpu(s);
    if (s->wait_n != 0 && (next_cgroup != s->wait_cgroup || now - s->wait_first_ns >= FLUSH_NS))
        flush_waits(s);
    return 0;
}

/* The task running on this CPU, whose cgroup is not in the slot yet (a task whose entry had
 * none at its switch-in, a move to another cgroup since, or the first event after attach):
 * ask the kernel once, and remember it in the slot and in the task's entry, so that its
 * switch-out and its next switch-in need not ask again. A running task is not waiting. */
static __always_inline u64 learn_current(struct cpu_slot *s, u64 task, u32 cpu, u64 gen)
{
    u64 cgid = bpf_get_current_cgroup_id();
    s->cur_task = task;
    s->cur_cgroup = cgid;
    s->cur_gen = gen;
    struct task_set *set = task_set_of(task);
    if (set) {
        struct task_info *t = task_find(set, task);
        if (t) {
            t->cgroup_id = cgid;
            t->exact = 1;
            t->enqueued_ns = 0;
            t->cpu = cpu;
        } else {
            task_claim(set, task, cgid, 0, cpu, 1);
        }
    }
    return cgid;
}

int cpu_sched_stat_runtime(struct bpf_raw_tracepoint_args *ctx)
{
    /* TP_PROTO(struct task_struct *tsk, u64 runtime) (before 6.8 a u64 vruntime follows): a
     * runtime delta the scheduler has just added to tsk, and to its cgroup's cpu.stat. Called
     * with tsk's run queue locked, almost always on tsk's own CPU (tick, enqueue, dequeue,
     * switch-out); from another CPU when that one updates tsk's run-queue clock (a remote
     * wake-up onto tsk's CPU, a read of tsk's /proc/PID/schedstat). */
    u64 task = ctx->args[0];
    u64 delta = ctx->args[1];
    u32 cpu = bpf_get_smp_processor_id();
    struct cpu_slot *s = cpu_slots.lookup(&cpu);
    if (!s)
        return 0;
    u64 gen = cgroup_generation();
    u64 cgid;
    if (task == s->cur_task && s->cur_gen == gen && s->cur_cgroup != 0) {
        cgid = s->cur_cgroup;
    } else if (task == s->cur_task || task == bpf_get_current_task()) {
        cgid = learn_current(s, task, cpu, gen);
    } else {
        /* Running on another CPU: the cgroup its entry remembers, and that CPU must not time
         * this slice from switch to switch as well. A task with no entry (not seen since
         * attach, or its way taken over, which is counted) leaves this delta to that. */
        struct task_info *t = task_entry(task);
        if (t) {
            u64 c = t->cgroup_id;
            u32 tcpu = t->cpu;
            if (c != 0 && *(volatile u64 *)&t->task == task) {
                add_on_cpu(c, delta);
                struct cpu_slot *o = cpu_slots.lookup(&tcpu);
                if (o && o->cur_task == task)
                    o->counted = 1;
            }
        }
        return 0;
    }
    s->counted = 1;
    if (cgid != s->pend_cgroup) {
        flush_on_cpu(s);
        s->pend_cgroup = cgid;
    }
    s->pend_ns += delta;
    if (s->pend_ns >= FLUSH_NS)
        flush_on_cpu(s);
    return 0;
}

int cpu_sched_wakeup(struct bpf_raw_tracepoint_args *ctx)
{
    /* TP_PROTO(struct task_struct *p). The waker is current here, not the wakee: keep the
     * wakee's known cgroup. The wait starts now, unless the task is already waiting
     * (preempted, or woken twice: keep the earlier start, as the kernel's run_delay does) or
     * is still current on its CPU (woken before it switched out: it never left the CPU). */
    u64 p = ctx->args[0];
    struct task_set *set = task_set_of(p);
    if (!set)
        return 0;
    struct task_info *t = task_find(set, p);
    if (t) {
        if (t->enqueued_ns == 0) {
            u32 c = t->cpu;
            struct cpu_slot *s = cpu_slots.lookup(&c);
            if (!s || s->cur_task != p)
                t->enqueued_ns = bpf_ktime_get_ns();
        }
        return 0;
    }
    task_claim(set, p, 0, bpf_ktime_get_ns(), MAX_CPUS, 0);
    return 0;
}

int cpu_sched_wakeup_new(struct bpf_raw_tracepoint_args *ctx)
{
    /* TP_PROTO(struct task_struct *p). A new task starts in its parent's cgroup, and the
     * parent is current (fork), except with CLONE_INTO_CGROUP: a guess (exact = 0) until its
     * first switch-out asks the kernel. An entry found under its address belonged to a task
     * whose exit the program missed: replaced. */
    u64 p = ctx->args[0];
    struct task_set *set = task_set_of(p);
    if (!set)
        return 0;
    u64 cgid = bpf_get_current_cgroup_id();
    u64 now = bpf_ktime_get_ns();
    struct task_info *t = task_find(set, p);
    if (t) {
        t->cgroup_id = cgid;
        t->enqueued_ns = now;
        t->cpu = MAX_CPUS;
        t->exact = 0;
        return 0;
    }
    task_claim(set, p, cgid, now, MAX_CPUS, 0);
    return 0;
}

int cpu_cgroup_attach_task(struct bpf_raw_tracepoint_args *ctx)
{
    /* TP_PROTO(struct cgroup *dst_cgrp, const char *path, struct task_struct *task,
     * bool threadgroup). The destination's id would take a read of struct cgroup: instead the
     * task's cgroup is learnt again at its next switch-out. This fires for the v1 hierarchies
     * of a hybrid mount too; a needless re-learn costs one helper call. */
    struct task_info *t = task_entry(ctx->args[2]);
    if (t)
        t->exact = 0;
    /* The task may be running on some CPU with its old cgroup cached there: make every CPU
     * ask the kernel at its next switch-out. Moves are rare next to switches. */
    u32 zero = 0;
    u64 *g = cg_gen.lookup(&zero);
    if (g)
        __sync_fetch_and_add(g, 1);
    return 0;
}

int cpu_sched_process_exit(struct bpf_raw_tracepoint_args *ctx)
{
    /* TP_PROTO(struct task_struct *p, ...): every exiting thread, in its own context. Its way
     * is free again. */
    struct task_info *t = task_entry(ctx->args[0]);
    if (t) {
        *(volatile u64 *)&t->task = 0;
        tasks_used_add(-1);
    }
    return 0;
}
