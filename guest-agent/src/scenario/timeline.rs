//! The agent's time series: when a sample is due, the rows waiting to be
//! sent, and the per-plan cap ([`TimelineSpec::MAX_ROWS`]). Rows go out
//! through the context's observer a batch at a time, and at every step
//! end, so a run that dies later still has what came before.
//!
//! What a row holds is read by [`super::state::RunState::sample_now`]; this
//! module must not touch cgroups or workers itself.

use std::time::{Duration, Instant};

use ktstr_protocol::model::{TimelineSample, TimelineSpec};

use super::ctx::{Ctx, ScenarioEvent};

/// Rows kept before they are sent, between step ends.
const BATCH_ROWS: usize = 128;

/// The sampling schedule and the rows not yet sent.
pub(crate) struct Sampler {
    every: Duration,
    next: Option<Instant>,
    pending: Vec<TimelineSample>,
    /// Rows taken so far in this plan.
    taken: usize,
    /// The cap was reached (said once).
    full: bool,
}

impl Sampler {
    /// Samples every `every` (zero: never; see [`TimelineSpec::interval`]).
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            next: None,
            pending: Vec::new(),
            taken: 0,
            full: false,
        }
    }

    /// Whether samples are taken at all (on, and under the cap).
    pub(crate) fn active(&self) -> bool {
        !self.every.is_zero() && !self.full
    }

    /// When the next sample is due; `None` when none will be.
    pub(crate) fn due(&self) -> Option<Instant> {
        if !self.active() {
            return None;
        }
        Some(self.next.unwrap_or_else(Instant::now))
    }

    /// Whether a sample is due at `now`.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.active() && self.next.is_none_or(|n| n <= now)
    }

    /// Takes `rows` as the sample of `now` and schedules the next one a
    /// period later (from the schedule, or from now when the schedule fell
    /// behind: a late sample is not followed by a burst).
    pub(crate) fn push(&mut self, ctx: &Ctx, now: Instant, rows: Vec<TimelineSample>) {
        if !self.active() {
            return;
        }
        let next = self.next.map_or(now, |n| n + self.every);
        self.next = Some(if next > now { next } else { now + self.every });
        let room = TimelineSpec::MAX_ROWS.saturating_sub(self.taken);
        if rows.len() > room {
            self.full = true;
            tracing::warn!(
                "timeline: {} rows taken, the most a plan keeps; no more samples in this plan",
                self.taken
            );
        }
        let rows: Vec<_> = rows.into_iter().take(room).collect();
        self.taken += rows.len();
        self.pending.extend(rows);
        if self.pending.len() >= BATCH_ROWS {
            self.flush(ctx);
        }
    }

    /// Sends the rows waiting, if any.
    pub(crate) fn flush(&mut self, ctx: &Ctx) {
        if !self.pending.is_empty() {
            ctx.observe(ScenarioEvent::Timeline(std::mem::take(&mut self.pending)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::cgroup::MemCgroups;
    use crate::topology::TestTopology;

    fn row(at_ms: u64) -> TimelineSample {
        TimelineSample {
            at_ms,
            cgroup: "cg".into(),
            ..Default::default()
        }
    }

    #[test]
    fn samples_follow_the_schedule_batch_and_stop_at_the_cap() {
        let cg = MemCgroups::new();
        let topo = TestTopology::synthetic(2, 1);
        let sent = RefCell::new(Vec::new());
        let obs = |e: ScenarioEvent| {
            if let ScenarioEvent::Timeline(rows) = e {
                sent.borrow_mut().push(rows.len());
            }
        };
        let ctx = Ctx::builder(&cg, &topo).observer(&obs).build();
        let every = Duration::from_millis(100);
        let mut s = Sampler::new(every);
        let t0 = Instant::now();
        assert!(s.is_due(t0), "the first sample is due at once");
        s.push(&ctx, t0, vec![row(0)]);
        assert!(!s.is_due(t0 + Duration::from_millis(99)));
        assert!(s.is_due(t0 + every));
        // A late sample does not bring a burst after it.
        let late = t0 + Duration::from_millis(450);
        s.push(&ctx, late, vec![row(450)]);
        assert_eq!(s.due(), Some(late + every));
        assert!(sent.borrow().is_empty(), "rows wait for a batch or a flush");
        s.flush(&ctx);
        assert_eq!(*sent.borrow(), [2]);
        s.push(&ctx, late + every, vec![row(0); BATCH_ROWS]);
        assert_eq!(*sent.borrow(), [2, BATCH_ROWS], "a full batch goes at once");
        let many = vec![row(0); TimelineSpec::MAX_ROWS];
        s.push(&ctx, late + every * 2, many);
        assert!(!s.active() && s.due().is_none(), "the cap ends sampling");
        s.flush(&ctx);
        let total: usize = sent.borrow().iter().sum();
        assert_eq!(total, TimelineSpec::MAX_ROWS);
        assert!(Sampler::new(Duration::ZERO).due().is_none());
    }

    #[test]
    fn holds_sample_each_live_cgroup_stamped_with_its_step() {
        use ktstr_protocol::model::{Assert, CgroupDef, HoldSpec, Op};

        use crate::scenario::{Step, execute_steps};

        let cg = MemCgroups::new();
        let topo = TestTopology::synthetic(2, 1);
        let rows = RefCell::new(Vec::new());
        let starts = RefCell::new(Vec::new());
        let obs = |e: ScenarioEvent| match e {
            ScenarioEvent::Timeline(r) => rows.borrow_mut().extend(r),
            ScenarioEvent::StepStarted {
                step, elapsed_ms, ..
            } => starts.borrow_mut().push((step, elapsed_ms)),
            _ => {}
        };
        let every = Duration::from_millis(20);
        let ctx = Ctx::builder(&cg, &topo)
            .duration(Duration::from_millis(200))
            .assert(Assert::NONE)
            .timeline(TimelineSpec::every(every))
            .observer(&obs)
            .build();
        let hold = HoldSpec::fixed(Duration::from_millis(200));
        let steps = vec![
            Step::with_defs(vec![CgroupDef::named("a").workers(2)], hold),
            Step::with_op(Op::add_cgroup("b"), hold),
        ];
        execute_steps(&ctx, steps).unwrap();
        let rows = rows.borrow();
        let starts = starts.borrow();
        let of = |step: u16, name: &str| -> Vec<&TimelineSample> {
            rows.iter()
                .filter(|r| r.step == step && r.cgroup == name)
                .collect()
        };
        // About one sample per 20 ms over each 200 ms hold.
        let a = of(1, "a");
        assert!((5..=12).contains(&a.len()), "{} samples of a", a.len());
        assert!(
            a.iter().all(|r| r.work_units.len() == 2),
            "a worker slot each"
        );
        let last = a.last().unwrap().work_units.iter().sum::<u64>();
        let first = a.first().unwrap().work_units.iter().sum::<u64>();
        assert!(
            last > first,
            "the workers' progress shows: {first} -> {last}"
        );
        assert!(a.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        // The in-memory double has no clock; a real cgroup's is read.
        assert!(a.iter().all(|r| r.usage_usec.is_none()));
        assert!(of(2, "a").is_empty(), "a step's cgroup ends with it");
        let b = of(2, "b");
        assert!(!b.is_empty() && b.iter().all(|r| r.work_units.is_empty()));
        // Every row lies inside the step it is stamped with.
        for r in rows.iter() {
            let (_, start) = starts[usize::from(r.step) - 1];
            let end = starts.get(usize::from(r.step)).map_or(u64::MAX, |s| s.1);
            assert!(
                start <= r.at_ms && r.at_ms <= end,
                "{r:?} outside {start}..{end}"
            );
        }
    }
}
