//! A hostile guest under QEMU: the real agent, told by `ktstr.hostile=MODE`
//! to lie, flood or scribble, on a real kernel. Each mode must end with its
//! named failure within the run limit plus 5 s, leave nothing behind, and
//! keep the host's memory bounded (the flood's log is capped and the
//! process's resident set is measured around it). One guest per mode, one
//! at a time.

mod common;

use std::time::{Duration, Instant};

use common::{VM_LOCK, prepared, qemu_children, shm_files, steady};
use ktstr_host::outcome::RunOutcome;
use ktstr_host::progress::Progress;
use ktstr_host::runner::{self, RunConfig};
use ktstr_host::vm::VmSpec;
use ktstr_host::vm::select::{self, BackendChoice};
use ktstr_protocol::hostile::HostileMode;

/// The run limit each hostile run gets from its plan's start.
const RUN_LIMIT: Duration = Duration::from_secs(8);
/// What the issue allows beyond it.
const GRACE: Duration = Duration::from_secs(5);

/// The resident set of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs a 1-second steady plan on a 2-CPU guest whose agent acts out
/// `mode`; checks the failure kind, the time bound and that nothing was
/// left behind.
fn hostile(mode: HostileMode, want: &str) -> Option<RunOutcome> {
    let p = prepared()?;
    let _guard = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (backend, _) = select::select(BackendChoice::Auto).expect("a backend");
    let mut spec = VmSpec::new(
        p.kernel.image.clone(),
        p.initramfs.clone(),
        "1n1l2c1t".parse().unwrap(),
    );
    spec.cmdline_extra.push(mode.boot_arg());
    let tag = mode.name();
    let cfg = RunConfig {
        run_timeout: Some(RUN_LIMIT),
        progress: Progress::new(move |m| eprintln!("{tag}: {m}")),
        ..RunConfig::new(spec, steady(1, 1, 1))
    };
    let started = Instant::now();
    let out = runner::run(backend.as_ref(), cfg).expect("launching the VM");
    let took = started.elapsed();
    eprintln!("{}", ktstr_host::report::table(&out));
    let failure = out.failure.as_ref().expect("a hostile guest fails the run");
    assert_eq!(failure.kind(), want, "{mode}: {failure}");
    // From the Hello (the plan goes out then) to the VM's end.
    let hello = out.timings.hello_ms.expect("the guest said Hello");
    let after = Duration::from_millis(out.timings.exit_ms.saturating_sub(hello));
    assert!(
        after <= RUN_LIMIT + GRACE,
        "{mode}: ended {after:?} after Hello (limit {RUN_LIMIT:?} + {GRACE:?})"
    );
    eprintln!("{mode}: {want} {after:?} after Hello, {took:?} in all");
    assert!(qemu_children().is_empty(), "{mode}: QEMU left running");
    assert!(
        shm_files().is_empty(),
        "{mode}: /dev/shm: {:?}",
        shm_files()
    );
    Some(out)
}

#[test]
fn garbage_frames_end_the_run() {
    hostile(HostileMode::GarbageFrames, "bad_frames");
}

#[test]
fn a_frame_announcing_a_gigabyte_corrupts_the_ring() {
    hostile(HostileMode::OversizedFrame, "ring_corrupt");
}

#[test]
fn a_log_flood_ends_the_run_with_the_host_memory_bounded() {
    let before = rss_kib();
    let Some(out) = hostile(HostileMode::LogFlood, "guest_flood") else {
        return;
    };
    let grew = rss_kib().saturating_sub(before);
    let kept: usize = out.logs.iter().map(String::len).sum();
    eprintln!("log flood: {kept} bytes of log kept, resident set grew {grew} KiB");
    assert!(kept <= (1 << 20) + 4096, "{kept} bytes of log kept");
    assert!(
        out.logs
            .iter()
            .any(|l| l.contains("further lines are dropped")),
        "the drop is said"
    );
    assert!(grew < 64 * 1024, "resident set grew {grew} KiB");
}

#[test]
fn a_hello_that_lies_about_the_topology_is_refused() {
    let Some(out) = hostile(HostileMode::LyingHello, "topology_mismatch") else {
        return;
    };
    assert!(
        out.failure_text()
            .contains("online CPUs: guest sees 4, requested 2"),
        "{}",
        out.failure_text()
    );
}

#[test]
fn messages_out_of_order_break_the_protocol() {
    let Some(out) = hostile(HostileMode::OutOfOrder, "protocol_violation") else {
        return;
    };
    assert!(
        out.failure_text().contains("step 999 of a 1-step plan"),
        "{}",
        out.failure_text()
    );
}

#[test]
fn an_overwritten_header_ends_the_run() {
    hostile(HostileMode::HeaderOverwrite, "header_overwritten");
}

#[test]
fn a_guest_busy_without_done_times_out() {
    let Some(out) = hostile(HostileMode::BusyNoDone, "run_timeout") else {
        return;
    };
    assert!(
        out.logs.iter().any(|l| l.contains("still busy")),
        "the guest kept talking"
    );
}
