//! Shared by the end-to-end test binaries: the kernel and initramfs,
//! prepared once per binary (or the SKIP reason they cannot be had here),
//! and one way to run a plan in a VM that also checks nothing was left
//! behind (QEMU processes, /dev/shm files).

#![allow(dead_code)] // each test binary uses its own subset

pub mod catalog;

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use ktstr_host::outcome::RunOutcome;
use ktstr_host::prepare::{PrepareError, Prepared, prepare_with};
use ktstr_host::progress::Progress;
use ktstr_host::runner::{self, RunConfig};
use ktstr_host::scenarios;
use ktstr_host::vm::VmSpec;
use ktstr_host::vm::select::{self, BackendChoice};
use ktstr_protocol::model::{Assert, Plan};

/// VMs run one at a time: the machine has two cores.
pub static VM_LOCK: Mutex<()> = Mutex::new(());

/// Kernel and initramfs with the agent and `executables` (guest path, host
/// path); `Err` carries the reason to skip when QEMU or the kernel cannot
/// be had here. Any other failure is a real one and panics.
pub fn try_prepare(tag: &str, executables: &[(String, PathBuf)]) -> Result<Prepared, String> {
    let progress = Progress::new({
        let tag = tag.to_string();
        move |m| eprintln!("{tag}: {m}")
    });
    match prepare_with(None, None, executables, &progress) {
        Ok(p) => Ok(p),
        Err(PrepareError::Kernel(e)) if e.is_unavailable() => {
            Err(format!("no kernel can be fetched here: {e}"))
        }
        Err(PrepareError::Setup(e)) => Err(format!("QEMU is not available: {e}")),
        Err(e) => panic!(
            "preparing the e2e run failed: {}",
            ktstr_host::errors::chain(&e)
        ),
    }
}

/// The value, or `None` after printing `SKIP: <reason>`.
pub fn or_skip<T>(r: &Result<T, String>) -> Option<&T> {
    match r {
        Ok(v) => Some(v),
        Err(why) => {
            println!("SKIP: {why}");
            None
        }
    }
}

/// The default kernel plus an initramfs with the agent, prepared once per
/// test binary; `None` (after a SKIP line) when they cannot be had here.
pub fn prepared() -> Option<&'static Prepared> {
    static PREPARED: OnceLock<Result<Prepared, String>> = OnceLock::new();
    or_skip(PREPARED.get_or_init(|| try_prepare("e2e", &[])))
}

/// [`prepared`] with every catalog payload this host has packed too.
pub fn prepared_with_payloads() -> Option<&'static Prepared> {
    static PREPARED: OnceLock<Result<Prepared, String>> = OnceLock::new();
    or_skip(PREPARED.get_or_init(|| try_prepare("e2e", &catalog::payload_executables())))
}

/// The `steady` plan with only the starvation check, which holds even on a
/// busy emulated guest.
pub fn steady(cgroups: usize, workers: usize, secs: u64) -> Plan {
    scenarios::steady_plan(cgroups, workers, Duration::from_secs(secs))
        .set_assert(Assert::NONE.check_not_starved())
}

/// qemu-system processes whose parent is this test process.
pub fn qemu_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // comm may contain spaces; the fields after the closing paren are fixed.
        let Some((comm, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).unwrap_or("");
        if ppid == me && comm.contains("qemu-system") {
            out.push(pid);
        }
    }
    out
}

/// This process's guest RAM files in /dev/shm.
pub fn shm_files() -> Vec<String> {
    let prefix = format!("ktstr-{}-", std::process::id());
    std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Runs `plan` on `topo` with `choice`, one VM at a time, prints the table,
/// and checks that no QEMU process or /dev/shm file outlived the run.
pub fn run_on(
    choice: BackendChoice,
    p: &Prepared,
    topo: &str,
    plan: Plan,
    run_timeout: Option<Duration>,
) -> RunOutcome {
    let _guard = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (backend, why) = select::select(choice).expect("a backend");
    let tag = format!("{} on {topo}", plan.name);
    eprintln!("{tag}: backend {why}");
    let spec = VmSpec::new(
        p.kernel.image.clone(),
        p.initramfs.clone(),
        topo.parse().expect("a valid topology"),
    );
    let cfg = RunConfig {
        run_timeout,
        progress: Progress::new(move |m| eprintln!("{tag}: {m}")),
        ..RunConfig::new(spec, plan)
    };
    let out = runner::run(backend.as_ref(), cfg).expect("launching the VM");
    eprintln!("{}", ktstr_host::report::table(&out));
    assert!(
        qemu_children().is_empty(),
        "QEMU left running: {:?}",
        qemu_children()
    );
    assert!(
        shm_files().is_empty(),
        "files left in /dev/shm: {:?}",
        shm_files()
    );
    out
}

/// Runs `plans` on guests of `topo` one after another (a guest is shared
/// while its plans pass), one VM at a time, and checks that nothing
/// outlived them.
pub fn run_all(p: &Prepared, topo: &str, plans: Vec<Plan>) -> Vec<RunOutcome> {
    run_all_with(p, topo, plans, |_| {})
}

/// [`run_all`] on a spec `tweak` changed first.
pub fn run_all_with(
    p: &Prepared,
    topo: &str,
    plans: Vec<Plan>,
    tweak: impl FnOnce(&mut VmSpec),
) -> Vec<RunOutcome> {
    let _guard = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (backend, why) = select::select(BackendChoice::Auto).expect("a backend");
    eprintln!("{} plans on {topo}: backend {why}", plans.len());
    let mut spec = VmSpec::new(
        p.kernel.image.clone(),
        p.initramfs.clone(),
        topo.parse().expect("a valid topology"),
    );
    tweak(&mut spec);
    let tag = topo.to_string();
    let cfg = RunConfig {
        progress: Progress::new(move |m| eprintln!("{tag}: {m}")),
        ..RunConfig::many(spec, plans)
    };
    let outs = runner::run_all(backend.as_ref(), cfg).expect("launching the VMs");
    for out in &outs {
        eprintln!("{}", ktstr_host::report::table(out));
    }
    assert!(qemu_children().is_empty(), "QEMU left running");
    assert!(
        shm_files().is_empty(),
        "files left in /dev/shm: {:?}",
        shm_files()
    );
    outs
}

/// [`run_on`] with the automatic backend choice.
pub fn run(p: &Prepared, topo: &str, plan: Plan, run_timeout: Option<Duration>) -> RunOutcome {
    run_on(BackendChoice::Auto, p, topo, plan, run_timeout)
}
