//! The messages of both directions.
//!
//! Guest -> host: [`GuestMsg`]. Host -> guest: [`HostMsg`]. Both travel as
//! bincode (serde) payloads of ring frames ([`crate::channel`]); the
//! protocol version in the region header and in [`Hello`] must match this
//! build's [`crate::layout::PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

use crate::model::{
    AssertResult, KernelInfo, KernelReply, KernelRequest, ObservedTopology, OpKind, Plan,
    TimelineSample, WorkerReport,
};

/// The agent's first message: who it is and what machine it sees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub agent_version: String,
    pub protocol_version: u32,
    /// `uname -r` in the guest.
    pub kernel_release: String,
    pub topology: ObservedTopology,
    /// Guest uptime when Hello was sent, in ms.
    pub uptime_ms: u64,
    /// `/sys/kernel/sched_ext/state`, if the kernel has sched_ext.
    pub sched_ext_state: Option<String>,
}

/// Something the agent did to the system under test, stamped with time and
/// step so host-side captures can be lined up against it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StimulusEvent {
    /// ms since the plan reached the agent (the host's monitor stamps from
    /// sending it, a ring hop earlier).
    pub elapsed_ms: u64,
    /// 0 = baseline, N = step ordinal N.
    pub step: u16,
    /// The op that caused it, when one did.
    pub op: Option<OpKind>,
    pub detail: String,
}

/// The scenario's final outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub passed: bool,
    pub result: AssertResult,
    /// Scenario wall time in ms.
    pub elapsed_ms: u64,
}

/// Severity of a [`GuestMsg::Log`] line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// A failure the agent could still report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentError {
    /// Where it happened (`"mount"`, `"plan"`, `"step 2"`, ...).
    pub stage: String,
    pub message: String,
}

/// Guest -> host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GuestMsg {
    Hello(Hello),
    StimulusEvent(StimulusEvent),
    StepStarted {
        step: u16,
        elapsed_ms: u64,
        label: String,
        /// The scheduler running as the step started: the sched_ext ops
        /// name, or `"EEVDF"` when no sched_ext scheduler is enabled.
        #[serde(default)]
        scheduler: String,
    },
    StepFinished {
        step: u16,
        elapsed_ms: u64,
        result: AssertResult,
        /// The scheduler running as the step ended (see `StepStarted`).
        #[serde(default)]
        scheduler: String,
    },
    WorkerReports {
        step: u16,
        cgroup: String,
        reports: Vec<WorkerReport>,
    },
    Verdict(Verdict),
    Log {
        level: LogLevel,
        text: String,
    },
    Error(AgentError),
    /// What the host needs to reach this kernel's memory (once).
    KernelInfo(Box<KernelInfo>),
    /// Reads and writes of kernel memory for the host to do.
    KernelRequest(KernelRequest),
    /// Samples of the cgroups and workers live while steps held, in time
    /// order (sent a batch at a time).
    Timeline(Vec<TimelineSample>),
    /// Last message before power-off.
    Done,
}

/// Host -> guest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HostMsg {
    Plan(Box<Plan>),
    /// No more plans: say Done and power off.
    Finish,
    /// The answer to a `KernelRequest`.
    KernelReply(KernelReply),
    /// Stop what you are doing, report, and power off.
    Abort {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use std::time::{Duration, Instant};

    use super::*;
    use crate::codec;
    use crate::layout::{PROTOCOL_VERSION, ShmLayout};
    use crate::mapping::SharedMapping;
    use crate::model::*;
    use crate::shm::Shm;

    fn sample_topology() -> ObservedTopology {
        ObservedTopology {
            online_cpus: vec![0, 1, 2, 3],
            llcs: vec![vec![0, 1], vec![2, 3]],
            cores: vec![vec![0], vec![1], vec![2], vec![3]],
            numa_nodes: vec![vec![0, 1, 2, 3]],
            distances: vec![vec![10]],
        }
    }

    fn sample_report() -> WorkerReport {
        WorkerReport {
            tid: 42,
            cgroup: "cg_0".into(),
            work_type: "CpuSpin".into(),
            sched_policy: crate::model::SchedPolicy::Batch,
            work_units: 1000,
            iterations: 10,
            cpu_time_ns: 5_000_000,
            wall_time_ns: 10_000_000,
            off_cpu_ns: 5_000_000,
            migrations: 3,
            cpus_used: BTreeSet::from([0, 2]),
            max_gap: Some(GapInfo {
                gap_ms: 12,
                cpu: 2,
                at_ms: 400,
            }),
            wake_latency_us: vec![5, 7, 100],
            run_delay_ns: 77,
            run_count: 9,
            exit: WorkerExit::Signaled(9),
            cpu_epochs: vec![CpuEpoch {
                epoch: 1,
                cpus: vec![CpuSeen {
                    cpu: 2,
                    first_ms: 3,
                    last_ms: 90,
                }],
            }],
            cpusets: vec![CpusetInterval {
                epoch: 1,
                from_ms: 250,
                cpus: Some(BTreeSet::from([0, 2])),
            }],
            numa_pages: vec![(0, 200), (1, 56)],
        }
    }

    fn sample_plan() -> Plan {
        let defs = vec![
            CgroupDef::named("cg_0")
                .with_cpuset(CpusetSpec::disjoint(0, 2))
                .workers(2),
            CgroupDef::named("cg_1")
                .with_cpuset(CpusetSpec::exact([3]))
                .work(
                    Work::default()
                        .workers(2)
                        .work_type(WorkType::Bursty {
                            burst: Duration::from_millis(50),
                            sleep: Duration::from_millis(100),
                        })
                        .sched_policy(SchedPolicy::Fifo(10))
                        .affinity(AffinityIntent::random_subset([0, 1], 1)),
                )
                .swappable(true),
        ];
        let ops = vec![
            Op::add_cgroup("parent"),
            Op::set_cpuset("parent", CpusetSpec::range(0.0, 0.5)),
            Op::spawn_host(Work::default().workers(1)),
            Op::set_affinity("cg_0", AffinityIntent::SmtSiblingPair),
            Op::freeze_cgroup("cg_1"),
            Op::write_kernel_cold(KernelTarget::symbol("jiffies"), KernelValue::U64(1)),
            Op::read_kernel_hot("t", KernelTarget::Addr(0x1000), KernelValueWidth::bytes(16)),
            Op::steer_irq(IrqSelector::by_label("virtio0"), 1),
            Op::capture_cgroup_procs("procs", "cg_0"),
            Op::replace_scheduler(
                SchedulerSpec::new(
                    "fifo",
                    "/bin/scx_fifo",
                    vec!["--stall-after".into(), "10".into()],
                )
                .set_ops("fifo"),
            ),
        ];
        Plan::new(
            "mixed",
            vec![
                Step::with_defs(defs, HoldSpec::frac(0.5)).set_ops(ops),
                Step::new(
                    vec![Op::swap_cpusets("cg_0", "cg_1")],
                    HoldSpec::loop_at(Duration::from_millis(100)),
                ),
                Step {
                    setup: Setup::Named("per_llc".into()),
                    ops: vec![Op::detach_scheduler()],
                    hold: HoldSpec::FULL,
                },
            ],
            Duration::from_secs(5),
        )
        .set_backdrop(
            Backdrop::new()
                .push_cgroup(CgroupDef::named("bg").workers(1))
                .push_op(Op::add_cgroup("bg_parent")),
        )
        .set_settle(Duration::from_millis(500))
        .set_workers_per_cgroup(4)
        .set_assert(Assert::default_checks().max_wake_p99_us(900))
        .set_fault(Some(FaultInjection::HangAfterPlan))
    }

    fn every_guest_msg() -> Vec<GuestMsg> {
        let mut result = AssertResult::fail(DetailKind::Starved, "cg_0 worker 42 made no progress");
        result.record_settings(&Assert::default_checks().switch_off(CheckName::MaxGapMs));
        result.record_check(
            CheckName::MaxWakeP99Us,
            CheckState::NotMeasured {
                threshold: "900 us".into(),
            },
        );
        result.stats.push(CgroupStats {
            cgroup: "cg_0".into(),
            workers: 2,
            ..Default::default()
        });
        vec![
            GuestMsg::Hello(Hello {
                agent_version: "0.1.0".into(),
                protocol_version: PROTOCOL_VERSION,
                kernel_release: "7.3.4+deb13-cloud-amd64".into(),
                topology: sample_topology(),
                uptime_ms: 2300,
                sched_ext_state: Some("disabled".into()),
            }),
            GuestMsg::StimulusEvent(StimulusEvent {
                elapsed_ms: 10,
                step: 1,
                op: Some(OpKind::SetCpuset),
                detail: "cg_0 -> 0-1".into(),
            }),
            GuestMsg::StepStarted {
                step: 1,
                elapsed_ms: 11,
                label: "step 1".into(),
                scheduler: "ktstr_fifo".into(),
            },
            GuestMsg::StepFinished {
                step: 1,
                elapsed_ms: 2000,
                result: result.clone(),
                scheduler: "EEVDF".into(),
            },
            GuestMsg::WorkerReports {
                step: 1,
                cgroup: "cg_0".into(),
                reports: vec![sample_report(), WorkerReport::default()],
            },
            GuestMsg::Verdict(Verdict {
                passed: false,
                result,
                elapsed_ms: 5000,
            }),
            GuestMsg::Log {
                level: LogLevel::Warn,
                text: "slow".into(),
            },
            GuestMsg::Error(AgentError {
                stage: "plan".into(),
                message: "bad".into(),
            }),
            GuestMsg::Done,
        ]
    }

    #[test]
    fn every_message_round_trips_through_the_codec() {
        for msg in every_guest_msg() {
            let bytes = codec::encode("guest msg", &msg).unwrap();
            assert_eq!(codec::decode::<GuestMsg>("guest msg", &bytes).unwrap(), msg);
        }
        for msg in [
            HostMsg::Plan(Box::new(sample_plan())),
            HostMsg::Abort {
                reason: "ctrl-c".into(),
            },
        ] {
            let bytes = codec::encode("host msg", &msg).unwrap();
            assert_eq!(codec::decode::<HostMsg>("host msg", &bytes).unwrap(), msg);
        }
    }

    #[test]
    fn every_message_round_trips_through_a_ring() {
        let map = SharedMapping::anonymous(1 << 20).unwrap();
        let shm = Shm::init(map.region(), ShmLayout::for_size(1 << 20).unwrap()).unwrap();
        let mut tx = shm.g2h_producer().unwrap();
        let mut rx = shm.g2h_consumer().unwrap();
        let mut buf = Vec::new();
        for msg in every_guest_msg() {
            tx.send_msg("guest msg", &msg, None).unwrap();
            let got: GuestMsg = rx.recv_msg("guest msg", &mut buf, None).unwrap().unwrap();
            assert_eq!(got, msg);
        }
        let mut tx = shm.h2g_producer().unwrap();
        let mut rx = shm.h2g_consumer().unwrap();
        tx.send_msg("plan", &HostMsg::Plan(Box::new(sample_plan())), None)
            .unwrap();
        let got: HostMsg = rx.recv_msg("plan", &mut buf, None).unwrap().unwrap();
        assert_eq!(got, HostMsg::Plan(Box::new(sample_plan())));
        let none: Option<HostMsg> = rx.recv_msg("plan", &mut buf, Some(Instant::now())).unwrap();
        assert!(none.is_none());
    }
}
