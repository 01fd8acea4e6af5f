// SPDX-License-Identifier: GPL-2.0
/*
 * ktstr_fifo: a global FIFO sched_ext scheduler used as a test fixture.
 *
 * Every task goes through one shared DSQ (FIFO_DSQ), so the fault switches
 * below control all scheduling: holding back dispatches really starves
 * tasks, and the kernel's stall detection really ejects the scheduler.
 *
 * Fault switches live in .bss, not .rodata: the loader sets them before
 * attaching, and they stay writable at run time (bpftool map update on the
 * .bss map, or the loader's mmap of it).
 *
 * Built with clang-14 for -mcpu=v3 (atomic fetch-and-add; no v4 insns).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

/*
 * sched_ext kfuncs, declared by hand with the prototypes the kernel's BTF
 * gives them (vmlinux.h from bpftool 7.1 carries no kfunc prototypes).
 * libbpf checks each against the running kernel's BTF at load time.
 */
void scx_bpf_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice,
			u64 enq_flags) __ksym;
bool scx_bpf_dsq_move_to_local(u64 dsq_id) __ksym;
s32 scx_bpf_create_dsq(u64 dsq_id, s32 node) __ksym;
s32 scx_bpf_dsq_nr_queued(u64 dsq_id) __ksym;
s32 scx_bpf_select_cpu_dfl(struct task_struct *p, s32 prev_cpu, u64 wake_flags,
			   bool *is_idle) __ksym;
void scx_bpf_kick_cpu(s32 cpu, u64 flags) __ksym;
void scx_bpf_error_bstr(char *fmt, unsigned long long *data,
			u32 data__sz) __ksym;

/*
 * scx_bpf_error() with one u64 argument. The verifier wants fmt in a
 * writable map (.data): a const .rodata string is rejected.
 */
#define fifo_error1(fmt, a)                                                  \
	({                                                                   \
		static char ___fmt[] = fmt;                                  \
		unsigned long long ___arg[1] = { (a) };                      \
		scx_bpf_error_bstr(___fmt, ___arg, sizeof(___arg));          \
	})

/* User DSQ ids have bit 63 clear; 0 is as good as any. */
#define FIFO_DSQ 0

/*
 * Fault switches (0 = off), set by the loader before attach. Variables the
 * loader sees use __u64 & co., which its skeleton header can resolve.
 */
__u64 stall_after; /* stop dispatching after this many dispatches */
__u64 crash_after; /* scx_bpf_error() at this many dispatches */
__u64 slow;        /* dispatch only on every slow-th opportunity (>= 2) */
__u64 stall_pinned; /* tasks allowed on one CPU only get an endless slice */

/* Counters the loader prints on exit. */
__u64 nr_dispatched;
__u64 nr_chances; /* dispatch calls with a task waiting, under --slow */

/*
 * Exit info copied from ops.exit() for the loader. `kind` is written last:
 * a non-zero kind means reason and msg are complete.
 */
struct {
	__u32 kind;
	__s64 exit_code;
	char reason[128];
	char msg[1024];
} uei;

/*
 * Enqueues per enqueuing CPU, in a hash map: something a host-side capture
 * can render through the map's BTF (key, and a struct value).
 */
struct cpu_enqueues {
	__u64 enqueues;
	__s32 last_pid;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, struct cpu_enqueues);
} enq_by_cpu SEC(".maps");

static void count_enqueue(struct task_struct *p)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct cpu_enqueues *c = bpf_map_lookup_elem(&enq_by_cpu, &cpu);

	if (c) {
		__sync_fetch_and_add(&c->enqueues, 1);
		c->last_pid = p->pid;
	} else {
		struct cpu_enqueues first = { .enqueues = 1, .last_pid = p->pid };

		bpf_map_update_elem(&enq_by_cpu, &cpu, &first, BPF_NOEXIST);
	}
}

SEC("struct_ops/fifo_select_cpu")
s32 BPF_PROG(fifo_select_cpu, struct task_struct *p, s32 prev_cpu,
	     u64 wake_flags)
{
	bool is_idle = false;

	/*
	 * Pick a CPU (preferably idle) but never insert into its local DSQ
	 * here: that would bypass FIFO_DSQ and the fault switches.
	 */
	return scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
}

SEC("struct_ops/fifo_enqueue")
void BPF_PROG(fifo_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 slice = SCX_SLICE_DFL;

	/*
	 * The bug --stall-pinned injects: a task that can run on one CPU only
	 * keeps it until it blocks. A pinned hog then starves every other
	 * task that needs that CPU, and the watchdog names the one it finds.
	 */
	if (stall_pinned && p->nr_cpus_allowed == 1)
		slice = SCX_SLICE_INF;
	count_enqueue(p);
	scx_bpf_dsq_insert(p, FIFO_DSQ, slice, enq_flags);
}

SEC("struct_ops/fifo_dispatch")
void BPF_PROG(fifo_dispatch, s32 cpu, struct task_struct *prev)
{
	u64 n;

	if (slow > 1 && scx_bpf_dsq_nr_queued(FIFO_DSQ) > 0 &&
	    __sync_fetch_and_add(&nr_chances, 1) % slow != 0) {
		/*
		 * Skip this chance. A CPU whose task keeps running (prev still
		 * queued) comes back at its next slice end; one that would go
		 * idle must be kicked, or the skipped tasks would stall.
		 */
		if (!prev || !(prev->scx.flags & SCX_TASK_QUEUED))
			scx_bpf_kick_cpu(cpu, 0);
		return;
	}
	/* Stalled: leave tasks queued; the watchdog will eject us. */
	if (stall_after && nr_dispatched >= stall_after)
		return;
	if (!scx_bpf_dsq_move_to_local(FIFO_DSQ))
		return;
	n = __sync_fetch_and_add(&nr_dispatched, 1) + 1;
	if (crash_after && n == crash_after)
		fifo_error1("ktstr_fifo: injected crash after %llu dispatches",
			    n);
}

/* Sleepable (scx_bpf_create_dsq may sleep); the loader sets the flag. */
SEC("struct_ops/fifo_init")
s32 BPF_PROG(fifo_init)
{
	return scx_bpf_create_dsq(FIFO_DSQ, -1);
}

SEC("struct_ops/fifo_exit")
void BPF_PROG(fifo_exit, struct scx_exit_info *ei)
{
	bpf_probe_read_kernel_str(uei.reason, sizeof(uei.reason), ei->reason);
	bpf_probe_read_kernel_str(uei.msg, sizeof(uei.msg), ei->msg);
	uei.exit_code = ei->exit_code;
	/* Publish kind only after the strings (x86 keeps store order). */
	asm volatile("" ::: "memory");
	uei.kind = ei->kind;
}

/* The build names a second variant the way scx schedulers name themselves
 * (<name>_<version>_<target>), to prove the harness needs no ops name. */
#ifndef KTSTR_OPS_NAME
#define KTSTR_OPS_NAME "ktstr_fifo"
#endif

SEC(".struct_ops")
struct sched_ext_ops ktstr_fifo_ops = {
	.select_cpu = (void *)fifo_select_cpu,
	.enqueue = (void *)fifo_enqueue,
	.dispatch = (void *)fifo_dispatch,
	.init = (void *)fifo_init,
	.exit = (void *)fifo_exit,
	/*
	 * The watchdog ejects the scheduler when a runnable task has waited
	 * this long (the kernel's default is 30 s): short, so a stall ends a
	 * test run within seconds, yet far above any fair wait in our runs.
	 */
	.timeout_ms = 3000,
	.name = KTSTR_OPS_NAME,
};
