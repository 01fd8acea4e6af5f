//! One look at every CPU's runqueue and at the sched_ext root scheduler,
//! read from guest memory through a [`View`] (no freeze for the monitor;
//! inside one for a capture). Every pointer followed is the guest's:
//! reads are bounds-checked, counts are taken as read, and a field that
//! cannot be read is left out of the sample rather than failing it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::layout::{SchedLayout, ScxLayout};
use crate::kmem::KmemError;
use crate::kmem::view::View;

/// Most CPUs a sample reads: more than any guest we boot; a larger
/// `nr_cpu_ids` read from the guest is refused as garbage.
pub const MAX_CPUS: u32 = 1024;
/// Most NUMA nodes whose global queues are read.
const MAX_NODES: u32 = 64;
/// The kernel's `PID_MAX_LIMIT`: no queue holds more tasks than exist.
const MAX_TASKS: u32 = 4 << 20;

/// One CPU's runqueue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CpuSample {
    pub cpu: u32,
    /// Tasks on the runqueue, all classes, the running one included.
    pub nr_running: u32,
    /// Of those, sched_ext tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scx_nr_running: Option<u32>,
    /// Tasks in the CPU's local dispatch queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_dsq: Option<u32>,
    /// `rq->clock`, ns.
    pub clock: u64,
    /// The running task's pid (0: idle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curr_pid: Option<i32>,
    /// The longest-waiting runnable sched_ext task on this CPU: its pid
    /// and how many jiffies ago it became runnable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_waiter: Option<(i32, u64)>,
}

/// The sched_ext root scheduler, when one is loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScxSample {
    /// Its ops name (`ktstr_fifo`, `rusty_...`).
    pub ops: String,
    /// `exit_kind` and its name from the kernel's `enum scx_exit_kind`.
    pub exit_kind: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_kind_name: Option<String>,
    /// Tasks in the global dispatch queues, all nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_dsq: Option<u64>,
    /// Tasks in the bypass queues, all CPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bypass_dsq: Option<u64>,
    /// sched_ext event counters summed over CPUs (`select_cpu_fallback`...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, i64>,
    /// Where this scheduler's `exit_kind` lives (for a watchpoint on it).
    #[serde(skip)]
    pub exit_kind_va: u64,
}

/// Every CPU and the sched_ext state at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// ms since the plan started, time the guest spent frozen left out.
    pub at_ms: u64,
    /// The step running (0 = baseline).
    pub step: u16,
    pub jiffies: u64,
    pub cpus: Vec<CpuSample>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scx: Option<ScxSample>,
}

/// Reads a sample (stamps left at 0 for the caller).
pub fn read(view: &View<'_>, l: &SchedLayout) -> Result<Sample, KmemError> {
    let nr = view.nr_cpus()?;
    if nr == 0 || nr > MAX_CPUS {
        return Err(KmemError::Invalid(format!(
            "nr_cpu_ids reads {nr}, outside 1..={MAX_CPUS}"
        )));
    }
    let jiffies = view.read_u64(l.jiffies)?;
    let mut cpus = Vec::with_capacity(nr as usize);
    for cpu in 0..nr {
        cpus.push(read_cpu(view, l, cpu, jiffies)?);
    }
    let scx = match &l.scx {
        Some(s) => read_scx(view, s, nr)?,
        None => None,
    };
    Ok(Sample {
        jiffies,
        cpus,
        scx,
        ..Default::default()
    })
}

fn read_cpu(
    view: &View<'_>,
    l: &SchedLayout,
    cpu: u32,
    jiffies: u64,
) -> Result<CpuSample, KmemError> {
    let rq = l.runqueues.wrapping_add(view.per_cpu_offset(cpu)?);
    let u32_at = |f: &crate::kmem::view::FieldAt| -> Option<u32> {
        view.read_uint(rq + f.offset, f.size).ok().map(|v| v as u32)
    };
    let curr_pid = match (&l.rq_curr, &l.task_pid) {
        (Some(curr), Some(pid)) => {
            let task = view.read_u64(rq + curr.offset)?;
            view.read_u32(task.wrapping_add(pid.offset))
                .ok()
                .map(|p| p as i32)
        }
        _ => None,
    };
    let nr_running = view.read_uint(rq + l.rq_nr_running.offset, l.rq_nr_running.size)? as u32;
    let scx_nr_running = l.rq_scx_nr_running.as_ref().and_then(u32_at);
    let local_dsq = l.rq_local_dsq_nr.as_ref().and_then(u32_at);
    // More than the kernel could ever have: not a figure to judge.
    for (what, n) in [
        ("nr_running", Some(nr_running)),
        ("scx.nr_running", scx_nr_running),
        ("scx.local_dsq.nr", local_dsq),
    ] {
        if let Some(n) = n.filter(|&n| n > MAX_TASKS) {
            return Err(KmemError::Invalid(format!(
                "CPU {cpu}'s rq.{what} reads {n}, more than the {MAX_TASKS} tasks a kernel can have"
            )));
        }
    }
    Ok(CpuSample {
        cpu,
        nr_running,
        scx_nr_running,
        local_dsq,
        clock: view.read_uint(rq + l.rq_clock.offset, l.rq_clock.size)?,
        curr_pid,
        oldest_waiter: oldest_waiter(view, l, rq, jiffies),
    })
}

/// The head of `rq.scx.runnable_list`: tasks are added at the tail when
/// they become runnable and leave when they run, so the head has waited
/// longest. `None` when the list is empty or cannot be read.
fn oldest_waiter(view: &View<'_>, l: &SchedLayout, rq: u64, jiffies: u64) -> Option<(i32, u64)> {
    let (list, node, at, pid) = (
        l.rq_runnable_list.as_ref()?,
        l.task_runnable_node.as_ref()?,
        l.task_runnable_at.as_ref()?,
        l.task_pid.as_ref()?,
    );
    let head = rq + list.offset;
    let first = view.read_u64(head).ok()?;
    if first == head || first == 0 {
        return None;
    }
    let task = first.wrapping_sub(node.offset);
    let since = view.read_u64(task.wrapping_add(at.offset)).ok()?;
    let pid = view.read_u32(task.wrapping_add(pid.offset)).ok()? as i32;
    Some((pid, jiffies.saturating_sub(since)))
}

fn read_scx(view: &View<'_>, s: &ScxLayout, nr_cpus: u32) -> Result<Option<ScxSample>, KmemError> {
    let sch = view.read_u64(s.root)?;
    if sch == 0 {
        return Ok(None);
    }
    let name = view.read_bytes(sch.wrapping_add(s.ops_name.offset), s.ops_name.size)?;
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let exit_kind = view.read_u32(sch.wrapping_add(s.exit_kind.offset))?;
    let global_dsq = s.pnode.as_ref().and_then(|(pnode, nr)| {
        let array = view.read_u64(sch.wrapping_add(pnode.offset)).ok()?;
        let mut total = 0u64;
        for node in 0..MAX_NODES {
            let p = view
                .read_u64(array.wrapping_add(8 * u64::from(node)))
                .ok()?;
            // The array has one entry per possible node; it ends where
            // the pointers stop looking like kernel addresses.
            if p < 0xffff_8000_0000_0000 {
                break;
            }
            total += u64::from(view.read_u32(p.wrapping_add(nr.offset)).ok()?);
        }
        Some(total)
    });
    let mut events = BTreeMap::new();
    let mut bypass = None;
    if let Some(pcpu) = &s.pcpu {
        let base = view.read_u64(sch.wrapping_add(pcpu.offset))?;
        for cpu in 0..nr_cpus {
            let at = base.wrapping_add(view.per_cpu_offset(cpu)?);
            for (name, f) in &s.events {
                if let Ok(v) = view.read_u64(at.wrapping_add(f.offset)) {
                    let e = events.entry(name.clone()).or_insert(0i64);
                    *e = e.wrapping_add(v as i64);
                }
            }
            if let Some(f) = &s.bypass_dsq_nr
                && let Ok(v) = view.read_u32(at.wrapping_add(f.offset))
            {
                *bypass.get_or_insert(0u64) += u64::from(v);
            }
        }
    }
    Ok(Some(ScxSample {
        ops: String::from_utf8_lossy(&name[..end]).into_owned(),
        exit_kind,
        exit_kind_name: view.enum_name("scx_exit_kind", u64::from(exit_kind)),
        exit_kind_va: sch.wrapping_add(s.exit_kind.offset),
        global_dsq,
        bypass_dsq: bypass,
        events,
    }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::kmem::Kernel;
    use crate::kmem::kernel::tests::{TEXT_PA, test_guest};
    use crate::monitor::SchedReader;
    use crate::vm::ram::PhysMemory;

    const MIB: u64 = 1 << 20;

    #[test]
    fn every_cpu_of_the_test_guest_is_read() {
        let (ram, info) = test_guest();
        let mut k = Kernel::new(info).unwrap();
        let s = SchedReader::default().read(&mut k, &ram).unwrap();
        let nr: Vec<u32> = s.cpus.iter().map(|c| c.nr_running).collect();
        assert_eq!(nr, [3, 4]);
        assert_eq!(s.jiffies, 77);
        // The tiny kernel has no sched_ext, no task_struct: left out.
        assert!(s.scx.is_none() && s.cpus[0].local_dsq.is_none());
    }

    #[test]
    fn absurd_counts_and_pointers_are_errors() {
        for (at, value) in [
            (TEXT_PA + 0x4000, 1_000_000u64), // nr_cpu_ids
            (TEXT_PA + 0x4000, 0),
            (TEXT_PA + 0x5008, 0xdead_beef_0000), // CPU 1's per-CPU offset
            (TEXT_PA + 0x5008, u64::MAX),
            (17 * MIB + 0x100, 0xffff_ffff), // CPU 1's rq.nr_running
        ] {
            let (ram, info) = test_guest();
            if at == TEXT_PA + 0x4000 || at == 17 * MIB + 0x100 {
                ram.write(at, &(value as u32).to_le_bytes()).unwrap();
            } else {
                ram.write(at, &value.to_le_bytes()).unwrap();
            }
            let mut k = Kernel::new(info).unwrap();
            let e = SchedReader::default().read(&mut k, &ram);
            assert!(e.is_err(), "{at:#x} = {value:#x}: {e:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Garbage in the runqueues and per-CPU offsets: a sample or an
        /// error, never a panic.
        #[test]
        fn garbage_runqueues_give_samples_or_errors(
            writes in proptest::collection::vec((0u64..0x2000, any::<u64>()), 1..32),
            offsets in proptest::collection::vec(any::<u64>(), 0..2),
        ) {
            let (ram, info) = test_guest();
            for (off, v) in writes {
                ram.write(16 * MIB + off, &v.to_le_bytes()).unwrap();
            }
            for (cpu, v) in offsets.iter().enumerate() {
                ram.write(TEXT_PA + 0x5000 + 8 * cpu as u64, &v.to_le_bytes()).unwrap();
            }
            let mut k = Kernel::new(info).unwrap();
            let _ = SchedReader::default().read(&mut k, &ram);
        }
    }
}
