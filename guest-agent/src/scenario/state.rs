//! What a running scenario holds: live cgroups in creation order, their
//! worker groups, runner-cgroup workers and payloads, each tagged with its
//! owner:
//! - the Backdrop: lives for the whole run, steps may not shadow or remove;
//! - the scenario: made by a step's ops (AddCgroup, Spawn, RunPayload),
//!   lives until an op removes it or the run ends;
//! - the step: a step's setup defs (and AddCgroupDef), gone when the step
//!   ends, with every worker inside them.
//!
//! Teardown of an owner stops its workers and payloads, then removes its
//! cgroups newest first. Reports of workers stopped early (StopCgroup,
//! RemoveCgroup) are kept so the phase's checks still see them.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use ktstr_protocol::model::{AffinityIntent, AssertResult, TimelineSample, TimelineSpec, WorkSpec};

use super::affinity::resolve_affinity_for_cgroup;
use super::ctx::Ctx;
use super::group::remove_cgroup_tolerant;
use super::owner::Owner;
use super::payload::Payloads;
use super::timeline::Sampler;
use super::workers::{repin, spawn_group, stop};
use crate::cgroup::DEFAULT_CPU_WEIGHT;
use crate::checks::CgroupReports;
use crate::workload::WorkloadHandle;

/// One spawned work group. Its handle records the cpusets in force for it,
/// interval by interval, so isolation is judged against the cpuset of the
/// moment rather than against everything it was ever allowed.
pub(crate) struct Workers {
    handle: WorkloadHandle,
    owner: Owner,
    started: bool,
}

pub(crate) struct LiveCgroup {
    pub(crate) name: String,
    owner: Owner,
    pub(crate) cpuset: Option<BTreeSet<usize>>,
    frozen: bool,
    workers: Vec<Workers>,
    /// When it was made, on the plan clock (`Ctx::elapsed_ms`).
    created_ms: u64,
}

/// Stops `groups` and gathers their reports (each carries its group's
/// cpuset history).
fn collect(cgroup: &str, groups: Vec<Workers>) -> Option<CgroupReports> {
    if groups.is_empty() {
        return None;
    }
    for w in &groups {
        w.handle.request_stop();
    }
    let reports = groups.into_iter().flat_map(|w| stop(w.handle)).collect();
    Some(CgroupReports {
        cgroup: cgroup.to_string(),
        reports,
        ancestry_weights: Vec::new(),
    })
}

/// The state of one scenario run.
pub(crate) struct RunState {
    /// Whether the steps have begun (the Backdrop is set up before).
    pub(crate) in_step: bool,
    cgroups: Vec<LiveCgroup>,
    runner: Vec<Workers>,
    pub(crate) payloads: Payloads,
    finished: Vec<CgroupReports>,
    /// `cpu.weight` written to live cgroups, by name.
    weights: BTreeMap<String, u32>,
    /// Failures ops recorded during the current phase.
    pub(crate) result: AssertResult,
    /// The time series of the live cgroups and their workers.
    pub(crate) timeline: Sampler,
}

impl RunState {
    /// A run sampling as `timeline` says for a guest that is `emulated`
    /// with `cpus` vCPUs.
    pub(crate) fn new(timeline: TimelineSpec, emulated: bool, cpus: usize) -> Self {
        Self {
            timeline: Sampler::new(timeline.interval(emulated, cpus)),
            in_step: false,
            cgroups: Vec::new(),
            runner: Vec::new(),
            payloads: Payloads::default(),
            finished: Vec::new(),
            weights: BTreeMap::new(),
            result: AssertResult::pass(),
        }
    }

    /// The owner of what an op creates now.
    pub(crate) fn op_owner(&self) -> Owner {
        if self.in_step {
            Owner::Scenario
        } else {
            Owner::Backdrop
        }
    }

    /// The owner of what a setup def creates now.
    pub(crate) fn def_owner(&self) -> Owner {
        if self.in_step {
            Owner::Step
        } else {
            Owner::Backdrop
        }
    }

    fn live_names(&self) -> Vec<&str> {
        self.cgroups.iter().map(|c| c.name.as_str()).collect()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&LiveCgroup> {
        self.cgroups.iter().find(|c| c.name == name)
    }

    pub(crate) fn require(&mut self, name: &str, what: &str) -> Result<&mut LiveCgroup> {
        if self.get(name).is_none() {
            bail!(
                "{what}: cgroup {name:?} is not live in this scenario (live: {:?}); create it \
                 first with Op::add_cgroup or a CgroupDef. A step's cgroups are removed when the \
                 step ends: declare cgroups several steps share in the Backdrop",
                self.live_names()
            );
        }
        Ok(self
            .cgroups
            .iter_mut()
            .find(|c| c.name == name)
            .expect("checked above"))
    }

    /// Creates `name` (and any ancestor not yet live) for `owner`.
    pub(crate) fn add_cgroup(&mut self, ctx: &Ctx, name: &str, owner: Owner) -> Result<()> {
        if let Some(cg) = self.get(name) {
            if cg.owner == Owner::Backdrop && self.in_step {
                bail!(
                    "cgroup {name:?} belongs to the Backdrop; a step may not declare it again. \
                     Rename the step's cgroup, or change the Backdrop one with ops such as \
                     Op::set_cpuset"
                );
            }
            bail!(
                "cgroup {name:?} already exists in this scenario; use another name or remove it first"
            );
        }
        let mut path = String::new();
        for part in name.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            if self.get(&path).is_some() {
                continue;
            }
            ctx.cgroups.create(&path)?;
            self.cgroups.push(LiveCgroup {
                name: path.clone(),
                owner,
                cpuset: None,
                frozen: false,
                workers: Vec::new(),
                created_ms: ctx.elapsed_ms(),
            });
        }
        Ok(())
    }

    /// Samples every live cgroup (its CPU usage and its workers' work
    /// units) if sampling is on; the rows join the timeline.
    pub(crate) fn sample_now(&mut self, ctx: &Ctx) {
        if !self.timeline.active() {
            return;
        }
        let now = std::time::Instant::now();
        let (at_ms, step) = (ctx.elapsed_ms(), ctx.step());
        let rows = self
            .cgroups
            .iter()
            .map(|cg| TimelineSample {
                at_ms,
                step,
                cgroup: cg.name.clone(),
                since_ms: cg.created_ms,
                usage_usec: ctx.cgroups.cpu_usage_usec(&cg.name),
                work_units: cg
                    .workers
                    .iter()
                    .flat_map(|w| w.handle.progress())
                    .collect(),
            })
            .collect();
        self.timeline.push(ctx, now, rows);
    }

    /// [`Self::sample_now`] when a sample is due.
    pub(crate) fn sample_if_due(&mut self, ctx: &Ctx) {
        if self.timeline.is_due(std::time::Instant::now()) {
            self.sample_now(ctx);
        }
    }

    /// Writes `cpu.weight` of live cgroup `name`.
    pub(crate) fn set_cpu_weight(&mut self, ctx: &Ctx, name: &str, weight: u32) -> Result<()> {
        self.require(name, "cpu.weight")?;
        ctx.cgroups.set_cpu_weight(name, weight)?;
        self.weights.insert(name.to_string(), weight);
        Ok(())
    }

    /// The `cpu.weight` of each cgroup from the top one down to `name`
    /// (the kernel's default where none was written).
    fn ancestry_weights(&self, name: &str) -> Vec<u32> {
        if name.is_empty() {
            return Vec::new();
        }
        let mut path = String::new();
        name.split('/')
            .map(|part| {
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(part);
                self.weights
                    .get(&path)
                    .copied()
                    .unwrap_or(DEFAULT_CPU_WEIGHT)
            })
            .collect()
    }

    /// Stops the cgroup's workers, then removes it.
    pub(crate) fn remove_cgroup(&mut self, ctx: &Ctx, name: &str) -> Result<()> {
        let in_step = self.in_step;
        let cg = self.require(name, "RemoveCgroup")?;
        if cg.owner == Owner::Backdrop && in_step {
            bail!(
                "RemoveCgroup: cgroup {name:?} belongs to the Backdrop and lives for the whole \
                 scenario; a step may not remove it. Stop its workers with Op::stop_cgroup, or \
                 make it a step cgroup"
            );
        }
        let prefix = format!("{name}/");
        let children: Vec<&str> = self
            .live_names()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if !children.is_empty() {
            bail!(
                "RemoveCgroup: cgroup {name:?} still has child cgroups {children:?}; remove those first"
            );
        }
        self.stop_workers(ctx, name)?;
        remove_cgroup_tolerant(ctx.cgroups, name)?;
        self.cgroups.retain(|c| c.name != name);
        self.weights.remove(name);
        Ok(())
    }

    /// Stops every worker of `name`, keeping the cgroup; returns how many.
    pub(crate) fn stop_workers(&mut self, ctx: &Ctx, name: &str) -> Result<usize> {
        let cg = self.require(name, "StopCgroup")?;
        // Frozen workers cannot act on the stop signal and would be killed
        // without a report.
        if cg.frozen {
            ctx.cgroups.unfreeze(name)?;
            cg.frozen = false;
        }
        let groups = std::mem::take(&mut cg.workers);
        let mut out = collect(name, groups);
        if let Some(o) = out.as_mut() {
            o.ancestry_weights = self.ancestry_weights(name);
        }
        let n = out.as_ref().map_or(0, |o| o.reports.len());
        self.finished.extend(out);
        Ok(n)
    }

    /// Spawns a work group in `cgroup` (`None`: the runner's cgroup).
    pub(crate) fn spawn(
        &mut self,
        ctx: &Ctx,
        cgroup: Option<&str>,
        spec: &WorkSpec,
        count: usize,
        owner: Owner,
    ) -> Result<Vec<i32>> {
        let cpuset = match cgroup {
            Some(name) => self.require(name, "Spawn")?.cpuset.clone(),
            None => None,
        };
        let mut handle = spawn_group(ctx, cgroup, spec, count, cpuset.as_ref())?;
        handle.note_cpuset(cpuset.as_ref(), ctx.elapsed_ms());
        let pids = handle.pids();
        let w = Workers {
            handle,
            owner,
            started: false,
        };
        match cgroup {
            Some(name) => self.require(name, "Spawn")?.workers.push(w),
            None => self.runner.push(w),
        }
        Ok(pids)
    }

    /// Releases every worker group not started yet.
    pub(crate) fn start_pending(&mut self) -> Result<()> {
        let groups = self
            .cgroups
            .iter_mut()
            .flat_map(|c| c.workers.iter_mut())
            .chain(self.runner.iter_mut());
        for w in groups.filter(|w| !w.started) {
            w.handle.start()?;
            w.started = true;
        }
        Ok(())
    }

    pub(crate) fn set_cpuset(
        &mut self,
        ctx: &Ctx,
        name: &str,
        cpus: Option<BTreeSet<usize>>,
    ) -> Result<()> {
        let cg = self.require(name, "SetCpuset")?;
        // The new interval opens before the kernel moves anyone: a worker
        // that finds itself on a new CPU has then already seen the new
        // interval, and one still on an old CPU early in it is within the
        // isolation grace.
        let now = ctx.elapsed_ms();
        for w in &mut cg.workers {
            w.handle.note_cpuset(cpus.as_ref(), now);
        }
        match &cpus {
            Some(c) => ctx.cgroups.set_cpuset(name, c)?,
            None => ctx.cgroups.clear_cpuset(name)?,
        }
        cg.cpuset = cpus;
        Ok(())
    }

    /// Applies `intent` to every worker of `name`; returns how many.
    pub(crate) fn set_affinity(
        &mut self,
        ctx: &Ctx,
        name: &str,
        intent: &AffinityIntent,
    ) -> Result<usize> {
        let cg = self.require(name, "SetAffinity")?;
        let resolved = resolve_affinity_for_cgroup(intent, cg.cpuset.as_ref(), ctx.topo)
            .map_err(|e| e.context(format!("SetAffinity on cgroup {name}")))?;
        let mut n = 0;
        for w in &cg.workers {
            repin(&w.handle, &resolved)?;
            n += w.handle.pids().len();
        }
        Ok(n)
    }

    /// Moves every task of `from` into `to`, and the bookkeeping with them.
    pub(crate) fn move_all(&mut self, ctx: &Ctx, from: &str, to: &str) -> Result<Vec<i32>> {
        let dest_cpuset = self.require(to, "MoveAllTasks")?.cpuset.clone();
        let mut moved = std::mem::take(&mut self.require(from, "MoveAllTasks")?.workers);
        // As for SetCpuset: the interval opens before the move.
        let now = ctx.elapsed_ms();
        for w in &mut moved {
            w.handle.note_cpuset(dest_cpuset.as_ref(), now);
        }
        let pids = match ctx.cgroups.move_all_tasks(from, to) {
            Ok(p) => p,
            Err(e) => {
                // Keep the bookkeeping where the tasks may still be.
                self.require(from, "MoveAllTasks")?.workers.extend(moved);
                return Err(e);
            }
        };
        self.require(to, "MoveAllTasks")?.workers.extend(moved);
        Ok(pids)
    }

    pub(crate) fn set_frozen(&mut self, ctx: &Ctx, name: &str, frozen: bool) -> Result<()> {
        let cg = self.require(
            name,
            if frozen {
                "FreezeCgroup"
            } else {
                "UnfreezeCgroup"
            },
        )?;
        ctx.cgroups.set_frozen(name, frozen)?;
        cg.frozen = frozen;
        Ok(())
    }

    /// Stops what `owner` started and removes its cgroups, newest first.
    /// Returns the reports of every worker stopped in this phase, and what
    /// could not be cleaned up.
    pub(crate) fn teardown(
        &mut self,
        ctx: &Ctx,
        owner: Owner,
    ) -> (Vec<CgroupReports>, Vec<String>) {
        let mut errors = Vec::new();
        self.payloads.kill_owned(owner, &mut errors);
        // Everything this teardown stops hears it at once (see
        // `WorkloadHandle::request_stop`).
        for cg in &self.cgroups {
            for w in cg
                .workers
                .iter()
                .filter(|w| cg.owner == owner || w.owner == owner)
            {
                w.handle.request_stop();
            }
        }
        for w in self.runner.iter().filter(|w| w.owner == owner) {
            w.handle.request_stop();
        }
        let mut out = std::mem::take(&mut self.finished);
        for cg in &mut self.cgroups {
            // A cgroup that goes takes every worker inside with it.
            let going = cg.owner == owner;
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut cg.workers)
                .into_iter()
                .partition(|w| going || w.owner == owner);
            cg.workers = rest;
            if cg.frozen && (!mine.is_empty() || going) {
                if let Err(e) = ctx.cgroups.unfreeze(&cg.name) {
                    errors.push(format!("thawing {}: {e:#}", cg.name));
                }
                cg.frozen = false;
            }
            out.extend(collect(&cg.name, mine));
        }
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.runner)
            .into_iter()
            .partition(|w| w.owner == owner);
        self.runner = rest;
        out.extend(collect("", mine));
        for o in out.iter_mut().filter(|o| o.ancestry_weights.is_empty()) {
            o.ancestry_weights = self.ancestry_weights(&o.cgroup);
        }
        while let Some(pos) = self.cgroups.iter().rposition(|c| c.owner == owner) {
            let cg = self.cgroups.remove(pos);
            self.weights.remove(&cg.name);
            match remove_cgroup_tolerant(ctx.cgroups, &cg.name) {
                Ok(()) => ctx.emit(
                    Some(ktstr_protocol::model::OpKind::RemoveCgroup),
                    format!("teardown removed {}", cg.name),
                ),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        (out, errors)
    }
}
