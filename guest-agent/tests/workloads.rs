//! Every work type, run for real on the build host (as root, outside any
//! VM) with a cgroup double: workers start, work, measure, stop on request
//! and leave no process behind.
//!
//! Tests run one at a time (a process-wide lock) so the "no child remains"
//! check sees only the current test's processes.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;
use ktstr_agent::cgroup::CgroupOps;
use ktstr_agent::workload::WorkloadHandle;
use ktstr_protocol::model::{SchedPolicy, WorkPhase, WorkSpec, WorkType, WorkerExit, WorkerReport};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A cgroup double that touches nothing.
struct NoCgroups;

impl CgroupOps for NoCgroups {
    fn parent(&self) -> &Path {
        Path::new("/nonexistent")
    }
    fn create(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn remove(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn set_cpuset(&self, _: &str, _: &BTreeSet<usize>) -> Result<()> {
        Ok(())
    }
    fn clear_cpuset(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn move_task(&self, _: &str, _: i32) -> Result<()> {
        Ok(())
    }
    fn set_frozen(&self, _: &str, _: bool) -> Result<()> {
        Ok(())
    }
    fn set_cpu_weight(&self, _: &str, _: u32) -> Result<()> {
        Ok(())
    }
    fn procs(&self, _: &str) -> Result<Vec<i32>> {
        Ok(Vec::new())
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const GRACE: Duration = Duration::from_secs(5);
const RUN: Duration = Duration::from_millis(300);

/// Processes whose parent is this test process or one of `workers`.
fn children_of_us_or(workers: &[i32]) -> Vec<(i32, i32)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parens.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<i32>().ok());
        if let Some(ppid) = ppid
            && (ppid == me || workers.contains(&ppid))
        {
            found.push((pid, ppid));
        }
    }
    found
}

fn assert_no_children(workers: &[i32]) {
    let left = children_of_us_or(workers);
    assert!(
        left.is_empty(),
        "processes left behind (pid, ppid): {left:?}"
    );
}

fn spec(wt: WorkType) -> WorkSpec {
    WorkSpec::default().work_type(wt)
}

/// Spawns `n` workers of `spec`, runs them for `run`, stops and collects.
fn run_spec(spec: &WorkSpec, n: usize, run: Duration) -> Vec<WorkerReport> {
    let mut h = WorkloadHandle::spawn(&NoCgroups, None, spec, n).expect("spawn");
    let pids = h.pids();
    assert_eq!(pids.len(), n);
    h.start().expect("start");
    std::thread::sleep(run);
    let t0 = Instant::now();
    let reports = h.stop_and_collect_within(GRACE);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
    assert_no_children(&pids);
    assert_eq!(reports.len(), n);
    reports
}

fn assert_worked(reports: &[WorkerReport]) {
    for r in reports {
        assert_eq!(r.exit, WorkerExit::Completed, "{r:?}");
        assert!(r.work_units > 0 && r.iterations > 0, "no work: {r:?}");
        assert!(r.cpu_time_ns > 0, "no CPU time: {r:?}");
        assert!(r.wall_time_ns >= 200_000_000, "short wall time: {r:?}");
        assert!(!r.cpus_used.is_empty(), "{r:?}");
        assert!(r.wake_latency_us.len() <= 512, "{r:?}");
    }
}

fn assert_each_woken(reports: &[WorkerReport]) {
    for r in reports {
        assert!(!r.wake_latency_us.is_empty(), "no wake samples: {r:?}");
    }
}

/// Members of a hand-off group did nearly the same number of hand-offs.
fn assert_balanced(reports: &[WorkerReport], group: usize) {
    for g in reports.chunks(group) {
        let min = g.iter().map(|r| r.work_units).min().unwrap_or(0);
        let max = g.iter().map(|r| r.work_units).max().unwrap_or(0);
        assert!(max - min <= 2 + max / 100, "unbalanced group: {g:?}");
    }
}

fn simple(wt: WorkType) -> Vec<WorkerReport> {
    let _s = serial();
    let r = run_spec(&spec(wt), 2, RUN);
    assert_worked(&r);
    r
}

#[test]
fn cpu_spin() {
    simple(WorkType::CpuSpin);
}

#[test]
fn spin_wait() {
    simple(WorkType::SpinWait);
}

#[test]
fn yield_heavy_samples_its_yields() {
    assert_each_woken(&simple(WorkType::YieldHeavy));
}

#[test]
fn mixed_samples_its_sleeps() {
    assert_each_woken(&simple(WorkType::Mixed));
}

#[test]
fn io_sync_write_leaves_no_file() {
    let r = simple(WorkType::IoSyncWrite);
    assert_each_woken(&r);
    for w in &r {
        let prefix = format!("ktstr-io-{}-", w.tid);
        let left = std::fs::read_dir("/tmp")
            .expect("read /tmp")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix));
        assert!(!left, "worker {} left its file in /tmp", w.tid);
    }
}

#[test]
fn bursty_samples_oversleep() {
    let r = simple(WorkType::Bursty {
        burst: Duration::from_millis(10),
        sleep: Duration::from_millis(10),
    });
    assert_each_woken(&r);
    for w in &r {
        // About half the time asleep.
        assert!(w.off_cpu_ns > w.wall_time_ns / 5, "{w:?}");
    }
}

#[test]
fn pipe_io_pairs_exchange() {
    let r = simple(WorkType::PipeIo);
    assert_each_woken(&r);
    assert_balanced(&r, 2);
}

#[test]
fn futex_ping_pong_pairs_exchange() {
    let r = simple(WorkType::FutexPingPong);
    assert_each_woken(&r);
    assert_balanced(&r, 2);
}

#[test]
fn cache_pressure() {
    simple(WorkType::CachePressure { size_kib: 1024 });
}

#[test]
fn cache_yield() {
    assert_each_woken(&simple(WorkType::CacheYield { size_kib: 256 }));
}

#[test]
fn cache_pipe_pairs_exchange() {
    let r = simple(WorkType::CachePipe { size_kib: 256 });
    assert_each_woken(&r);
    assert_balanced(&r, 2);
}

#[test]
fn futex_fan_out_wakes_every_waiter_each_round() {
    let _s = serial();
    let r = run_spec(&spec(WorkType::FutexFanOut { fan_out: 3 }), 4, RUN);
    assert_worked(&r);
    assert_each_woken(&r);
    assert_balanced(&r, 4);
}

#[test]
fn fan_out_compute_two_groups() {
    let _s = serial();
    let r = run_spec(&spec(WorkType::FanOutCompute { fan_out: 2 }), 6, RUN);
    assert_worked(&r);
    assert_each_woken(&r);
    assert_balanced(&r, 3);
}

#[test]
fn sequence_runs_phases_in_turn() {
    let _s = serial();
    let phase = |work_type, ms| WorkPhase {
        work_type,
        duration: Duration::from_millis(ms),
    };
    let seq = WorkType::Sequence(vec![
        phase(WorkType::CpuSpin, 30),
        phase(WorkType::PipeIo, 30),
        phase(WorkType::FutexPingPong, 30),
        phase(
            WorkType::Bursty {
                burst: Duration::from_millis(5),
                sleep: Duration::from_millis(5),
            },
            30,
        ),
        phase(WorkType::FutexFanOut { fan_out: 3 }, 30),
    ]);
    // Pairs (0,1) and (2,3) for the paired phases, one group of 4 for the
    // fan-out phase.
    let r = run_spec(&spec(seq), 4, Duration::from_millis(400));
    assert_worked(&r);
    assert_each_woken(&r);
}

#[test]
fn fork_exit_reaps_its_children() {
    // `simple` also checks that no grandchild is left.
    simple(WorkType::ForkExit);
}

#[test]
fn nice_sweep() {
    simple(WorkType::NiceSweep);
}

#[test]
fn affinity_churn_visits_cpus() {
    let r = simple(WorkType::AffinityChurn);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus > 1 {
        assert!(r.iter().any(|w| w.cpus_used.len() > 1), "{r:?}");
    }
}

#[test]
fn policy_churn() {
    simple(WorkType::PolicyChurn);
}

#[test]
fn page_fault_churn() {
    simple(WorkType::PageFaultChurn);
}

#[test]
fn mutex_contention() {
    let _s = serial();
    let r = run_spec(&spec(WorkType::MutexContention { contenders: 3 }), 3, RUN);
    assert_worked(&r);
    assert!(r.iter().any(|w| !w.wake_latency_us.is_empty()), "{r:?}");
}

#[test]
fn smt_sibling_spin() {
    simple(WorkType::SmtSiblingSpin);
}

#[test]
fn policies_and_nice_apply() {
    let _s = serial();
    let batch = spec(WorkType::CpuSpin)
        .sched_policy(SchedPolicy::Batch)
        .nice(5);
    assert_worked(&run_spec(&batch, 1, RUN));
    let rr = spec(WorkType::Bursty {
        burst: Duration::from_millis(1),
        sleep: Duration::from_millis(5),
    })
    .sched_policy(SchedPolicy::RoundRobin(1));
    assert_worked(&run_spec(&rr, 1, RUN));
}

#[test]
fn grouped_types_reject_a_bad_count() {
    let _s = serial();
    let cases = [
        (WorkType::PipeIo, 3, "groups of 2"),
        (WorkType::FutexFanOut { fan_out: 2 }, 4, "groups of 3"),
        (
            WorkType::MutexContention { contenders: 4 },
            6,
            "groups of 4",
        ),
        (
            WorkType::Sequence(vec![WorkPhase {
                work_type: WorkType::FutexPingPong,
                duration: Duration::from_millis(10),
            }]),
            1,
            "groups of 2",
        ),
        (WorkType::FutexFanOut { fan_out: 0 }, 1, "fan_out"),
    ];
    for (wt, n, want) in cases {
        let err = WorkloadHandle::spawn(&NoCgroups, None, &spec(wt.clone()), n)
            .err()
            .unwrap_or_else(|| panic!("{wt:?} with {n} workers was accepted"));
        assert!(format!("{err:#}").contains(want), "{wt:?}: {err:#}");
    }
    assert_no_children(&[]);
}

/// A partner killed mid-run leaves the other blocked in its pipe read or
/// futex wait; the survivor must still stop on request within the grace.
#[test]
fn survivor_of_a_killed_partner_stops_promptly() {
    let _s = serial();
    for wt in [
        WorkType::PipeIo,
        WorkType::FutexPingPong,
        WorkType::FutexFanOut { fan_out: 1 },
    ] {
        let mut h = WorkloadHandle::spawn(&NoCgroups, None, &spec(wt.clone()), 2).expect("spawn");
        let pids = h.pids();
        h.start().expect("start");
        std::thread::sleep(Duration::from_millis(100));
        // Our own worker; the handle reaps it.
        kill(Pid::from_raw(pids[1]), Signal::SIGKILL).expect("kill");
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        let r = h.stop_and_collect_within(GRACE);
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "{wt:?}: {:?}",
            t0.elapsed()
        );
        assert_eq!(r[0].exit, WorkerExit::Completed, "{wt:?}: {:?}", r[0]);
        assert!(r[0].work_units > 0, "{wt:?}: {:?}", r[0]);
        assert_eq!(r[1].exit, WorkerExit::Signaled(libc::SIGKILL), "{wt:?}");
        assert_no_children(&pids);
    }
}

#[test]
fn stop_before_start_reports_promptly() {
    let _s = serial();
    let h = WorkloadHandle::spawn(&NoCgroups, None, &spec(WorkType::PipeIo), 2).expect("spawn");
    let pids = h.pids();
    let t0 = Instant::now();
    let r = h.stop_and_collect_within(GRACE);
    assert!(t0.elapsed() < Duration::from_secs(1));
    for w in &r {
        assert_eq!(w.exit, WorkerExit::NotStarted, "{w:?}");
    }
    assert_no_children(&pids);
}

#[test]
fn pinned_workers_stay_on_their_cpu() {
    let _s = serial();
    let pin = Some(BTreeSet::from([0usize]));
    let mut h = WorkloadHandle::spawn_with_affinity(
        &NoCgroups,
        None,
        &spec(WorkType::CpuSpin),
        2,
        vec![pin.clone(), pin],
    )
    .expect("spawn");
    let pids = h.pids();
    h.start().expect("start");
    std::thread::sleep(Duration::from_millis(150));
    h.set_affinity(&[None, None]).expect("no change");
    assert!(h.set_affinity(&[None]).is_err(), "wrong length accepted");
    let r = h.stop_and_collect_within(GRACE);
    for w in &r {
        assert_eq!(w.cpus_used, BTreeSet::from([0u32]), "{w:?}");
        assert_eq!(w.migrations, 0, "{w:?}");
    }
    assert_no_children(&pids);
    let err = WorkloadHandle::spawn_with_affinity(
        &NoCgroups,
        None,
        &spec(WorkType::CpuSpin),
        2,
        vec![None],
    );
    assert!(err.is_err());
    assert_no_children(&[]);
}

#[test]
fn repinning_a_running_group_moves_it() {
    let _s = serial();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return;
    }
    let mut h = WorkloadHandle::spawn_with_affinity(
        &NoCgroups,
        None,
        &spec(WorkType::CpuSpin),
        1,
        vec![Some(BTreeSet::from([0usize]))],
    )
    .expect("spawn");
    let pids = h.pids();
    h.start().expect("start");
    std::thread::sleep(Duration::from_millis(100));
    h.set_affinity(&[Some(BTreeSet::from([1usize]))])
        .expect("repin");
    std::thread::sleep(Duration::from_millis(100));
    let r = h.stop_and_collect_within(GRACE);
    assert_eq!(r[0].cpus_used, BTreeSet::from([0u32, 1]), "{:?}", r[0]);
    assert_no_children(&pids);
}

#[test]
fn kill_all_and_drop_leave_nothing() {
    let _s = serial();
    let mut h =
        WorkloadHandle::spawn(&NoCgroups, None, &spec(WorkType::FutexPingPong), 2).expect("spawn");
    let pids = h.pids();
    h.start().expect("start");
    std::thread::sleep(Duration::from_millis(50));
    let r = h.kill_all();
    assert!(
        r.iter()
            .all(|w| w.exit == WorkerExit::Signaled(libc::SIGKILL)),
        "{r:?}"
    );
    assert_no_children(&pids);

    let h = WorkloadHandle::spawn(&NoCgroups, None, &spec(WorkType::ForkExit), 2).expect("spawn");
    let pids = h.pids();
    drop(h);
    assert_no_children(&pids);
}

/// A worker pinned to a CPU its cgroup's cpuset later leaves out (nothing
/// here enforces cpusets, so it stays there) fails isolation for the
/// interval after the shrink, naming the CPU, the cpuset and the time;
/// judged against everything it was ever allowed, it would have passed.
#[test]
fn a_worker_left_outside_its_shrunk_cpuset_fails_isolation() {
    use ktstr_agent::checks::assert_cgroup;
    use ktstr_protocol::model::{Assert, DetailKind};
    let _one = serial();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        println!("SKIP: needs two CPUs to leave one outside the cpuset");
        return;
    }
    let last = cpus - 1;
    let mut h = WorkloadHandle::spawn_with_affinity(
        &NoCgroups,
        Some("cg"),
        &WorkSpec::default(),
        1,
        vec![Some([last].into())],
    )
    .unwrap();
    h.note_cpuset(Some(&(0..cpus).collect()), 0);
    h.start().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    h.note_cpuset(Some(&[0].into()), 400);
    std::thread::sleep(Duration::from_millis(700));
    let reports = h.stop_and_collect();
    assert_eq!(reports[0].exit, WorkerExit::Completed, "{:?}", reports[0]);
    let epochs: Vec<u32> = reports[0].cpu_epochs.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs, vec![0, 1], "the worker saw the shrink");
    let r = assert_cgroup(&Assert::NONE.check_isolation(), "cg", None, &reports, None);
    assert!(!r.passed, "{r:?}");
    let d = &r.details[0];
    assert_eq!(d.kind, DetailKind::Isolation);
    assert!(
        d.message
            .contains(&format!("CPU {last} outside its cpuset 0 "))
            && d.message.contains("since 400 ms")
            && d.message.contains("interval 1"),
        "{}",
        d.message
    );
}

/// A worker that cannot act on the stop signal (stopped with SIGSTOP) is
/// killed at the deadline and leaves no report: a NoReport failure, even
/// with no check asked for.
#[test]
fn a_worker_killed_at_the_deadline_without_a_report_fails() {
    use ktstr_agent::checks::assert_cgroup;
    use ktstr_protocol::model::{Assert, DetailKind};
    let _one = serial();
    let mut h = WorkloadHandle::spawn(&NoCgroups, None, &WorkSpec::default(), 2).unwrap();
    h.start().unwrap();
    std::thread::sleep(RUN);
    let frozen = h.pids()[1];
    kill(Pid::from_raw(frozen), Signal::SIGSTOP).unwrap();
    let reports = h.stop_and_collect_within(Duration::from_millis(500));
    let lost = reports
        .iter()
        .find(|r| r.tid == frozen)
        .expect("a report slot");
    assert!(matches!(lost.exit, WorkerExit::Signaled(9)), "{lost:?}");
    let r = assert_cgroup(&Assert::NONE, "cg", None, &reports, None);
    assert!(!r.passed);
    assert_eq!(r.details.len(), 1, "{r:?}");
    assert_eq!(r.details[0].kind, DetailKind::NoReport);
    assert!(r.details[0].message.contains(&format!("worker {frozen}")));
}
