//! Kernel reads from a step, whole round trip: the agent's
//! `kmem_read_loop_hot` and then `kmem_read_loop` scenarios, in one guest,
//! send one read of `jiffies_64` after another (hot: request over the
//! ring, read, reply; cold: with a freeze and thaw around the read), and
//! the host's log says when each request came off the ring; the gap
//! between two arrivals is one full round trip as the host's clock sees it
//! (the guest's clock stands still while it is frozen, so it cannot time
//! this). Prints median, p99 and max of the round trip and of the parts
//! the host measures on its own (service: off the ring to reply in the
//! ring; frozen: freeze to thaw), and the cold/hot ratio of medians.
//!
//! Run: `cargo bench -p ktstr-host --bench kmem` (`KTSTR_BENCH_SECS`,
//! default 10, sets how long the loop runs; `KTSTR_BENCH_BACKEND` =
//! auto|qemu|kvm).

mod guest;

use std::time::{Duration, Instant};

use ktstr_host::outcome::ServedRequest;
use ktstr_host::progress::Progress;
use ktstr_host::runner::{self, RunConfig};
use ktstr_host::vm::VmSpec;
use ktstr_host::vm::select::{self, BackendChoice};
use ktstr_protocol::model::{Assert, Plan};

/// Median, p99 and max of `v` (µs), as one table row.
fn row(what: &str, mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let at = |p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    format!(
        "| {what} | {} µs | {} µs | {} µs |",
        at(50),
        at(99),
        v[v.len() - 1]
    )
}

fn main() {
    let secs: u64 = guest::env_or("KTSTR_BENCH_SECS", 10);
    let choice: BackendChoice = guest::env_or("KTSTR_BENCH_BACKEND", BackendChoice::Auto);
    let progress = Progress::new(|m| eprintln!("kmem bench: {m}"));
    let Some(prepared) = guest::prepared(&progress) else {
        return;
    };
    let (backend, why) = match select::select(choice) {
        Ok(b) => b,
        Err(e) => {
            println!("SKIP: {e}");
            return;
        }
    };
    let topology = "1n1l2c1t";
    let spec = VmSpec::new(
        prepared.kernel.image.clone(),
        prepared.initramfs.clone(),
        topology.parse().expect("a topology"),
    );
    // Hot reads first (the ring and the agent alone), then cold ones, in
    // one guest: the difference is what the freeze costs.
    let plan =
        |name: &str| Plan::custom(name, name, Duration::from_secs(secs)).set_assert(Assert::NONE);
    let t0 = Instant::now();
    let outs = runner::run_all(
        backend.as_ref(),
        RunConfig {
            progress: progress.clone(),
            ..RunConfig::many(
                spec,
                vec![plan("kmem_read_loop_hot"), plan("kmem_read_loop")],
            )
        },
    )
    .expect("launching the VM");
    let kernel = outs
        .first()
        .and_then(|o| o.hello.as_ref())
        .map(|h| h.kernel_release.clone())
        .unwrap_or_default();
    println!(
        "u64 reads of jiffies_64 from a step, {secs} s each, on {topology}, backend {why}, \
         kernel {kernel} ({:.0} s in all)",
        t0.elapsed().as_secs_f64()
    );
    println!("| | median | p99 | max |");
    println!("| --- | --- | --- | --- |");
    let mut medians = Vec::new();
    for out in &outs {
        assert!(
            out.passed,
            "{} failed: {}",
            out.scenario,
            out.failure_text()
        );
        let log = out.kernel.as_ref().expect("kernel accesses were logged");
        assert!(log.errors.is_empty(), "{:?}", log.errors);
        // The first request also waited for the kernel info; leave it out.
        let served: &[ServedRequest] = log.served.get(1..).unwrap_or_default();
        assert!(served.len() >= 10, "only {} requests", served.len());
        let how = if out.scenario.ends_with("hot") {
            "hot"
        } else {
            "cold"
        };
        let round_trips: Vec<u64> = served
            .windows(2)
            .map(|w| w[1].at_us.saturating_sub(w[0].at_us))
            .collect();
        let mut sorted = round_trips.clone();
        sorted.sort_unstable();
        medians.push(sorted[sorted.len() / 2]);
        println!(
            "{}",
            row(
                &format!(
                    "{how}: round trip, arrival to arrival ({} reads)",
                    served.len()
                ),
                round_trips
            )
        );
        println!(
            "{}",
            row(
                &format!("{how}: host service, off the ring to reply sent"),
                served.iter().map(|s| s.service_us).collect()
            )
        );
        if how == "cold" {
            println!(
                "{}",
                row(
                    "cold: frozen, freeze call to thaw return",
                    served.iter().map(|s| s.frozen_us).collect()
                )
            );
        }
    }
    if let [hot, cold] = medians[..] {
        println!(
            "cold/hot round trip, medians: {:.2}x ({} us more for the freeze)",
            cold as f64 / hot.max(1) as f64,
            cold.saturating_sub(hot)
        );
    }
}
