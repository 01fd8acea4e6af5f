//! How much the host takes from the guest, and what it refuses: the guest
//! runs the code under test and is untrusted, so what it sends is bounded
//! (bytes per plan, log bytes kept, undecodable frames) and checked against
//! the protocol's order (one Hello, a verdict only while a plan runs, no
//! step the plan does not have). Every breach is a named [`RunFailure`].
//!
//! Pure bookkeeping over messages the caller already decoded: no ring, no
//! VM, no outcome.

use ktstr_protocol::message::GuestMsg;
use ktstr_protocol::model::Plan;

use crate::outcome::{RunFailure, Stage};

/// Undecodable frames one guest may send before the run ends (a single one
/// is skipped and noted; a stream of them is a broken or hostile agent).
pub const BAD_FRAME_LIMIT: u32 = 64;
/// Bytes one plan may receive from the guest in all: the largest honest
/// plans (many workers' reports, captures' requests) stay under 1 MiB.
pub const PLAN_BYTES_LIMIT: u64 = 32 << 20;
/// Log text kept per plan; lines past it are counted, not kept.
pub const LOG_KEEP_BYTES: u64 = 1 << 20;
/// Messages handled per drain before the caller checks its clocks again,
/// so a guest that never stops talking cannot starve the timeouts.
pub const DRAIN_BATCH: usize = 1024;

/// What the guest has sent so far, against the limits.
#[derive(Debug, Default)]
pub struct Intake {
    pub bad_frames: u32,
    /// Wire bytes since the running plan was sent (or since boot).
    pub plan_bytes: u64,
    /// Log text kept for the running plan.
    pub log_bytes: u64,
    /// Log lines not kept for the running plan.
    pub dropped_lines: u64,
    /// A Hello has arrived.
    pub hello_seen: bool,
}

/// What to do with a log line.
#[derive(Debug, PartialEq, Eq)]
pub enum LogFate {
    Keep,
    /// The first line over the limit: keep a note saying so instead.
    DropFirst,
    Drop,
}

impl Intake {
    /// A new plan was sent: its byte and log budgets start afresh.
    pub fn plan_sent(&mut self) {
        self.plan_bytes = 0;
        self.log_bytes = 0;
        self.dropped_lines = 0;
    }

    /// Counts one frame of `len` wire bytes.
    pub fn frame(&mut self, len: usize) -> Result<(), RunFailure> {
        self.plan_bytes += len as u64;
        if self.plan_bytes > PLAN_BYTES_LIMIT {
            return Err(RunFailure::GuestFlood {
                bytes: self.plan_bytes,
                limit: PLAN_BYTES_LIMIT,
            });
        }
        Ok(())
    }

    /// Counts one undecodable frame.
    pub fn bad_frame(&mut self, error: &str) -> Result<(), RunFailure> {
        self.bad_frames += 1;
        if self.bad_frames >= BAD_FRAME_LIMIT {
            return Err(RunFailure::BadFrames {
                count: self.bad_frames,
                last: error.to_string(),
            });
        }
        Ok(())
    }

    /// Whether a log line of `len` bytes is kept.
    pub fn log_line(&mut self, len: usize) -> LogFate {
        if self.log_bytes + len as u64 <= LOG_KEEP_BYTES {
            self.log_bytes += len as u64;
            return LogFate::Keep;
        }
        self.dropped_lines += 1;
        if self.dropped_lines == 1 {
            LogFate::DropFirst
        } else {
            LogFate::Drop
        }
    }

    /// Checks `msg` against the protocol's order: `plan` is the running
    /// plan (`None` before the first), `stage` where the run stands.
    pub fn check_order(
        &mut self,
        msg: &GuestMsg,
        plan: Option<&Plan>,
        stage: Stage,
    ) -> Result<(), RunFailure> {
        let violation = |what: String| Err(RunFailure::ProtocolViolation(what));
        if let GuestMsg::Hello(_) = msg {
            if self.hello_seen {
                return violation("a second Hello".into());
            }
            self.hello_seen = true;
            return Ok(());
        }
        let Some(plan) = plan else {
            return match msg {
                GuestMsg::Log { .. } | GuestMsg::Error(_) | GuestMsg::Done => Ok(()),
                other => violation(format!("{} before any plan", name(other))),
            };
        };
        if let GuestMsg::Verdict(_) = msg
            && stage != Stage::Running
        {
            return violation(format!("a verdict while {stage}"));
        }
        // A custom scenario numbers its own steps; a plan of data has
        // exactly its steps, from 1.
        let steps = plan.steps.len();
        if plan.custom.is_none() && steps > 0 {
            let step = match msg {
                GuestMsg::StepStarted { step, .. }
                | GuestMsg::StepFinished { step, .. }
                | GuestMsg::WorkerReports { step, .. } => Some(usize::from(*step)),
                GuestMsg::StimulusEvent(e) => Some(usize::from(e.step)),
                GuestMsg::Timeline(rows) => rows.iter().map(|r| usize::from(r.step)).max(),
                _ => None,
            };
            if let Some(step) = step.filter(|&s| s > steps) {
                return violation(format!(
                    "{} for step {step} of a {steps}-step plan",
                    name(msg)
                ));
            }
        }
        Ok(())
    }
}

/// A message's name for errors.
pub fn name(msg: &GuestMsg) -> &'static str {
    match msg {
        GuestMsg::Hello(_) => "Hello",
        GuestMsg::StimulusEvent(_) => "a stimulus event",
        GuestMsg::StepStarted { .. } => "StepStarted",
        GuestMsg::StepFinished { .. } => "StepFinished",
        GuestMsg::WorkerReports { .. } => "WorkerReports",
        GuestMsg::Timeline(_) => "Timeline",
        GuestMsg::Verdict(_) => "a verdict",
        GuestMsg::Log { .. } => "a log line",
        GuestMsg::Error(_) => "an error",
        GuestMsg::KernelInfo(_) => "KernelInfo",
        GuestMsg::KernelRequest(_) => "a kernel request",
        GuestMsg::Done => "Done",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_protocol::message::LogLevel;
    use ktstr_protocol::model::{HoldSpec, Step};
    use std::time::Duration;

    fn two_steps() -> Plan {
        Plan::new(
            "p",
            vec![Step::hold(HoldSpec::FULL), Step::hold(HoldSpec::FULL)],
            Duration::from_secs(1),
        )
    }

    fn reports(step: u16) -> GuestMsg {
        GuestMsg::WorkerReports {
            step,
            cgroup: "cg".into(),
            reports: vec![],
        }
    }

    #[test]
    fn floods_and_garbage_end_at_their_limits() {
        let mut i = Intake::default();
        assert!(i.frame(PLAN_BYTES_LIMIT as usize).is_ok());
        let e = i.frame(1).unwrap_err();
        assert_eq!(e.kind(), "guest_flood");
        i.plan_sent();
        assert!(i.frame(1000).is_ok(), "a new plan, a new budget");
        for _ in 1..BAD_FRAME_LIMIT {
            assert!(i.bad_frame("crc").is_ok());
        }
        assert_eq!(i.bad_frame("crc").unwrap_err().kind(), "bad_frames");
    }

    #[test]
    fn log_lines_past_the_budget_are_dropped_with_one_note() {
        let mut i = Intake::default();
        assert_eq!(i.log_line(LOG_KEEP_BYTES as usize), LogFate::Keep);
        assert_eq!(i.log_line(1), LogFate::DropFirst);
        assert_eq!(i.log_line(1), LogFate::Drop);
        assert_eq!(i.dropped_lines, 2);
        i.plan_sent();
        assert_eq!(i.log_line(10), LogFate::Keep);
    }

    #[test]
    fn messages_out_of_order_are_violations() {
        let plan = two_steps();
        let mut i = Intake::default();
        let log = GuestMsg::Log {
            level: LogLevel::Info,
            text: "x".into(),
        };
        assert!(i.check_order(&log, None, Stage::Booting).is_ok());
        let early = i.check_order(&reports(1), None, Stage::Booting);
        assert!(format!("{}", early.unwrap_err()).contains("before any plan"));
        assert!(
            i.check_order(&reports(2), Some(&plan), Stage::Running)
                .is_ok()
        );
        let e = i
            .check_order(&reports(3), Some(&plan), Stage::Running)
            .unwrap_err();
        assert_eq!(e.kind(), "protocol_violation");
        assert!(e.to_string().contains("step 3 of a 2-step plan"), "{e}");
        let verdict = GuestMsg::Verdict(ktstr_protocol::message::Verdict {
            passed: true,
            result: ktstr_protocol::model::AssertResult::pass(),
            elapsed_ms: 1,
        });
        assert!(i.check_order(&verdict, Some(&plan), Stage::Running).is_ok());
        assert!(
            i.check_order(&verdict, Some(&plan), Stage::Finishing)
                .is_err()
        );
        let custom = Plan::custom("c", "f", Duration::from_secs(1));
        assert!(
            i.check_order(&reports(40), Some(&custom), Stage::Running)
                .is_ok()
        );
    }
}
