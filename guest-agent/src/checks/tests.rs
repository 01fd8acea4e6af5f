//! The checks on hand-made reports: each rule, each way a check can end
//! (ran, off, unset, not measured), and the failures that need no check.

use ktstr_protocol::model::{
    Check, CheckState, CpuEpoch, CpuSeen, CpusetInterval, GapInfo, WorkerExit,
};

use super::*;

fn report(tid: i32, cpu_ns: u64, cpus: &[u32]) -> WorkerReport {
    WorkerReport {
        tid,
        work_units: cpu_ns / 1000,
        iterations: cpu_ns / 1000,
        cpu_time_ns: cpu_ns,
        wall_time_ns: 1_000_000_000,
        cpus_used: cpus.iter().copied().collect(),
        cpu_epochs: vec![CpuEpoch {
            epoch: 0,
            cpus: cpus
                .iter()
                .map(|&cpu| CpuSeen {
                    cpu,
                    first_ms: 0,
                    last_ms: 900,
                })
                .collect(),
        }],
        ..Default::default()
    }
}

fn kinds(r: &AssertResult) -> Vec<DetailKind> {
    r.details.iter().map(|d| d.kind).collect()
}

#[test]
fn starvation_spread_gap() {
    let a = Assert::default_checks();
    let ok = [report(1, 500_000_000, &[0]), report(2, 450_000_000, &[1])];
    let r = assert_cgroup(&a, "cg", Some(&[0, 1].into()), &ok, None);
    assert!(r.passed, "{r:?}");
    assert_eq!(r.stats[0].workers, 2);

    let starved = [report(1, 500_000_000, &[0]), report(2, 0, &[1])];
    let r = assert_cgroup(
        &Assert::NONE.check_not_starved(),
        "cg",
        None,
        &starved,
        None,
    );
    assert_eq!(kinds(&r), vec![DetailKind::Starved]);

    let r = assert_cgroup(
        &a,
        "cg",
        None,
        &[report(1, 900_000_000, &[0]), report(2, 100_000_000, &[1])],
        None,
    );
    assert!(kinds(&r).contains(&DetailKind::Unfair), "{r:?}");

    let mut gappy = report(1, 500_000_000, &[0]);
    gappy.max_gap = Some(GapInfo {
        gap_ms: 2500,
        cpu: 0,
        at_ms: 10,
    });
    let r = assert_cgroup(&a, "cg", None, std::slice::from_ref(&gappy), None);
    assert!(kinds(&r).contains(&DetailKind::Gap), "{r:?}");

    // SCHED_IDLE workers may starve and wait: the policy at work.
    let mut idle = report(3, 0, &[1]);
    idle.sched_policy = ktstr_protocol::model::SchedPolicy::Idle;
    idle.max_gap = gappy.max_gap;
    let r = assert_cgroup(&a, "idle", None, &[idle], None);
    assert!(
        !kinds(&r).contains(&DetailKind::Starved) && !kinds(&r).contains(&DetailKind::Gap),
        "{r:?}"
    );
    assert!(
        assert_cgroup(&Assert::NONE, "cg", None, &starved, None).passed,
        "no checks, no failure"
    );
}

/// A worker that stays on CPU 3 after its cpuset shrank to {0, 1} fails
/// isolation for the second interval, with the CPU, the cpuset and the
/// time; the first interval (cpuset 0-3) is clean.
#[test]
fn isolation_is_judged_per_cpuset_interval() {
    let mut w = report(1, 500_000_000, &[0, 3]);
    w.cpusets = vec![
        CpusetInterval {
            epoch: 0,
            from_ms: 0,
            cpus: Some([0, 1, 2, 3].into()),
        },
        CpusetInterval {
            epoch: 1,
            from_ms: 1500,
            cpus: Some([0, 1].into()),
        },
    ];
    w.cpu_epochs.push(CpuEpoch {
        epoch: 1,
        cpus: vec![
            CpuSeen {
                cpu: 0,
                first_ms: 0,
                last_ms: 900,
            },
            CpuSeen {
                cpu: 3,
                first_ms: 5,
                last_ms: 700,
            },
        ],
    });
    let a = Assert::NONE.check_isolation();
    let r = assert_cgroup(&a, "cg", None, std::slice::from_ref(&w), None);
    assert_eq!(kinds(&r), vec![DetailKind::Isolation], "{r:?}");
    let msg = &r.details[0].message;
    assert!(
        msg.contains("CPU 3") && msg.contains("cpuset 0-1") && msg.contains("since 1500 ms"),
        "{msg}"
    );
    assert!(
        matches!(r.check_state(CheckName::Isolation), Some(CheckState::Ran { threshold }) if threshold.contains("grace")),
        "{:?}",
        r.checks
    );

    // Seen there only within the grace after the change: no breach.
    w.cpu_epochs[1].cpus[1].last_ms = ISOLATION_GRACE_MS - 1;
    assert!(assert_cgroup(&a, "cg", None, &[w.clone()], None).passed);

    // An interval with no cpuset in force confines nothing.
    w.cpusets[1].cpus = None;
    w.cpu_epochs[1].cpus[1].last_ms = 5000;
    assert!(assert_cgroup(&a, "cg", None, &[w], None).passed);

    // Without a history the given cpuset applies to every interval.
    let r = assert_cgroup(
        &a,
        "cg",
        Some(&[0].into()),
        &[report(1, 500_000_000, &[0, 3])],
        None,
    );
    assert!(
        r.details[0].message.contains("CPU 3 outside its cpuset 0"),
        "{r:?}"
    );
}

#[test]
fn a_threshold_switched_off_shows_as_off_and_does_not_run() {
    let layered = Assert::default_checks()
        .merge(&Assert::NONE.max_gap_ms(5000).max_spread_pct(30.0))
        .merge(&Assert::NONE.switch_off(CheckName::MaxSpreadPct));
    assert_eq!(layered.max_gap_ms, Check::On(5000), "scheduler layer kept");
    assert_eq!(
        layered.max_spread_pct,
        Check::Off,
        "the test layer switched it off"
    );
    let unfair = [report(1, 900_000_000, &[0]), report(2, 100_000_000, &[1])];
    let r = assert_cgroup(&layered, "cg", None, &unfair, None);
    assert!(r.passed, "{r:?}");
    assert_eq!(
        r.check_state(CheckName::MaxSpreadPct),
        Some(&CheckState::Off)
    );
    assert_eq!(
        r.check_state(CheckName::MaxGapMs),
        Some(&CheckState::Ran {
            threshold: "5000 ms".into()
        })
    );
    assert_eq!(
        r.check_state(CheckName::MaxWakeCv),
        Some(&CheckState::Unset)
    );
    assert_eq!(
        r.checks.len(),
        CheckName::ALL.len(),
        "every check is listed: {:?}",
        r.checks
    );
}

#[test]
fn a_wake_check_with_no_samples_fails_as_not_measured() {
    let spinners = [report(1, 500_000_000, &[0]), report(2, 500_000_000, &[1])];
    let r = assert_cgroup(
        &Assert::NONE.max_wake_p99_us(500),
        "cg",
        None,
        &spinners,
        None,
    );
    assert!(!r.passed);
    assert_eq!(kinds(&r), vec![DetailKind::NotMeasured]);
    assert!(
        r.details[0].message.contains("no wake-up was sampled"),
        "{r:?}"
    );
    assert!(matches!(
        r.check_state(CheckName::MaxWakeP99Us),
        Some(CheckState::NotMeasured { .. })
    ));
    // Not asked for: nothing to say.
    assert!(assert_cgroup(&Assert::NONE, "cg", None, &spinners, None).passed);
}

#[test]
fn a_worker_without_a_report_fails_whatever_the_checks() {
    let mut killed = report(2, 0, &[]);
    killed.exit = WorkerExit::Signaled(9);
    let mut garbled = report(3, 0, &[]);
    garbled.exit = WorkerExit::NoReport("decoding failed".into());
    let r = assert_cgroup(
        &Assert::NONE,
        "cg",
        None,
        &[report(1, 500_000_000, &[0]), killed, garbled],
        None,
    );
    assert!(!r.passed);
    assert_eq!(kinds(&r), vec![DetailKind::NoReport, DetailKind::NoReport]);
    assert!(r.details[0].message.contains("worker 2") && r.details[0].message.contains("signal 9"));
    // The lost workers' missing numbers do not count as starvation.
    let r = assert_cgroup(
        &Assert::NONE.check_not_starved(),
        "cg",
        None,
        &r_reports(),
        None,
    );
    assert_eq!(kinds(&r), vec![DetailKind::NoReport]);
}

fn r_reports() -> Vec<WorkerReport> {
    let mut killed = report(2, 0, &[]);
    killed.exit = WorkerExit::Signaled(9);
    vec![report(1, 500_000_000, &[0]), killed]
}

#[test]
fn numa_locality_counts_pages_on_the_home_nodes() {
    let topo = TestTopology::from_vm_topology(&"2n2l1c1t".parse().unwrap());
    let mut w = report(1, 500_000_000, &[1]);
    w.cpusets = vec![CpusetInterval {
        epoch: 0,
        from_ms: 0,
        cpus: Some([1].into()),
    }];
    w.numa_pages = vec![(1, 256)];
    let a = Assert::NONE.min_numa_locality(0.9);
    assert!(assert_cgroup(&a, "cg", None, &[w.clone()], Some(&topo)).passed);
    w.numa_pages = vec![(0, 200), (1, 56)];
    let r = assert_cgroup(&a, "cg", None, &[w.clone()], Some(&topo));
    assert_eq!(kinds(&r), vec![DetailKind::NumaLocality], "{r:?}");
    w.numa_pages.clear();
    let r = assert_cgroup(&a, "cg", None, &[w], Some(&topo));
    assert_eq!(kinds(&r), vec![DetailKind::NotMeasured], "{r:?}");
}

#[test]
fn wake_latency_migrations_and_throughput() {
    let mut w = report(1, 500_000_000, &[0]);
    w.wake_latency_us = (1..=100).collect();
    w.iterations = 100;
    w.migrations = 50;
    let a = Assert::NONE.max_wake_p99_us(98).max_migration_ratio(0.2);
    let r = assert_cgroup(&a, "cg", None, std::slice::from_ref(&w), None);
    assert!(
        r.details
            .iter()
            .any(|d| d.kind == DetailKind::WakeLatency && d.message.contains("p99 99")),
        "{r:?}"
    );
    assert!(kinds(&r).contains(&DetailKind::Migration), "{r:?}");
    let one = std::slice::from_ref(&w);
    assert!(assert_cgroup(&Assert::NONE.max_wake_p99_us(99), "cg", None, one, None).passed);
    assert!(!assert_cgroup(&Assert::NONE.max_wake_cv(0.1), "cg", None, one, None).passed);

    let fast = CgroupReports {
        cgroup: "a".into(),
        reports: vec![report(1, 900_000_000, &[0])],
        ancestry_weights: vec![100],
    };
    let slow = CgroupReports {
        cgroup: "b".into(),
        reports: vec![report(2, 300_000_000, &[1])],
        ancestry_weights: vec![100],
    };
    let parity = Assert::NONE.max_throughput_spread_pct(20.0);
    let r = check_cgroups(&parity, &[fast.clone(), slow], None);
    assert!(
        r.details
            .iter()
            .any(|d| d.kind == DetailKind::Throughput && d.message.starts_with("b:")),
        "{r:?}"
    );
    assert!(check_cgroups(&parity, &[fast.clone(), fast.clone()], None).passed);
    let alone = check_cgroups(&parity, &[fast], None);
    assert_eq!(kinds(&alone), vec![DetailKind::NotMeasured], "{alone:?}");
    assert!(
        Assert::NONE
            .check_not_starved()
            .assert_cgroup(&[report(1, 0, &[0])], None)
            .details[0]
            .kind
            == DetailKind::Starved
    );
}

#[test]
fn a_worker_that_never_started_is_starved_not_an_error() {
    let mut never = report(2, 0, &[]);
    never.exit = WorkerExit::NotStarted;
    let r = assert_cgroup(
        &Assert::NONE.check_not_starved(),
        "frozen",
        None,
        &[never],
        None,
    );
    assert_eq!(kinds(&r), vec![DetailKind::Starved], "{r:?}");
}

/// Under single-threaded emulation a worker that lived less than a round
/// of the other vCPUs' slices, or that was charged a slice or more of CPU
/// without doing any work, cannot be judged starved (its vCPU did not run
/// while its clocks did); one hardly run is, and on hardware every worker
/// is.
#[test]
fn starvation_allows_for_the_emulators_round() {
    let check = Assert::NONE.check_not_starved();
    let mut brief = report(2, 0, &[1]);
    brief.cpu_time_ns = 67_000_000;
    brief.wall_time_ns = 68_000_000;
    let mut long = brief.clone();
    long.wall_time_ns = 2_000_000_000;
    let hw = TestTopology::synthetic(4, 2);
    let tcg = hw.clone().emulated();
    assert_eq!(tcg.emulator_round_ms(), Some(400), "4 vCPUs x 100 ms");
    let judged = |w: &WorkerReport, t: &TestTopology| {
        kinds(&assert_cgroup(
            &check,
            "churn",
            None,
            std::slice::from_ref(w),
            Some(t),
        ))
    };
    assert_eq!(judged(&brief, &hw), vec![DetailKind::Starved]);
    assert!(judged(&brief, &tcg).is_empty());
    // Long-lived, charged a slice or more, no work: the emulator's (seen:
    // 283 ms charged in 3.1 s at 8 workers a CPU).
    long.cpu_time_ns = 283_000_000;
    assert!(judged(&long, &tcg).is_empty());
    assert_eq!(judged(&long, &hw), vec![DetailKind::Starved]);
    // Never started (a frozen cgroup's workers, stopped before their start
    // byte): starved, however short its metered life.
    let mut never = brief.clone();
    never.exit = WorkerExit::NotStarted;
    assert_eq!(judged(&never, &tcg), vec![DetailKind::Starved]);
    // Long-lived and hardly run: starved, emulated or not.
    for cpu in [0, 40_000_000] {
        long.cpu_time_ns = cpu;
        assert_eq!(judged(&long, &tcg), vec![DetailKind::Starved], "{cpu} ns");
    }
}
