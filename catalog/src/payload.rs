//! The payload family: real programs run inside scenarios, their
//! machine-readable output parsed into the result and checked: stress-ng
//! (`--metrics --yaml`) and rt-tests' cyclictest (`--json`), both Debian
//! packages the setup step installs. The host packs a payload's binary
//! (with its libraries) only for the scenarios that run it; one the host
//! lacks skips its scenarios with the package to install.
//!
//! cyclictest runs its threads as normal (SCHED_OTHER) tasks, so the
//! latency it measures is the sched_ext scheduler's, not the RT class's.

use ktstr_protocol::model::{
    Backdrop, CgroupDef, HoldSpec, MetricLimit, MetricsFormat, Op, Payload, PayloadSpec, Step,
};

use super::canned::{HostPayload, ScenarioParams, UNEVEN};

/// stress-ng must have done some work.
static STRESS_NG_LIMITS: [MetricLimit; 1] = [MetricLimit::at_least("cpu.bogo_ops", 1.0)];

pub static STRESS_NG: HostPayload = HostPayload {
    payload: Payload::new("stress-ng", "/usr/bin/stress-ng")
        .set_metrics(MetricsFormat::StressNgYaml)
        .set_limits(&STRESS_NG_LIMITS),
    host_path: "/usr/bin/stress-ng",
    package: "stress-ng",
};

/// Worst wake-up latency of cyclictest's normal-priority threads on an
/// idle guest, sized for emulated CPUs (TCG on two host cores measured
/// 9.5 ms under EEVDF, 4.1 ms under the fixture).
pub const CYCLICTEST_IDLE_MAX_US: f64 = 50_000.0;

/// The same beside a spinner per CPU, where a woken thread may wait out
/// several time slices (measured 18 ms under EEVDF, 78 ms under the
/// fixture's 20 ms FIFO slices).
pub const CYCLICTEST_LOADED_MAX_US: f64 = 250_000.0;

static CYCLICTEST_LIMITS: [MetricLimit; 2] = [
    MetricLimit::at_least("cycles", 1.0),
    MetricLimit::at_most("max_latency_us", CYCLICTEST_IDLE_MAX_US),
];

pub static CYCLICTEST: HostPayload = HostPayload {
    payload: Payload::new("cyclictest", "/usr/bin/cyclictest")
        .set_default_args(&["--quiet", "--interval=1000"])
        .set_metrics(MetricsFormat::CyclictestJson)
        .set_limits(&CYCLICTEST_LIMITS),
    host_path: "/usr/bin/cyclictest",
    package: "rt-tests",
};

static USES_STRESS_NG: [&HostPayload; 1] = [&STRESS_NG];
static USES_CYCLICTEST: [&HostPayload; 1] = [&CYCLICTEST];

/// Whole seconds covering `p`'s duration (at least one).
fn secs(p: &ScenarioParams) -> String {
    p.duration.as_secs_f64().ceil().max(1.0).to_string()
}

/// Runs `spec` with `args` in cgroup `cgroup` for the run, then waits for
/// it (it stops on its own after the duration), beside `others`.
fn run_then_wait(
    spec: PayloadSpec,
    args: Vec<String>,
    cgroup: &'static str,
    others: Vec<CgroupDef>,
) -> (Backdrop, Vec<Step>) {
    let name = spec.name.clone();
    (
        Backdrop {
            cgroups: others,
            ops: vec![Op::add_cgroup(cgroup)],
        },
        vec![
            Step::with_op(
                Op::run_payload_in_cgroup(spec, args, cgroup),
                HoldSpec::FULL,
            ),
            Step::with_op(
                Op::wait_payload_in_cgroup(name, cgroup),
                HoldSpec::fixed(std::time::Duration::ZERO),
            ),
        ],
    )
}

/// A `--cpu` stressor per CPU for the run.
fn stress_ng_args(p: &ScenarioParams) -> Vec<String> {
    vec![
        "--cpu".into(),
        p.cpus().to_string(),
        "--timeout".into(),
        secs(p),
    ]
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "payload",
    about = "stress-ng --cpu, one stressor per CPU; its bogo-ops land in the result",
    payloads = USES_STRESS_NG,
)]
fn stress_ng_cpu(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    run_then_wait(
        (&STRESS_NG.payload).into(),
        stress_ng_args(p),
        "stress",
        Vec::new(),
    )
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "payload",
    about = "stress-ng --cpu beside a CpuSpin worker per CPU (spread off: stress-ng's \
             processes are not workers)",
    payloads = USES_STRESS_NG,
    checks = UNEVEN,
)]
fn stress_ng_beside_workers(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    let spin = CgroupDef::named("spin").workers(p.cpus());
    run_then_wait(
        (&STRESS_NG.payload).into(),
        stress_ng_args(p),
        "stress",
        vec![spin],
    )
}

fn cyclictest_args(p: &ScenarioParams) -> Vec<String> {
    vec![
        format!("--duration={}", secs(p)),
        format!("--threads={}", p.cpus()),
    ]
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "payload",
    about = "cyclictest, a normal-priority thread per CPU, on an idle guest; max latency \
             within 50 ms",
    payloads = USES_CYCLICTEST,
)]
fn cyclictest_idle(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    run_then_wait(
        (&CYCLICTEST.payload).into(),
        cyclictest_args(p),
        "latency",
        Vec::new(),
    )
}

#[ktstr_macros::test(
    crate = ktstr_agent,
    family = "payload",
    about = "cyclictest beside a CpuSpin worker per CPU; max latency within 250 ms",
    payloads = USES_CYCLICTEST,
)]
fn cyclictest_loaded(p: &ScenarioParams) -> (Backdrop, Vec<Step>) {
    let spin = CgroupDef::named("spin").workers(p.cpus());
    let spec = PayloadSpec::from(&CYCLICTEST.payload).set_limits(vec![
        MetricLimit::at_least("cycles", 1.0),
        MetricLimit::at_most("max_latency_us", CYCLICTEST_LOADED_MAX_US),
    ]);
    run_then_wait(spec, cyclictest_args(p), "latency", vec![spin])
}
