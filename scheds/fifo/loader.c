// SPDX-License-Identifier: GPL-2.0
/*
 * ktstr_fifo loader: sets the fault switches, loads and attaches the
 * scheduler, then waits.
 *
 * Exit status: 0 after SIGINT/SIGTERM and a clean detach; 1 when the kernel
 * ejected the scheduler (its exit kind, reason and message are printed);
 * 2 for bad arguments; 3 when loading or attaching failed.
 *
 * Written for libbpf 1.1 (Debian bookworm): struct_ops are attached with
 * bpf_map__attach_struct_ops() on a plain ".struct_ops" map, since
 * ".struct_ops.link" and sleepable "struct_ops.s/" sections need libbpf 1.2+.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include "fifo.skel.h"

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

/* Values of the kernel's enum scx_exit_kind, as in the 7.3 BTF. */
static const char *exit_kind_name(unsigned int kind)
{
	switch (kind) {
	case 1: return "SCX_EXIT_DONE";
	case 64: return "SCX_EXIT_UNREG";
	case 65: return "SCX_EXIT_UNREG_BPF";
	case 66: return "SCX_EXIT_UNREG_KERN";
	case 67: return "SCX_EXIT_SYSRQ";
	case 68: return "SCX_EXIT_PARENT";
	case 69: return "SCX_EXIT_PARENT_KILL";
	case 1024: return "SCX_EXIT_ERROR";
	case 1025: return "SCX_EXIT_ERROR_BPF";
	case 1026: return "SCX_EXIT_ERROR_STALL";
	case 1027: return "SCX_EXIT_ERROR_REENQ";
	case 1028: return "SCX_EXIT_ERROR_RESCUE";
	default: return "unknown";
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ktstr_fifo [--stall-after N] [--stall-pinned] [--crash-after N] [--slow K]\n"
		"  --stall-after N  stop dispatching after N dispatches (the\n"
		"                   sched_ext watchdog then ejects the scheduler)\n"
		"  --stall-pinned   give tasks allowed on one CPU an endless slice, so a\n"
		"                   pinned hog starves whatever else needs its CPU\n"
		"  --crash-after N  call scx_bpf_error() at the Nth dispatch\n"
		"  --slow K         dispatch only on every Kth opportunity (K >= 2)\n");
}

/* A positive decimal count, or exit 2 naming the option. */
static unsigned long long parse_count(const char *opt, const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v == 0) {
		fprintf(stderr, "ktstr_fifo: %s wants a positive integer, got '%s'\n",
			opt, s);
		exit(2);
	}
	return v;
}

static void print_exit(const struct fifo_bpf *skel, const char *what)
{
	const typeof(skel->bss->uei) *u = &skel->bss->uei;

	printf("ktstr_fifo %s: kind=%u (%s) exit_code=%lld reason=\"%s\" msg=\"%s\" dispatched=%llu\n",
	       what, u->kind, exit_kind_name(u->kind), (long long)u->exit_code,
	       u->reason, u->msg, (unsigned long long)skel->bss->nr_dispatched);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "stall-after", required_argument, NULL, 's' },
		{ "crash-after", required_argument, NULL, 'c' },
		{ "slow", required_argument, NULL, 'k' },
		{ "stall-pinned", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	unsigned long long stall_after = 0, crash_after = 0, slow = 0, stall_pinned = 0;
	struct timespec tick = { 0, 100 * 1000 * 1000 };
	struct bpf_link *link;
	struct fifo_bpf *skel;
	int opt, err, stall_noted = 0;

	/* Line-buffered even into a pipe: whoever watches us reads lines. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 's': stall_after = parse_count("--stall-after", optarg); break;
		case 'c': crash_after = parse_count("--crash-after", optarg); break;
		case 'k': slow = parse_count("--slow", optarg); break;
		case 'p': stall_pinned = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ktstr_fifo: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (slow == 1) {
		fprintf(stderr, "ktstr_fifo: --slow 1 would not slow anything; use K >= 2\n");
		return 2;
	}

	skel = fifo_bpf__open();
	if (!skel) {
		fprintf(stderr, "ktstr_fifo: opening the BPF object failed: %s\n",
			strerror(errno));
		return 3;
	}
	skel->bss->stall_after = stall_after;
	skel->bss->crash_after = crash_after;
	skel->bss->slow = slow;
	skel->bss->stall_pinned = stall_pinned;
	/* ops.init calls scx_bpf_create_dsq(), which may sleep. */
	bpf_program__set_flags(skel->progs.fifo_init, BPF_F_SLEEPABLE);

	err = fifo_bpf__load(skel);
	if (err) {
		fprintf(stderr, "ktstr_fifo: loading failed: %s (libbpf's log above says why)\n",
			strerror(-err));
		fifo_bpf__destroy(skel);
		return 3;
	}

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	link = bpf_map__attach_struct_ops(skel->maps.ktstr_fifo_ops);
	if (!link) {
		fprintf(stderr, "ktstr_fifo: attaching failed: %s (another sched_ext scheduler attached?)\n",
			strerror(errno));
		fifo_bpf__destroy(skel);
		return 3;
	}
	printf("ktstr_fifo attached (stall_after=%llu stall_pinned=%llu crash_after=%llu slow=%llu)\n",
	       stall_after, stall_pinned, crash_after, slow);

	/*
	 * ops.exit() fills uei before the kernel finishes disabling us. Say
	 * when the stall switch trips, so a watcher can time the watchdog.
	 */
	while (!stop_signal && !skel->bss->uei.kind) {
		if (stall_after && !stall_noted &&
		    skel->bss->nr_dispatched >= stall_after) {
			printf("ktstr_fifo stalling: dispatches stopped at %llu\n",
			       (unsigned long long)skel->bss->nr_dispatched);
			stall_noted = 1;
		}
		nanosleep(&tick, NULL);
	}

	if (skel->bss->uei.kind) {
		print_exit(skel, "ejected");
		bpf_link__destroy(link);
		fifo_bpf__destroy(skel);
		return 1;
	}
	/* Detach is synchronous: ops.exit() has run when it returns. */
	bpf_link__destroy(link);
	print_exit(skel, "detached");
	fifo_bpf__destroy(skel);
	return 0;
}
