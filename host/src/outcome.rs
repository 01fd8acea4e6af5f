//! What a run produced ([`RunOutcome`]) and why it failed ([`RunFailure`]):
//! plain data the runner fills in and [`crate::report`] formats.
//!
//! This module only defines the shapes and their text; it drives nothing
//! and knows no VM.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ktstr_protocol::MsgError;
use ktstr_protocol::message::{AgentError, Hello, StimulusEvent, Verdict};
use ktstr_protocol::model::{AssertDetail, KernelValue, SchedulerSpec, WorkerReport};
use serde::{Serialize, Serializer};

use crate::vm::{VmError, VmExit};

/// One step as the guest reported it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StepRecord {
    pub step: u16,
    pub label: String,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub passed: Option<bool>,
    /// sched_ext ops name (or "EEVDF") as the step started.
    pub scheduler_at_start: Option<String>,
    /// sched_ext ops name (or "EEVDF") as the step ended.
    pub scheduler: Option<String>,
}

/// The worker reports of one cgroup in one step.
#[derive(Clone, Debug, Serialize)]
pub struct StepReports {
    pub step: u16,
    pub cgroup: String,
    pub reports: Vec<WorkerReport>,
}

/// Timings in ms from the command start.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    pub launch_ms: u64,
    pub hello_ms: Option<u64>,
    pub verdict_ms: Option<u64>,
    pub exit_ms: u64,
    /// Guest uptime at Hello.
    pub guest_boot_ms: Option<u64>,
}

/// The parts of Hello worth keeping in a result.
#[derive(Clone, Debug, Serialize)]
pub struct HelloSummary {
    pub agent_version: String,
    pub kernel_release: String,
    pub sched_ext_state: Option<String>,
    pub online_cpus: usize,
    pub llcs: Vec<Vec<u32>>,
    pub numa_nodes: Vec<Vec<u32>>,
    pub distances: Vec<Vec<u32>>,
}

impl From<&Hello> for HelloSummary {
    fn from(h: &Hello) -> Self {
        Self {
            agent_version: h.agent_version.clone(),
            kernel_release: h.kernel_release.clone(),
            sched_ext_state: h.sched_ext_state.clone(),
            online_cpus: h.topology.online_cpus.len(),
            llcs: h.topology.llcs.clone(),
            numa_nodes: h.topology.numa_nodes.clone(),
            distances: h.topology.distances.clone(),
        }
    }
}

/// Where a run stood, for timeouts and messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stage {
    /// From launch until the agent's Hello.
    #[default]
    Booting,
    /// From the plan until the verdict.
    Running,
    /// From the verdict until Done.
    Finishing,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Booting => "booting",
            Stage::Running => "running",
            Stage::Finishing => "finishing",
        })
    }
}

/// Why a run failed. Its `Display` is the line a person reads; JSON carries
/// a stable `kind` beside that message.
#[derive(Clone, Debug)]
pub enum RunFailure {
    /// The plan was refused on the host before any guest saw it (no VM
    /// was started for it).
    InvalidPlan(String),
    /// Ctrl-C or SIGTERM (`by` names which).
    Interrupted { by: &'static str },
    /// No Hello within the boot limit.
    BootTimeout { after: Duration },
    /// The guest stopped reporting before Done.
    RunTimeout { after: Duration, stage: Stage },
    /// The VM ended before the agent said Done.
    VmEnded { exit: VmExit, stage: Stage },
    /// The backend could not tell whether the VM still runs.
    VmCheck(Arc<VmError>),
    /// A ring end could not be opened.
    RingOpen {
        ring: &'static str,
        error: Arc<ktstr_protocol::ShmError>,
    },
    /// The guest->host stream cannot be read any further.
    RingCorrupt(MsgError),
    /// The guest overwrote the shared-memory header (what it holds now).
    HeaderOverwritten(String),
    /// Too many frames from the guest could not be decoded.
    BadFrames { count: u32, last: String },
    /// The guest sent more than the host takes for one plan.
    GuestFlood { bytes: u64, limit: u64 },
    /// A guest message out of the protocol's order.
    ProtocolViolation(String),
    /// The plan could not be sent.
    SendPlan(MsgError),
    /// A message other than the plan could not be sent.
    Send { what: &'static str, error: MsgError },
    /// The guest could not be thawed after a cold kernel access.
    Thaw(Arc<VmError>),
    /// The host monitor saw a CPU stall (the run ends right then).
    Stall(crate::monitor::Finding),
    /// The guest sees another topology than the one requested.
    TopologyMismatch { want: String, diff: Vec<String> },
    /// The agent reported an error (the first one).
    Agent(AgentError),
    /// The agent said Done without a verdict.
    NoVerdict,
    /// The verdict failed these checks.
    ChecksFailed(Vec<AssertDetail>),
}

impl RunFailure {
    /// A short stable name for machine-readable output.
    pub fn kind(&self) -> &'static str {
        match self {
            RunFailure::InvalidPlan(_) => "invalid_plan",
            RunFailure::Interrupted { .. } => "interrupted",
            RunFailure::BootTimeout { .. } => "boot_timeout",
            RunFailure::RunTimeout { .. } => "run_timeout",
            RunFailure::VmEnded { .. } => "vm_ended",
            RunFailure::VmCheck(_) => "vm_check",
            RunFailure::RingOpen { .. } => "ring_open",
            RunFailure::RingCorrupt(_) => "ring_corrupt",
            RunFailure::HeaderOverwritten(_) => "header_overwritten",
            RunFailure::BadFrames { .. } => "bad_frames",
            RunFailure::GuestFlood { .. } => "guest_flood",
            RunFailure::ProtocolViolation(_) => "protocol_violation",
            RunFailure::SendPlan(_) => "send_plan",
            RunFailure::Send { .. } => "send",
            RunFailure::Thaw(_) => "thaw",
            RunFailure::Stall(_) => "stall",
            RunFailure::TopologyMismatch { .. } => "topology_mismatch",
            RunFailure::Agent(_) => "agent_error",
            RunFailure::NoVerdict => "no_verdict",
            RunFailure::ChecksFailed(_) => "checks_failed",
        }
    }
}

/// Seconds with one decimal, the way progress lines show time.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunFailure::InvalidPlan(why) => write!(f, "invalid plan, refused before boot: {why}"),
            RunFailure::Interrupted { by } => write!(f, "interrupted ({by})"),
            RunFailure::BootTimeout { after } => write!(
                f,
                "timed out after {} waiting for the agent's Hello",
                secs(*after)
            ),
            RunFailure::RunTimeout { after, stage } => write!(
                f,
                "timed out after {} while {stage} (the guest stopped reporting)",
                secs(*after)
            ),
            RunFailure::VmEnded { exit, stage } => write!(
                f,
                "the VM ended ({exit}) before the agent said Done (while {stage})"
            ),
            RunFailure::VmCheck(e) => write!(f, "checking the VM: {}", crate::errors::chain(&**e)),
            RunFailure::RingOpen { ring, error } => write!(
                f,
                "opening the {ring} ring: {}",
                crate::errors::chain(&**error)
            ),
            RunFailure::RingCorrupt(e) => write!(f, "the guest->host ring is corrupt: {e}"),
            RunFailure::HeaderOverwritten(what) => write!(
                f,
                "the guest overwrote the shared-memory header ({what}); the run was ended"
            ),
            RunFailure::BadFrames { count, last } => write!(
                f,
                "{count} frames from the guest could not be decoded (the last: {last}); the run was ended"
            ),
            RunFailure::GuestFlood { bytes, limit } => write!(
                f,
                "the guest sent {bytes} bytes for one plan, more than the {limit} the host takes; the run was ended"
            ),
            RunFailure::ProtocolViolation(what) => {
                write!(f, "the guest broke the protocol: {what}")
            }
            RunFailure::SendPlan(e) => write!(f, "sending the plan: {e}"),
            RunFailure::Send { what, error } => write!(f, "sending the {what}: {error}"),
            RunFailure::Thaw(e) => write!(
                f,
                "thawing the guest after a cold kernel access: {}",
                crate::errors::chain(&**e)
            ),
            RunFailure::Stall(s) => write!(
                f,
                "the host monitor caught a stall in step {} at {} ms: {}",
                s.step, s.at_ms, s.message
            ),
            RunFailure::TopologyMismatch { want, diff } => write!(
                f,
                "the guest's topology differs from the requested {want}:\n  {}",
                diff.join("\n  ")
            ),
            RunFailure::Agent(e) => write!(f, "agent error in {}: {}", e.stage, e.message),
            RunFailure::NoVerdict => f.write_str("the guest finished without a verdict"),
            RunFailure::ChecksFailed(details) => {
                let details: Vec<String> = details
                    .iter()
                    .map(|d| format!("{}: {}", d.kind, d.message))
                    .collect();
                write!(f, "checks failed: {}", details.join("; "))
            }
        }
    }
}

impl Serialize for RunFailure {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Repr<'a> {
            kind: &'a str,
            message: String,
        }
        Repr {
            kind: self.kind(),
            message: self.to_string(),
        }
        .serialize(s)
    }
}

/// Everything a run produced.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunOutcome {
    pub backend: String,
    pub topology: String,
    pub scenario: String,
    /// The scheduler the plan started (name, binary, arguments, ops).
    pub scheduler: Option<SchedulerSpec>,
    /// No failure (a skipped run also has none).
    pub passed: bool,
    /// The scenario could not run here (for example on this topology);
    /// counted apart from passed runs.
    pub skipped: bool,
    /// Why it was skipped.
    pub skip_reason: Option<String>,
    /// Why the run failed, when it did.
    pub failure: Option<RunFailure>,
    pub hello: Option<HelloSummary>,
    pub steps: Vec<StepRecord>,
    pub events: Vec<StimulusEvent>,
    pub reports: Vec<StepReports>,
    pub verdict: Option<Verdict>,
    pub agent_errors: Vec<AgentError>,
    pub logs: Vec<String>,
    pub vm_exit: String,
    /// The share (0 to 1) of the plan's time the host kept the guest from
    /// running (its threads waited for a host CPU), where the backend can
    /// tell: rates are judged over the time the guest could run.
    pub host_wait_share: Option<f64>,
    pub timings: Timings,
    /// Console tail, kept when the run failed.
    pub console_tail: Option<String>,
    /// Host-side kernel-memory access during this plan, when there was any.
    pub kernel: Option<KernelAccessLog>,
    /// The host monitor's samples and findings, when the plan asked for it.
    pub monitor: Option<crate::monitor::MonitorLog>,
    /// Snapshots taken during this plan (ops, and the state at a stall).
    pub captures: Vec<crate::monitor::Capture>,
    /// The agent's samples of each live cgroup's CPU usage and its
    /// workers' progress while steps held, in time order (at most
    /// `TimelineSpec::MAX_ROWS`); for the report pages, not judged.
    pub timeline: Vec<ktstr_protocol::model::TimelineSample>,
}

/// What the host did in the guest kernel's memory for one plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KernelAccessLog {
    /// Runtime address of `_text` (KASLR applied) and its offset from the
    /// link address.
    pub text_va: u64,
    pub kaslr_offset: i64,
    /// Physical address of `_text`.
    pub text_pa: u64,
    pub page_offset_base: u64,
    pub paging_levels: u8,
    /// The guest's `/proc/version` and CONFIG_HZ.
    pub proc_version: String,
    pub hz: u32,
    /// Requests served, freezes taken for them, and the longest freeze.
    pub requests: u32,
    pub freezes: u32,
    pub max_frozen_us: u64,
    /// When each request arrived and how long serving it took, in order
    /// (the first [`MAX_SERVED_RECORDS`]).
    pub served: Vec<ServedRequest>,
    /// Every read, in order.
    pub reads: Vec<KernelRead>,
    /// Accesses that failed, with why.
    pub errors: Vec<String>,
}

/// Most per-request records a plan's log keeps; later requests still
/// count in `requests` and `freezes`.
pub const MAX_SERVED_RECORDS: usize = 100_000;

/// One kernel request as the host saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServedRequest {
    /// When the host took it off the ring, in µs since the plan was sent.
    pub at_us: u64,
    /// From taking it off the ring to the reply being in the ring (a cold
    /// request's reply goes in before the thaw).
    pub service_us: u64,
    /// How long the guest was frozen for it, freeze call to thaw return
    /// (0 for a hot request).
    pub frozen_us: u64,
}

/// One value the host read for a scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelRead {
    /// The step that asked (the agent's `current_step` word).
    pub step: u16,
    pub tag: String,
    pub target: String,
    pub cold: bool,
    pub value: KernelValue,
}

impl KernelAccessLog {
    /// Keeps `r` unless [`MAX_SERVED_RECORDS`] are kept already.
    pub fn record(&mut self, r: ServedRequest) {
        if self.served.len() < MAX_SERVED_RECORDS {
            self.served.push(r);
        }
    }

    /// The value of the first read tagged `tag`.
    pub fn read(&self, tag: &str) -> Option<&KernelValue> {
        self.reads.iter().find(|r| r.tag == tag).map(|r| &r.value)
    }
}

impl RunOutcome {
    /// A scenario skipped before anything booted, because `topology` lacks
    /// what it needs.
    pub fn skipped(scenario: &str, topology: &str, reason: String) -> Self {
        Self {
            scenario: scenario.to_string(),
            topology: topology.to_string(),
            passed: true,
            skipped: true,
            skip_reason: Some(reason),
            vm_exit: "not booted".into(),
            ..Default::default()
        }
    }

    /// The failure as text; empty when the run passed.
    pub fn failure_text(&self) -> String {
        self.failure
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use ktstr_protocol::model::DetailKind;

    use super::*;

    #[test]
    fn failures_read_as_sentences_and_serialize_with_a_kind() {
        let f = RunFailure::VmEnded {
            exit: VmExit::Failed {
                status: "signal: 9 (SIGKILL)".into(),
                stderr: String::new(),
            },
            stage: Stage::Running,
        };
        assert_eq!(
            f.to_string(),
            "the VM ended (VMM failed (signal: 9 (SIGKILL))) before the agent said Done (while running)"
        );
        let j = serde_json::to_value(&f).unwrap();
        assert_eq!(j["kind"], "vm_ended");
        assert_eq!(j["message"], f.to_string());
        let checks = RunFailure::ChecksFailed(vec![AssertDetail {
            kind: DetailKind::Starved,
            message: "cg_0 worker 1 made no progress".into(),
        }]);
        assert_eq!(
            checks.to_string(),
            "checks failed: Starved: cg_0 worker 1 made no progress"
        );
        assert!(
            RunFailure::BootTimeout {
                after: Duration::from_millis(1500)
            }
            .to_string()
            .contains("1.5 s")
        );
    }
}
