//! Kernel-memory ops (`ReadKernelHot/Cold`, `WriteKernelHot/Cold`,
//! `CaptureSnapshot`, `WatchSnapshot`) as requests to the host, which does
//! the accesses. Adjacent cold ops of a
//! step, reads and writes alike, fold into one request and so one freeze
//! (in their order, so folding never reorders a read around a write); a
//! hot op is its own request against the running guest.
//!
//! Values read are kept in the context by tag ([`Ctx::kernel_value`]) and
//! appear in the stimulus stream; a failed access fails the op.

use anyhow::{Result, bail};
use ktstr_protocol::model::{KernelAccess, Op, OpKind};

use super::ctx::Ctx;

/// The accesses of `op` and whether it is cold, for a kernel op.
pub(crate) fn accesses(op: &Op) -> Option<(bool, Vec<KernelAccess>)> {
    let writes = |w: &[(
        ktstr_protocol::model::KernelTarget,
        ktstr_protocol::model::KernelValue,
    )]| {
        w.iter()
            .map(|(target, value)| KernelAccess::Write {
                target: target.clone(),
                value: value.clone(),
            })
            .collect()
    };
    let read = |tag: &std::borrow::Cow<'static, str>, target: &_, width: &_| {
        vec![KernelAccess::Read {
            tag: tag.clone(),
            target: Clone::clone(target),
            width: *width,
        }]
    };
    match op {
        Op::WriteKernelCold { writes: w } => Some((true, writes(w))),
        Op::WriteKernelHot { writes: w } => Some((false, writes(w))),
        Op::ReadKernelCold { tag, target, width } => Some((true, read(tag, target, width))),
        Op::ReadKernelHot { tag, target, width } => Some((false, read(tag, target, width))),
        // A capture freezes the guest too, so it folds with cold ops.
        Op::CaptureSnapshot { name } => {
            Some((true, vec![KernelAccess::Capture { name: name.clone() }]))
        }
        _ => None,
    }
}

/// How many ops from the start of `ops` are cold kernel ops.
pub(crate) fn cold_run(ops: &[Op]) -> usize {
    ops.iter()
        .take_while(|op| matches!(accesses(op), Some((true, _))))
        .count()
}

/// Sends `accesses` as one request and reports each result.
pub(crate) fn run(ctx: &Ctx, cold: bool, accesses: Vec<KernelAccess>) -> Result<()> {
    let n = accesses.len();
    let results = ctx.kernel_request(cold, accesses.clone())?;
    if results.len() != n {
        bail!(
            "the host answered {} results for {n} kernel accesses",
            results.len()
        );
    }
    for (access, result) in accesses.iter().zip(results) {
        match (access, result) {
            (KernelAccess::Read { tag, target, .. }, Ok(Some(value))) => {
                let kind = if cold {
                    OpKind::ReadKernelCold
                } else {
                    OpKind::ReadKernelHot
                };
                ctx.emit(Some(kind), format!("read {tag}: {target} = {value}"));
                ctx.remember_kernel_value(tag, value);
            }
            (KernelAccess::Read { tag, target, .. }, Ok(None)) => {
                bail!("reading {tag} ({target}): the host sent no value")
            }
            (KernelAccess::Write { target, value }, Ok(_)) => {
                let kind = if cold {
                    OpKind::WriteKernelCold
                } else {
                    OpKind::WriteKernelHot
                };
                ctx.emit(Some(kind), format!("wrote {target} = {value}"));
            }
            (KernelAccess::Read { tag, target, .. }, Err(e)) => {
                bail!("reading {tag} ({target}) from kernel memory: {e}")
            }
            (KernelAccess::Write { target, .. }, Err(e)) => {
                bail!("writing {target} in kernel memory: {e}")
            }
            (KernelAccess::Capture { name }, Ok(_)) => {
                ctx.emit(Some(OpKind::CaptureSnapshot), format!("captured {name}"));
            }
            (KernelAccess::Capture { name }, Err(e)) => bail!("capturing {name}: {e}"),
            (KernelAccess::Watch { symbol }, Ok(_)) => {
                ctx.emit(
                    Some(OpKind::WatchSnapshot),
                    format!("watching writes to {symbol}"),
                );
            }
            (KernelAccess::Watch { symbol }, Err(e)) => bail!("watching {symbol}: {e}"),
        }
    }
    if cold && n > 1 {
        ctx.emit(None, format!("{n} cold kernel accesses in one freeze"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ktstr_protocol::model::{KernelTarget, KernelValue, KernelValueWidth};

    use super::*;

    #[test]
    fn adjacent_cold_ops_fold_and_hot_ones_do_not() {
        let w =
            |v| Op::write_kernel_cold(KernelTarget::symbol("vm_swappiness"), KernelValue::U32(v));
        let r = Op::read_kernel_cold(
            "j",
            KernelTarget::symbol("jiffies_64"),
            KernelValueWidth::u64(),
        );
        let hot = Op::read_kernel_hot(
            "h",
            KernelTarget::symbol("jiffies_64"),
            KernelValueWidth::u64(),
        );
        let ops = vec![w(1), r.clone(), w(2), hot.clone(), w(3)];
        assert_eq!(cold_run(&ops), 3);
        assert_eq!(cold_run(&ops[3..]), 0);
        assert_eq!(cold_run(&ops[4..]), 1);
        assert!(!accesses(&hot).unwrap().0, "hot");
        assert!(accesses(&Op::add_cgroup("a")).is_none());
    }
}
