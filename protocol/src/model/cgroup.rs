//! `CgroupDef`: create a cgroup, give it a cpuset, start its workers.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::cpuset::CpusetSpec;
use super::error::ModelError;
use super::workload::{AffinityIntent, MemPolicy, MpolFlags, SchedPolicy, WorkSpec, WorkType};

/// A cgroup with its cpuset and one or more concurrent work groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CgroupDef {
    /// Path relative to the scenario's parent cgroup (`a/b` nests).
    pub name: Cow<'static, str>,
    pub cpuset: Option<CpusetSpec>,
    /// Work groups; never empty.
    pub works: Vec<WorkSpec>,
    /// Whether a gauntlet work-type override may replace the work type.
    pub swappable: bool,
    /// `cpu.weight` to write (1..=10000; the kernel's default is 100).
    #[serde(default)]
    pub cpu_weight: Option<u32>,
    /// True until the caller shapes the work: the first `work()` call then
    /// replaces the implicit default group instead of adding to it.
    implicit_work: bool,
}

impl CgroupDef {
    /// A cgroup with no cpuset and one default (CpuSpin) work group.
    pub fn named(name: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            cpuset: None,
            works: vec![WorkSpec::default()],
            swappable: false,
            cpu_weight: None,
            implicit_work: true,
        }
    }

    /// Sets the cpuset.
    pub fn with_cpuset(mut self, spec: CpusetSpec) -> Self {
        self.cpuset = Some(spec);
        self
    }

    /// Adds a concurrent work group (the first call replaces the default).
    pub fn work(mut self, work: WorkSpec) -> Self {
        if std::mem::take(&mut self.implicit_work) {
            self.works.clear();
        }
        self.works.push(work);
        self
    }

    fn last(&mut self) -> &mut WorkSpec {
        self.implicit_work = false;
        if self.works.is_empty() {
            self.works.push(WorkSpec::default());
        }
        let last = self.works.len() - 1;
        &mut self.works[last]
    }

    /// Sets the worker count of the latest work group.
    pub fn workers(mut self, n: usize) -> Self {
        self.last().num_workers = Some(n);
        self
    }

    /// Sets the work type of the latest work group.
    pub fn work_type(mut self, wt: WorkType) -> Self {
        self.last().work_type = wt;
        self
    }

    /// Sets the scheduling policy of the latest work group.
    pub fn sched_policy(mut self, p: SchedPolicy) -> Self {
        self.last().sched_policy = p;
        self
    }

    /// Sets the affinity intent of the latest work group.
    pub fn affinity(mut self, a: impl Into<AffinityIntent>) -> Self {
        self.last().affinity = a.into();
        self
    }

    /// Sets the memory policy of the latest work group.
    pub fn mem_policy(mut self, m: MemPolicy) -> Self {
        self.last().mem_policy = m;
        self
    }

    /// Sets the memory policy's flags of the last work group.
    pub fn mpol_flags(mut self, f: MpolFlags) -> Self {
        self.last().mpol_flags = f;
        self
    }

    /// Sets the cgroup's `cpu.weight` (1..=10000).
    pub fn cpu_weight(mut self, weight: u32) -> Self {
        self.cpu_weight = Some(weight);
        self
    }

    /// Opts into (or out of) gauntlet work-type overrides.
    pub fn swappable(mut self, yes: bool) -> Self {
        self.swappable = yes;
        self
    }

    /// Checks the name, cpuset and each work group.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad_name = self.name.is_empty()
            || self.name.starts_with('/')
            || self
                .name
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..");
        if bad_name {
            return Err(ModelError::CgroupName(self.name.to_string()));
        }
        if let Some(w) = self.cpu_weight
            && !(1..=10_000).contains(&w)
        {
            return Err(ModelError::CpuWeight {
                cgroup: self.name.to_string(),
                weight: w,
            });
        }
        if let Some(c) = &self.cpuset {
            c.validate()
                .map_err(|e| e.within(format!("cgroup {}", self.name)))?;
        }
        for w in &self.works {
            w.validate()
                .map_err(|e| e.within(format!("cgroup {}", self.name)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Work;

    #[test]
    fn builder_shapes_work_groups() {
        let d = CgroupDef::named("cg_0")
            .with_cpuset(CpusetSpec::disjoint(0, 2))
            .workers(4)
            .work_type(WorkType::YieldHeavy);
        assert_eq!(d.works.len(), 1);
        assert_eq!(d.works[0].num_workers, Some(4));
        assert_eq!(d.works[0].work_type, WorkType::YieldHeavy);

        let two = CgroupDef::named("cg_1")
            .work(Work::default().workers(2))
            .work(Work::default().workers(1).work_type(WorkType::Mixed));
        assert_eq!(two.works.len(), 2, "first work() replaces the default");
        assert!(!two.swappable);
    }

    #[test]
    fn names_are_checked() {
        assert!(CgroupDef::named("a/b").validate().is_ok());
        assert!(CgroupDef::named("w").cpu_weight(300).validate().is_ok());
        for bad in [0, 10_001] {
            assert!(matches!(
                CgroupDef::named("w").cpu_weight(bad).validate(),
                Err(ModelError::CpuWeight { weight, .. }) if weight == bad
            ));
        }
        for bad in ["", "/abs", "a//b", "../x", "a/."] {
            assert!(CgroupDef::named(bad).validate().is_err(), "{bad}");
        }
        assert!(
            CgroupDef::named("x")
                .work_type(WorkType::PipeIo)
                .workers(3)
                .validate()
                .is_err()
        );
    }
}
