//! Where the scheduler state the monitor reads sits in this guest kernel,
//! found once through its BTF and symbols: fields of the per-CPU
//! `struct rq` (and its sched_ext part), of `task_struct`, and of the
//! sched_ext root scheduler. Fields a kernel lacks (one built without
//! sched_ext, or an older layout) are `None` and their figures are left
//! out, never guessed.

use crate::kmem::KmemError;
use crate::kmem::view::{FieldAt, View};

/// Offsets inside `struct rq` (from a CPU's `runqueues`), `task_struct`
/// and `struct scx_sched`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchedLayout {
    /// `runqueues` (per-CPU symbol).
    pub runqueues: u64,
    /// `jiffies_64`.
    pub jiffies: u64,
    pub rq_nr_running: FieldAt,
    pub rq_clock: FieldAt,
    pub rq_curr: Option<FieldAt>,
    pub rq_scx_nr_running: Option<FieldAt>,
    pub rq_local_dsq_nr: Option<FieldAt>,
    /// `rq.scx.runnable_list` and the `task_struct` members that hang off
    /// it: the list node and when the task last became runnable.
    pub rq_runnable_list: Option<FieldAt>,
    pub task_runnable_node: Option<FieldAt>,
    pub task_runnable_at: Option<FieldAt>,
    pub task_pid: Option<FieldAt>,
    pub task_comm: Option<FieldAt>,
    pub scx: Option<ScxLayout>,
}

/// The sched_ext root scheduler (`scx_root`, a pointer to `struct
/// scx_sched`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScxLayout {
    /// Address of the `scx_root` pointer.
    pub root: u64,
    pub ops_name: FieldAt,
    pub exit_kind: FieldAt,
    /// `pnode`: pointer to an array of per-node pointers, each to a struct
    /// whose `global_dsq.nr` counts the node's global queue.
    pub pnode: Option<(FieldAt, FieldAt)>,
    /// `pcpu`: per-CPU pointer to `struct scx_sched_pcpu`, with its
    /// `event_stats` counters (name, offset in the struct) and
    /// `bypass_dsq.nr`.
    pub pcpu: Option<FieldAt>,
    pub events: Vec<(String, FieldAt)>,
    pub bypass_dsq_nr: Option<FieldAt>,
}

impl SchedLayout {
    /// Finds everything in `view`; only `runqueues`, `jiffies_64`,
    /// `rq.nr_running` and `rq.clock` are required.
    pub fn resolve(view: &View<'_>) -> Result<Self, KmemError> {
        let rq = |path: &str| view.var_field("runqueues", path).ok();
        let task = |path: &str| view.field("task_struct", path).ok();
        Ok(Self {
            runqueues: view.sym("runqueues")?,
            jiffies: view.sym("jiffies_64").or_else(|_| view.sym("jiffies"))?,
            rq_nr_running: view.var_field("runqueues", "nr_running")?,
            rq_clock: view.var_field("runqueues", "clock")?,
            rq_curr: rq("curr"),
            rq_scx_nr_running: rq("scx.nr_running"),
            rq_local_dsq_nr: rq("scx.local_dsq.nr"),
            rq_runnable_list: rq("scx.runnable_list"),
            task_runnable_node: task("scx.runnable_node"),
            task_runnable_at: task("scx.runnable_at"),
            task_pid: task("pid"),
            task_comm: task("comm"),
            scx: ScxLayout::resolve(view),
        })
    }
}

impl ScxLayout {
    fn resolve(view: &View<'_>) -> Option<Self> {
        let root = view.sym("scx_root").ok()?;
        let sch = |path: &str| view.field("scx_sched", path).ok();
        let pcpu_field = |path: &str| view.field("scx_sched_pcpu", path).ok();
        let events = view
            .members("scx_sched_pcpu", "event_stats")
            .ok()
            .and_then(|m| pcpu_field("event_stats").map(|base| (m, base)))
            .map(|(m, base)| {
                m.into_iter()
                    .filter(|(_, f)| f.size == 8)
                    .map(|(n, f)| {
                        let at = FieldAt {
                            offset: base.offset + f.offset,
                            size: 8,
                        };
                        (n.trim_start_matches("SCX_EV_").to_lowercase(), at)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            root,
            ops_name: sch("ops.name")?,
            exit_kind: sch("exit_kind")?,
            pnode: sch("pnode").zip(view.field("scx_sched_pnode", "global_dsq.nr").ok()),
            pcpu: sch("pcpu"),
            events,
            bypass_dsq_nr: pcpu_field("bypass_dsq.nr"),
        })
    }
}
