//! What the host monitor and captures cost the guest, in one guest:
//!
//! - monitor cost: the same CpuSpin plan (one cgroup, two workers per
//!   vCPU) run with the monitor sampling every 100 ms and without, in
//!   alternation (`KTSTR_BENCH_PAIRS` pairs, default 4); the ratio of the
//!   workers' total work units, on over off, per pair: median and range.
//! - capture freeze time: a `Loop` step capturing every 100 ms under the
//!   same load; freeze call to thaw return per capture, median and p99.
//!
//! Run: `cargo bench -p ktstr-host --bench monitor` (`KTSTR_BENCH_SECS`,
//! default 3, sets each load plan's length; `KTSTR_BENCH_CAPTURE_SECS`,
//! default 10, the capture plan's).

mod guest;

use std::time::Duration;

use ktstr_host::outcome::RunOutcome;
use ktstr_host::progress::Progress;
use ktstr_host::runner::{self, RunConfig};
use ktstr_host::scenarios;
use ktstr_host::vm::VmSpec;
use ktstr_host::vm::select::{self, BackendChoice};
use ktstr_protocol::model::{Assert, HoldSpec, MonitorSpec, Op, Plan};

fn work_units(out: &RunOutcome) -> u64 {
    out.reports
        .iter()
        .flat_map(|cg| &cg.reports)
        .map(|w| w.work_units)
        .sum()
}

fn main() {
    let secs: u64 = guest::env_or("KTSTR_BENCH_SECS", 3);
    let pairs: usize = guest::env_or("KTSTR_BENCH_PAIRS", 4);
    let progress = Progress::new(|m| eprintln!("monitor bench: {m}"));
    let Some(prepared) = guest::prepared(&progress) else {
        return;
    };
    let (backend, why) = select::select(BackendChoice::Auto).expect("a backend");
    let topology = "1n1l2c1t";
    let duration = Duration::from_secs(secs);
    let load = |name: &str, monitored: bool| {
        let plan =
            scenarios::steady_plan(1, 4, duration).set_assert(Assert::NONE.check_not_starved());
        let mut plan = Plan {
            name: name.to_string(),
            ..plan
        };
        if monitored {
            plan = plan.set_monitor(MonitorSpec::default());
        }
        plan
    };
    let mut plans = Vec::new();
    for i in 0..pairs {
        // Alternate which goes first, so a drift in the host's speed
        // does not favour one side.
        let (a, b) = if i % 2 == 0 {
            (true, false)
        } else {
            (false, true)
        };
        plans.push(load(
            &format!("pair{i}_{}", if a { "on" } else { "off" }),
            a,
        ));
        plans.push(load(
            &format!("pair{i}_{}", if b { "on" } else { "off" }),
            b,
        ));
    }
    // The same load, its step re-applying a capture every 100 ms.
    let capture_secs: u64 = guest::env_or("KTSTR_BENCH_CAPTURE_SECS", 10);
    let mut capturing =
        scenarios::steady_plan(1, 4, Duration::from_secs(capture_secs)).set_assert(Assert::NONE);
    capturing.name = "captures".into();
    capturing.steps = capturing
        .steps
        .into_iter()
        .map(|s| {
            s.set_ops(vec![Op::capture_snapshot("periodic")])
                .set_hold(HoldSpec::loop_at(Duration::from_millis(100)))
        })
        .collect();
    plans.push(capturing);
    let spec = VmSpec::new(
        prepared.kernel.image.clone(),
        prepared.initramfs.clone(),
        topology.parse().expect("a topology"),
    );
    let outs = runner::run_all(
        backend.as_ref(),
        RunConfig {
            progress: progress.clone(),
            ..RunConfig::many(spec, plans)
        },
    )
    .expect("launching the VM");
    for o in &outs {
        assert!(o.passed, "{} failed: {}", o.scenario, o.failure_text());
    }
    let mut ratios = Vec::new();
    for pair in outs[..2 * pairs].chunks(2) {
        let (on, off) = if pair[0].scenario.ends_with("_on") {
            (&pair[0], &pair[1])
        } else {
            (&pair[1], &pair[0])
        };
        let samples = on.monitor.as_ref().map_or(0, |m| m.samples.len());
        assert!(samples > 0, "{}: the monitor took no sample", on.scenario);
        assert!(off.monitor.is_none());
        ratios.push(work_units(on) as f64 / work_units(off).max(1) as f64);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "monitor cost on {topology}, backend {why}: work units with the monitor at 100 ms over \
         without, {pairs} pairs of {secs} s: median {:.3}, range {:.3}..{:.3}",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    let caps = &outs[2 * pairs];
    let log = caps.kernel.as_ref().expect("captures were logged");
    let mut frozen: Vec<u64> = log.served.iter().map(|s| s.frozen_us).collect();
    let first = frozen.first().copied().unwrap_or(0);
    frozen.sort_unstable();
    let at = |p: usize| frozen[(frozen.len() * p / 100).min(frozen.len() - 1)];
    println!(
        "capture freeze time (freeze call to thaw return), {} captures: median {} us, p99 {} us, \
         max {} us; the first (which finds the layout in the BTF) {first} us",
        frozen.len(),
        at(50),
        at(99),
        frozen[frozen.len() - 1]
    );
}
