//! Runs inside a forked worker process: waits for the start signal, applies
//! its scheduling policy, does its work until told to stop, and measures
//! itself (CPU time, gaps, CPUs used, schedstat deltas).
//!
//! Runs after fork in a single-threaded agent, so ordinary allocation is
//! safe here; it must never return into the agent's code (it `_exit`s).

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ktstr_protocol::model::{GapInfo, SchedPolicy, WorkSpec, WorkType, WorkerExit, WorkerReport};

/// Set by SIGUSR1: finish the current iteration, report, exit.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Installs the SIGUSR1 handler (called in the child right after fork, while
/// SIGUSR1 is still blocked).
pub(super) fn install_stop_handler() {
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; the sigaction struct is fully initialised.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

fn cpu_time_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn current_cpu() -> u32 {
    // SAFETY: no arguments; returns -1 on error.
    let c = unsafe { libc::sched_getcpu() };
    c.max(0) as u32
}

/// `/proc/self/schedstat`: (time on CPU ns, time runnable waiting ns, runs).
fn schedstat() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/self/schedstat").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

fn apply_policy(spec: &WorkSpec) -> Result<(), String> {
    let (policy, prio) = match spec.sched_policy {
        SchedPolicy::Normal => (libc::SCHED_OTHER, 0),
        SchedPolicy::Batch => (libc::SCHED_BATCH, 0),
        SchedPolicy::Idle => (libc::SCHED_IDLE, 0),
        SchedPolicy::Fifo(p) => (libc::SCHED_FIFO, p as i32),
        SchedPolicy::RoundRobin(p) => (libc::SCHED_RR, p as i32),
    };
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: pid 0 = this process; param is initialised.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(format!(
            "sched_setscheduler({:?}): {}",
            spec.sched_policy,
            std::io::Error::last_os_error()
        ));
    }
    if spec.nice != 0 && matches!(spec.sched_policy, SchedPolicy::Normal | SchedPolicy::Batch) {
        // SAFETY: plain syscall on this process.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, spec.nice) } != 0 {
            return Err(format!(
                "setpriority({}): {}",
                spec.nice,
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Tracks progress per iteration: gaps, CPUs used, migrations.
struct Meter {
    start: Instant,
    last: Instant,
    last_cpu: u32,
    report: WorkerReport,
}

/// A pause longer than this between iterations counts as a scheduling gap.
const GAP_FLOOR: Duration = Duration::from_millis(1);

impl Meter {
    fn new(report: WorkerReport) -> Self {
        let now = Instant::now();
        let cpu = current_cpu();
        let mut report = report;
        report.cpus_used.insert(cpu);
        Self {
            start: now,
            last: now,
            last_cpu: cpu,
            report,
        }
    }

    fn tick(&mut self, units: u64) {
        let now = Instant::now();
        let gap = now - self.last;
        self.last = now;
        let cpu = current_cpu();
        if cpu != self.last_cpu {
            self.report.migrations += 1;
            self.report.cpus_used.insert(cpu);
            self.last_cpu = cpu;
        }
        if gap > GAP_FLOOR {
            let gap_ms = gap.as_millis() as u64;
            if self.report.max_gap.is_none_or(|g| gap_ms > g.gap_ms) {
                self.report.max_gap = Some(GapInfo {
                    gap_ms,
                    cpu,
                    at_ms: (now - self.start).as_millis() as u64,
                });
            }
        }
        self.report.iterations += 1;
        self.report.work_units += units;
    }
}

/// Iterations of the spin kernel per tick: tens of microseconds of work.
const SPIN_BATCH: u64 = 20_000;

fn spin(x: &mut u64) {
    for _ in 0..SPIN_BATCH {
        *x = black_box(
            x.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        );
    }
}

fn run_work(work_type: &WorkType, meter: &mut Meter) -> WorkerExit {
    let mut x = 1u64;
    match work_type {
        WorkType::CpuSpin | WorkType::SpinWait => {
            while !STOP.load(Ordering::Relaxed) {
                spin(&mut x);
                meter.tick(SPIN_BATCH);
            }
        }
        WorkType::YieldHeavy => {
            while !STOP.load(Ordering::Relaxed) {
                spin(&mut x);
                // SAFETY: plain syscall.
                unsafe { libc::sched_yield() };
                meter.tick(1);
            }
        }
        WorkType::Bursty { burst, sleep } => {
            while !STOP.load(Ordering::Relaxed) {
                let until = Instant::now() + *burst;
                while Instant::now() < until && !STOP.load(Ordering::Relaxed) {
                    spin(&mut x);
                    meter.tick(SPIN_BATCH);
                }
                std::thread::sleep(*sleep);
                // The sleep is deliberate, not a scheduling gap.
                meter.last = Instant::now();
            }
        }
        other => {
            return WorkerExit::Error(format!(
                "work type {} is not implemented in this agent yet",
                other.name()
            ));
        }
    }
    WorkerExit::Completed
}

/// The body of a worker process. Never returns.
pub(super) fn child_main(start_fd: i32, report_fd: i32, spec: &WorkSpec, cgroup: &str) -> ! {
    let mut go = [0u8; 1];
    // SAFETY: reading one byte into a local buffer from our own pipe fd.
    let n = unsafe { libc::read(start_fd, go.as_mut_ptr().cast(), 1) };
    if n != 1 {
        // The agent went away before starting us.
        // SAFETY: terminating this forked child.
        unsafe { libc::_exit(3) };
    }
    let (_, delay0, count0) = schedstat();
    let cpu0 = cpu_time_ns();
    let report = WorkerReport {
        // SAFETY: trivial syscall.
        tid: unsafe { libc::getpid() },
        cgroup: cgroup.to_string(),
        work_type: spec.work_type.name().to_string(),
        cpus_used: BTreeSet::new(),
        ..Default::default()
    };
    let mut meter = Meter::new(report);
    let exit = match apply_policy(spec) {
        Ok(()) => run_work(&spec.work_type, &mut meter),
        Err(e) => WorkerExit::Error(e),
    };
    let (_, delay1, count1) = schedstat();
    let mut report = meter.report;
    report.wall_time_ns = meter.start.elapsed().as_nanos() as u64;
    report.cpu_time_ns = cpu_time_ns().saturating_sub(cpu0);
    report.off_cpu_ns = report.wall_time_ns.saturating_sub(report.cpu_time_ns);
    report.run_delay_ns = delay1.saturating_sub(delay0);
    report.run_count = count1.saturating_sub(count0);
    report.exit = exit;
    let bytes = ktstr_protocol::codec::encode("worker report", &report).unwrap_or_default();
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: writing from a live buffer to our own pipe fd.
        let n = unsafe { libc::write(report_fd, bytes[off..].as_ptr().cast(), bytes.len() - off) };
        if n <= 0 {
            break;
        }
        off += n as usize;
    }
    // SAFETY: terminating this forked child without running the agent's
    // destructors or atexit handlers.
    unsafe { libc::_exit(0) }
}
