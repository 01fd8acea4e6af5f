//! Built-in scenarios that exercise the host's access to kernel memory:
//! sysctl variables written from the host and read back through
//! /proc/sys, and a tight loop of cold reads (the latency benchmark's
//! load). They only send requests; the host does the accesses.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ktstr_protocol::model::{
    Assert, AssertResult, DetailKind, HoldSpec, KernelAccess, KernelTarget, KernelValue,
    KernelValueWidth, Op,
};

use super::ctx::Ctx;
use super::exec::execute_steps_with;
use super::step::Step;

/// Sysctls behind plain `int` kernel variables, as (kernel symbol, file
/// under /proc/sys).
const SYSCTL_VARS: [(&str, &str); 2] = [
    ("vm_swappiness", "vm/swappiness"),
    ("dirty_background_ratio", "vm/dirty_background_ratio"),
];

/// Writes two sysctl-backed kernel variables from the host in one step
/// (two adjacent cold writes, so one freeze), then reads them back the
/// ordinary way, through /proc/sys; fails when the kernel does not show
/// the values written. The old values are put back afterwards.
pub(crate) fn kmem_sysctl_roundtrip(ctx: &Ctx) -> Result<AssertResult> {
    let proc_sys = |file: &str| format!("/proc/sys/{file}");
    let read = |file: &str| -> Result<u32> {
        let path = proc_sys(file);
        let text =
            std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?;
        text.trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{path} holds {:?}: {e}", text.trim()))
    };
    let mut old = Vec::new();
    for (_, file) in SYSCTL_VARS {
        old.push(read(file)?);
    }
    // Values no default has, each different from what is there now.
    let wanted: Vec<u32> = old.iter().map(|&v| if v == 23 { 24 } else { 23 }).collect();
    let writes = SYSCTL_VARS.iter().zip(&wanted).map(|((symbol, _), &v)| {
        Op::write_kernel_cold(KernelTarget::symbol(*symbol), KernelValue::U32(v))
    });
    let steps = vec![Step::new(writes.collect(), HoldSpec::fixed(Duration::ZERO))];
    let mut result = execute_steps_with(ctx, steps, Some(&Assert::NONE))?;
    for (((symbol, file), &want), &before) in SYSCTL_VARS.iter().zip(&wanted).zip(&old) {
        let seen = read(file)?;
        ctx.emit(
            None,
            format!("/proc/sys/{file} reads {seen} after the host wrote {want} to {symbol}"),
        );
        if seen != want {
            result.push_failure(
                DetailKind::Error,
                format!(
                    "the host wrote {want} to {symbol}, but /proc/sys/{file} reads {seen} \
                     (it was {before})"
                ),
            );
        }
        std::fs::write(proc_sys(file), before.to_string())
            .map_err(|e| anyhow::anyhow!("restoring {}: {e}", proc_sys(file)))?;
    }
    Ok(result)
}

/// Most requests [`kmem_read_loop`] sends, whatever the duration.
const READ_LOOP_MAX: u64 = 100_000;

/// Cold reads of `jiffies_64`, one request (so one freeze) each, back to
/// back for the scenario's duration: see [`read_loop`].
pub(crate) fn kmem_read_loop(ctx: &Ctx) -> Result<AssertResult> {
    read_loop(ctx, true)
}

/// [`kmem_read_loop`] with hot reads (no freeze): the ring's share of the
/// round trip, for comparison.
pub(crate) fn kmem_read_loop_hot(ctx: &Ctx) -> Result<AssertResult> {
    read_loop(ctx, false)
}

/// Reads of `jiffies_64`, one request each, back to back for the
/// scenario's duration; fails when the counter ever goes backwards or a
/// read fails. The host's log times each request, so the gaps between
/// arrivals are whole round trips from a step.
fn read_loop(ctx: &Ctx, cold: bool) -> Result<AssertResult> {
    let access = KernelAccess::Read {
        tag: "jiffies".into(),
        target: KernelTarget::symbol("jiffies_64"),
        width: KernelValueWidth::u64(),
    };
    let how = if cold { "cold" } else { "hot" };
    let t0 = Instant::now();
    let (mut n, mut last) = (0u64, 0u64);
    let mut result = AssertResult::pass();
    while t0.elapsed() < ctx.duration && n < READ_LOOP_MAX {
        let value = match ctx.kernel_request(cold, vec![access.clone()])?.pop() {
            Some(Ok(Some(KernelValue::U64(v)))) => v,
            Some(Err(e)) => bail!("{how} read {n} of jiffies_64: {e}"),
            other => bail!("{how} read {n} of jiffies_64 came back as {other:?}"),
        };
        if value < last {
            result.push_failure(
                DetailKind::Error,
                format!("jiffies_64 went back from {last} to {value} at read {n}"),
            );
        }
        last = value;
        n += 1;
    }
    ctx.emit(
        None,
        format!(
            "{n} {how} reads of jiffies_64 in {} ms, last {last}",
            t0.elapsed().as_millis()
        ),
    );
    Ok(result)
}

/// Writes to /proc/sys/vm/swappiness [`kmem_watch_sysctl`] makes, the
/// restore included.
pub(crate) const WATCHED_WRITES: u32 = 4;

/// Asks the host to watch `vm_swappiness`, then writes it through
/// /proc/sys three times and puts the old value back: the host should
/// take one capture per write ([`WATCHED_WRITES`]).
pub(crate) fn kmem_watch_sysctl(ctx: &Ctx) -> Result<AssertResult> {
    let path = "/proc/sys/vm/swappiness";
    let old: u32 = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let watch = KernelAccess::Watch {
        symbol: "vm_swappiness".into(),
    };
    match ctx.kernel_request(false, vec![watch])?.pop() {
        Some(Ok(_)) => ctx.emit(None, "watching writes to vm_swappiness"),
        Some(Err(e)) => bail!("watching vm_swappiness: {e}"),
        None => bail!("the host answered nothing to the watch request"),
    }
    let values: Vec<u32> = (0..WATCHED_WRITES - 1)
        .map(|i| 30 + i + u32::from((30..30 + WATCHED_WRITES).contains(&old)) * 10)
        .chain([old])
        .collect();
    for v in &values {
        std::fs::write(path, v.to_string()).map_err(|e| anyhow::anyhow!("writing {path}: {e}"))?;
        std::thread::sleep(Duration::from_millis(100));
    }
    ctx.emit(
        None,
        format!("wrote {path} {} times ({values:?})", values.len()),
    );
    Ok(AssertResult::pass())
}
