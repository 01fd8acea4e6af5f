//! What a running work kind gets from its worker ([`WorkEnv`]: meter, spec,
//! rng, allowed CPUs, phase deadline) and what it remembers between visits
//! to its phase ([`LeafState`]).
//!
//! Below the kinds and their dispatcher: it must not import either. Runs
//! only inside a forked worker, so it takes no lock and does not log.

use std::time::Instant;

use ktstr_protocol::model::WorkSpec;
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, ClockNanosleepFlags, clock_nanosleep};

use super::measure::Meter;
use super::stop::{POLL, stop_requested};
use crate::rng::Rng;

/// What a kind gets while it runs.
pub(crate) struct WorkEnv<'a, 'e> {
    pub meter: &'a mut Meter<'e>,
    pub spec: &'a WorkSpec,
    pub rng: Rng,
    /// The CPUs this worker was allowed when it started.
    pub allowed_cpus: Vec<usize>,
    /// End of the current Sequence phase, if any; set only by the Sequence
    /// runner.
    pub(super) until: Option<Instant>,
}

impl<'a, 'e> WorkEnv<'a, 'e> {
    pub(crate) fn new(
        meter: &'a mut Meter<'e>,
        spec: &'a WorkSpec,
        allowed_cpus: Vec<usize>,
    ) -> Self {
        Self {
            meter,
            spec,
            rng: Rng::seeded(),
            allowed_cpus,
            until: None,
        }
    }

    /// Whether to keep working: no stop requested and the phase not over.
    pub(crate) fn running(&self) -> bool {
        !stop_requested() && self.until.is_none_or(|u| Instant::now() < u)
    }

    /// Sleeps in [`POLL`] steps until [`Self::running`] turns false: what a
    /// worker does when its partners have gone.
    pub(crate) fn idle_until_done(&mut self) {
        let step = TimeSpec::from_duration(POLL);
        while self.running() {
            // Unlike std::thread::sleep, a bare sleep ends early on the stop
            // signal (EINTR).
            let _ = clock_nanosleep(
                ClockId::CLOCK_MONOTONIC,
                ClockNanosleepFlags::empty(),
                &step,
            );
        }
        self.meter.resume();
    }
}

/// What a kind remembers between visits to its phase.
#[derive(Default)]
pub(crate) struct LeafState {
    /// Pipe kinds: times this phase was entered (tags messages).
    pub epoch: u64,
    /// Fan-out waiters: the last round handled.
    pub round: u32,
}
