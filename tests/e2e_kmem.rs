//! End to end: the host reads and writes the guest kernel's memory with
//! KASLR on (QEMU TCG here; `e2e_kvm_nested.rs` covers our VMM). One guest
//! runs three plans (reads with a hold between them, a per-CPU runqueue
//! read under load, sysctl writes read back through /proc/sys); a second
//! boot shows the kernel moved, and one with `nokaslr` that it did not.
//!
//! Needs QEMU and the default kernel; without them each test prints
//! `SKIP: <reason>`.

mod common;

use common::{prepared, run_all, run_all_with};

use std::collections::BTreeSet;
use std::time::Duration;

use ktstr_host::monitor::Trigger;
use ktstr_host::outcome::{KernelAccessLog, RunOutcome};
use ktstr_protocol::model::{
    AffinityIntent, Assert, Backdrop, CheckName, CheckState, DetailKind, HoldSpec, KernelTarget,
    KernelValue, KernelValueWidth, MonitorSpec, Op, Plan, Step, Work, WorkType,
};

const TOPOLOGY: &str = "1n1l2c1t";
/// Bytes of `linux_banner` read; the banner is shorter and NUL-terminated.
const BANNER_BYTES: usize = 512;
/// The hold between the second and third `jiffies_64` reads.
const HOLD: Duration = Duration::from_millis(500);

fn jiffies(tag: &'static str) -> Op {
    Op::read_kernel_cold(
        tag,
        KernelTarget::symbol("jiffies_64"),
        KernelValueWidth::u64(),
    )
}

/// Reads the banner and `jiffies_64` twice in one step (one freeze), holds
/// 500 ms, reads `jiffies_64` again.
fn reads_plan() -> Plan {
    let steps = vec![
        Step::new(
            vec![
                Op::read_kernel_cold(
                    "banner",
                    KernelTarget::symbol("linux_banner"),
                    KernelValueWidth::bytes(BANNER_BYTES),
                ),
                jiffies("j0"),
                jiffies("j1"),
            ],
            HoldSpec::fixed(HOLD),
        ),
        Step::new(
            vec![
                jiffies("j2"),
                // A hot read, against the running guest, after the cold one.
                Op::read_kernel_hot(
                    "j3",
                    KernelTarget::symbol("jiffies_64"),
                    KernelValueWidth::u64(),
                ),
            ],
            HoldSpec::fixed(Duration::ZERO),
        ),
    ];
    Plan::new("kmem_reads", steps, Duration::from_secs(1)).set_assert(Assert::NONE)
}

/// Three spinning workers pinned to CPU 1, then CPU 1's `rq.nr_running`.
fn runqueue_plan() -> Plan {
    let pinned = Work::default()
        .workers(3)
        .work_type(WorkType::CpuSpin)
        .affinity(AffinityIntent::Exact(BTreeSet::from([1])));
    let steps = vec![
        Step::new(
            vec![
                Op::add_cgroup("pinned"),
                Op::spawn("pinned", pinned),
                Op::capture_snapshot("spawned"),
            ],
            HoldSpec::fixed(Duration::from_secs(1)),
        ),
        // The read and the capture fold into one freeze: they see the
        // same runqueue.
        Step::new(
            vec![
                Op::read_kernel_cold(
                    "nr_running",
                    KernelTarget::per_cpu("runqueues", 1, "nr_running"),
                    KernelValueWidth::u32(),
                ),
                Op::capture_snapshot("loaded"),
            ],
            HoldSpec::fixed(Duration::from_millis(200)),
        ),
    ];
    // The monitor's imbalance check is on with a limit three pinned
    // spinners break (3 tasks on CPU 1, none on CPU 0): this plan fails.
    Plan::new("kmem_runqueue", steps, Duration::from_secs(2))
        .set_backdrop(Backdrop::new().push_op(Op::capture_snapshot("baseline")))
        .set_monitor(MonitorSpec {
            capture_every: Some(Duration::from_millis(300)),
            ..MonitorSpec::default()
        })
        .set_assert(Assert::NONE.check_not_starved().max_imbalance_ratio(2.0))
}

fn kernel_log(out: &RunOutcome) -> &KernelAccessLog {
    assert!(
        out.passed,
        "{} failed: {}\nconsole:\n{}",
        out.scenario,
        out.failure_text(),
        out.console_tail.clone().unwrap_or_default()
    );
    accesses(out)
}

/// The kernel log of `out`, passed or not, without failed accesses.
fn accesses(out: &RunOutcome) -> &KernelAccessLog {
    let log = out
        .kernel
        .as_ref()
        .unwrap_or_else(|| panic!("{}: no kernel accesses logged", out.scenario));
    assert!(log.errors.is_empty(), "{}: {:?}", out.scenario, log.errors);
    log
}

fn u64_read(log: &KernelAccessLog, tag: &str) -> u64 {
    match log.read(tag) {
        Some(KernelValue::U64(v)) => *v,
        other => panic!("{tag}: expected a u64, got {other:?}"),
    }
}

/// When the agent reported the read tagged `tag`, in ms since the plan
/// started (guest clock, which stands still while the guest is frozen).
fn read_at_ms(out: &RunOutcome, tag: &str) -> u64 {
    let prefix = format!("read {tag}:");
    out.events
        .iter()
        .find(|e| e.detail.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no event for read {tag}"))
        .elapsed_ms
}

fn check_reads(out: &RunOutcome) {
    let log = kernel_log(out);
    assert!(log.hz > 0, "CONFIG_HZ from the guest");
    // The banner the kernel prints is /proc/version's text.
    let Some(KernelValue::Bytes(banner)) = log.read("banner") else {
        panic!("banner: {:?}", log.read("banner"))
    };
    let end = banner
        .iter()
        .position(|&b| b == 0)
        .expect("a NUL in 512 bytes");
    let banner = String::from_utf8_lossy(&banner[..end]);
    assert_eq!(
        banner.trim_end(),
        log.proc_version.trim_end(),
        "linux_banner read cold vs the guest's /proc/version"
    );
    // Two reads in one freeze see the same tick.
    let (j0, j1, j2) = (
        u64_read(log, "j0"),
        u64_read(log, "j1"),
        u64_read(log, "j2"),
    );
    assert_eq!(j0, j1, "jiffies_64 moved inside one freeze");
    // Across the hold: HZ/2 ticks at least, and as many as the guest's own
    // clock says passed between the reads (emulated guests run late, so
    // the hold's wall time may stretch; the guest clock stretches with it).
    let hz = u64::from(log.hz);
    let ticks = j2 - j1;
    let guest_ms = read_at_ms(out, "j2") - read_at_ms(out, "j1");
    let want = hz * guest_ms / 1000;
    let slack = (hz / 20).max(3);
    eprintln!(
        "jiffies: {ticks} ticks across the {} ms hold; the guest clock says {guest_ms} ms, \
         {want} ticks at HZ={hz}",
        HOLD.as_millis()
    );
    assert!(
        ticks + 2 >= hz * HOLD.as_millis() as u64 / 1000,
        "{ticks} ticks in a {} ms hold at HZ={hz}",
        HOLD.as_millis()
    );
    assert!(
        ticks.abs_diff(want) <= slack,
        "{ticks} ticks, but {guest_ms} ms passed on the guest clock ({want} ticks at HZ={hz})"
    );
    let j3 = u64_read(log, "j3");
    assert!(
        (j2..j2 + hz).contains(&j3),
        "the hot read {j3} is not just after the cold one {j2}"
    );
    assert_eq!(log.freezes, 2, "one freeze per step: {log:?}");
    assert_eq!(log.requests, 3, "two cold requests and a hot one");
    assert_ne!(log.text_va, 0);
    assert!(log.paging_levels == 4 || log.paging_levels == 5, "{log:?}");
}

/// An imbalance message naming CPU 1 with the three spinners (or more:
/// the agent may be running there too when the breach is confirmed).
fn pinned_on_cpu1(message: &str) -> bool {
    message
        .split("CPU 1 has ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n >= 3)
}

fn check_runqueue(out: &RunOutcome) {
    let log = accesses(out);
    let Some(KernelValue::U32(n)) = log.read("nr_running") else {
        panic!("nr_running: {:?}", log.read("nr_running"))
    };
    eprintln!("CPU 1 runqueue: nr_running {n} with 3 spinners pinned there");
    assert!(*n >= 3, "CPU 1 nr_running {n} with 3 spinners pinned there");
    // The monitor saw the same pile-up and failed the imbalance check,
    // naming the CPU; nothing else failed.
    assert!(
        !out.passed,
        "the imbalance check let 3 pinned spinners pass"
    );
    let details = &out.verdict.as_ref().expect("a verdict").result.details;
    assert!(
        details
            .iter()
            .all(|d| d.kind == DetailKind::Imbalance && pinned_on_cpu1(&d.message)),
        "{details:?}"
    );
    assert!(!details.is_empty());
    let m = out.monitor.as_ref().expect("a monitor log");
    assert!(
        m.checks
            .iter()
            .any(|(c, s)| *c == CheckName::MaxImbalanceRatio
                && matches!(s, CheckState::Ran { .. })),
        "{:?}",
        m.checks
    );
    // Samples are stamped with the step running, in order, and see the
    // spinners on CPU 1 once they run.
    let steps: Vec<u16> = m.samples.iter().map(|s| s.step).collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    assert!(steps.contains(&1) && steps.contains(&2), "{steps:?}");
    let times: Vec<u64> = m.samples.iter().map(|s| s.at_ms).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        m.samples
            .iter()
            .any(|s| s.cpus.get(1).is_some_and(|c| c.nr_running >= 3)),
        "no sample saw 3 tasks on CPU 1"
    );
    eprintln!("monitor: {} samples, peaks {:?}", m.samples.len(), m.peaks);
    // Captures: baseline, step 1, step 2, in order, each with every CPU
    // and every vCPU's registers; the one in the read's freeze agrees
    // with it.
    let caps: Vec<(&str, u16)> = out
        .captures
        .iter()
        .filter(|c| c.trigger == Trigger::Op)
        .map(|c| (c.name.as_str(), c.step))
        .collect();
    assert_eq!(
        caps,
        [("baseline", 0), ("spawned", 1), ("loaded", 2)],
        "{:?}",
        out.captures
    );
    assert!(out.captures.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    // Periodic captures inside the workload's window, and the state right
    // after the failed verdict.
    assert!(
        out.captures.iter().any(|c| c.trigger == Trigger::Periodic),
        "{:?}",
        out.captures
    );
    assert_eq!(
        out.captures.last().map(|c| c.trigger),
        Some(Trigger::Failure),
        "{:?}",
        out.captures
    );
    for c in &out.captures {
        let sample = c
            .sample
            .as_ref()
            .unwrap_or_else(|| panic!("{}: {:?}", c.name, c.error));
        assert_eq!(sample.cpus.len(), 2, "{}", c.name);
        assert_eq!(c.registers.len(), 2, "{}: {:?}", c.name, c.registers);
    }
    let loaded = out
        .captures
        .iter()
        .find(|c| c.name == "loaded")
        .expect("the capture in the read's freeze");
    assert_eq!(loaded.sample.as_ref().unwrap().cpus[1].nr_running, *n);
}

/// The watchpoint on `vm_swappiness` fired once per write through
/// /proc/sys (three and the restore), each a capture of the moment.
fn check_watch(out: &RunOutcome) {
    assert!(out.passed, "{}", out.failure_text());
    let hits: Vec<_> = out
        .captures
        .iter()
        .filter(|c| c.trigger == Trigger::Watch)
        .collect();
    assert_eq!(hits.len(), 4, "{:?}", out.captures);
    for c in &hits {
        assert_eq!(c.name, "watch:vm_swappiness");
        let sample = c.sample.as_ref().unwrap_or_else(|| panic!("{:?}", c.error));
        assert_eq!(sample.cpus.len(), 2);
        assert_eq!(c.registers.len(), 2, "{:?}", c.registers);
    }
    assert!(hits.windows(2).all(|w| w[0].at_ms < w[1].at_ms), "{hits:?}");
}

fn check_sysctl(out: &RunOutcome) {
    let log = kernel_log(out);
    assert_eq!(log.requests, 1, "both writes in one request: {log:?}");
    assert_eq!(log.freezes, 1, "two adjacent cold writes take one freeze");
    for var in ["vm_swappiness", "dirty_background_ratio"] {
        assert!(
            out.events
                .iter()
                .any(|e| e.detail.contains("/proc/sys/") && e.detail.contains(var)),
            "{var} was read back"
        );
    }
}

#[test]
fn host_reads_and_writes_guest_kernel_memory_with_kaslr() {
    let Some(p) = prepared() else { return };
    // The runqueue plan fails on purpose (the monitor's imbalance check),
    // so it runs last in the shared guest.
    let plans = vec![
        reads_plan(),
        Plan::custom(
            "kmem_sysctl",
            "kmem_sysctl_roundtrip",
            Duration::from_secs(1),
        )
        .set_assert(Assert::NONE),
        Plan::custom("kmem_watch", "kmem_watch_sysctl", Duration::from_secs(1))
            .set_assert(Assert::NONE),
        runqueue_plan(),
    ];
    let kaslr = |s: &mut ktstr_host::vm::VmSpec| s.kaslr = true;
    let outs = run_all_with(p, TOPOLOGY, plans, kaslr);
    assert_eq!(outs.len(), 4);
    check_reads(&outs[0]);
    check_sysctl(&outs[1]);
    check_watch(&outs[2]);
    check_runqueue(&outs[3]);
    let first = kernel_log(&outs[0]).text_va;

    // KASLR: another boot puts the kernel elsewhere. One in a few hundred
    // boots draws the same slot, so a match gets one more boot.
    let mut seen = vec![first];
    for _ in 0..2 {
        let again = run_all_with(p, TOPOLOGY, vec![reads_plan()], kaslr);
        let log = kernel_log(&again[0]);
        eprintln!(
            "boot {}: _text at {:#x} (KASLR offset {:#x}), physical {:#x}",
            seen.len() + 1,
            log.text_va,
            log.kaslr_offset,
            log.text_pa
        );
        check_reads(&again[0]);
        if !seen.contains(&log.text_va) {
            seen.push(log.text_va);
            break;
        }
        seen.push(log.text_va);
    }
    let distinct: BTreeSet<_> = seen.iter().collect();
    assert!(
        distinct.len() > 1,
        "every boot put _text at {first:#x}: KASLR is off"
    );

    // Without KASLR (the default, entered through PVH under QEMU) the
    // kernel stays at its link address.
    let fixed = run_all(p, TOPOLOGY, vec![reads_plan()]);
    let log = kernel_log(&fixed[0]);
    check_reads(&fixed[0]);
    assert_eq!(
        (log.text_va, log.kaslr_offset),
        (LINK_TEXT_VA, 0),
        "nokaslr: {log:?}"
    );
}

/// Where `_text` is linked on x86-64.
const LINK_TEXT_VA: u64 = 0xffff_ffff_8100_0000;
