//! The spec's examples (spec/seed-custom-scenarios.md and
//! spec/seed-ops-and-steps.md) compiled against the facade with exactly the
//! spec's imports: `use ktstr::prelude::*;` and `use ktstr::scenario::*;`.
#![allow(dead_code)]

mod custom_scenarios {
    use ktstr::prelude::*;
    use ktstr::scenario::*;

    fn my_custom_scenario(ctx: &Ctx) -> Result<AssertResult> {
        let wl = dfl_wl(ctx);
        let (handles, _guard) = setup_cgroups(ctx, 2, &wl)?;

        // Custom logic: resize cpusets, move workers, etc.
        std::thread::sleep(ctx.duration);

        Ok(collect_all(handles, &ctx.assert))
    }

    fn diverse(ctx: &Ctx) -> Result<AssertResult> {
        let handles = spawn_diverse(ctx, &["cg_0", "cg_1"])?;
        let phase = ctx.current_step.load(std::sync::atomic::Ordering::Acquire);
        let _ = phase;
        let alive = ctx.sched_pid.is_some_and(process_alive);
        let _ = alive;
        Ok(collect_all(handles, &ctx.assert))
    }
}

mod ops_and_steps {
    use ktstr::prelude::*;

    pub fn ops() -> Vec<Op> {
        vec![
            Op::add_cgroup("cg_0"),
            Op::set_cpuset("cg_0", CpusetSpec::disjoint(0, 2)),
            Op::stop_cgroup("cg_0"),
            Op::spawn("cg_0", Work::default().workers(4)),
            Op::set_affinity("cg_0", AffinityKind::RandomSubset),
            Op::spawn_host(Work::default().workers(4)),
        ]
    }

    pub fn cpusets() -> Vec<CpusetSpec> {
        vec![
            CpusetSpec::disjoint(0, 2),
            CpusetSpec::range(0.0, 0.5),
            CpusetSpec::exact([0, 1, 2]),
            CpusetSpec::llc(0),
            CpusetSpec::overlap(0, 2, 0.5),
        ]
    }

    pub fn def() -> CgroupDef {
        CgroupDef::named("cg_0")
            .with_cpuset(CpusetSpec::disjoint(0, 2))
            .workers(4)
            .work_type(WorkType::CpuSpin)
    }

    pub fn step() -> Step {
        Step {
            setup: vec![def()].into(),
            ops: vec![Op::add_cgroup("parent")],
            hold: HoldSpec::FULL,
        }
    }

    pub fn constructors() -> Vec<Step> {
        vec![
            Step::new(vec![Op::stop_cgroup("cg_0")], HoldSpec::Frac(0.5)),
            Step::with_defs(
                vec![def()],
                HoldSpec::Fixed(std::time::Duration::from_secs(1)),
            )
            .set_ops(vec![Op::add_cgroup("cg_1")]),
            Step::new(
                vec![Op::swap_cpusets("cg_0", "cg_1")],
                HoldSpec::Loop {
                    interval: std::time::Duration::from_millis(100),
                },
            ),
            Step {
                setup: Setup::Defs(vec![]),
                ..Default::default()
            },
        ]
    }

    fn defs_scenario(ctx: &Ctx) -> Result<AssertResult> {
        execute_defs(
            ctx,
            vec![
                CgroupDef::named("cg_0").workers(4),
                CgroupDef::named("cg_1").workers(4),
            ],
        )
    }

    fn my_scenario(ctx: &Ctx) -> Result<AssertResult> {
        let assertions = Assert::NONE.check_not_starved().max_gap_ms(3000);

        let steps = vec![/* ... */];

        execute_steps_with(ctx, steps, Some(&assertions))
    }

    fn with_backdrop(ctx: &Ctx) -> Result<AssertResult> {
        let backdrop = Backdrop::new().push_cgroup(ctx.cgroup_def("bg"));
        let steps = vec![
            Step::new(vec![], ctx.settled_hold(0.5)),
            Step::with_op(
                Op::set_cpuset("bg", CpusetSpec::llc(0)),
                ctx.settled_hold(0.5),
            ),
            Step {
                setup: Setup::with_factory(|ctx| vec![ctx.cgroup_def("cg_0")]),
                ops: vec![],
                hold: HoldSpec::FULL,
            },
        ];
        execute_scenario(ctx, backdrop, steps)
    }
}

/// The step-types seed's `&'static` declarations: payloads and schedulers
/// are declared once as statics and named by reference in ops and steps.
mod declarations {
    use ktstr::prelude::*;

    pub static STRESS: Payload =
        Payload::new("stress", "/usr/local/bin/stress").set_default_args(&["--cpu", "2"]);
    pub static FIFO: Scheduler = Scheduler::new("ktstr_fifo", SchedulerBinary::Fixture);
    pub static OTHER: Scheduler =
        Scheduler::new("other", SchedulerBinary::Path("/opt/scx/scx_other"));

    pub fn ops() -> Vec<Op> {
        vec![
            Op::run_payload(&STRESS, ["--timeout", "5"]),
            Op::run_payload_in_cgroup(&STRESS, [] as [&str; 0], "cg_0"),
            Op::wait_payload("stress"),
            Op::attach_scheduler(&FIFO),
            Op::replace_scheduler(&OTHER),
            Op::detach_scheduler(),
            Op::set_affinity("cg_0", AffinityKind::RandomSubset),
            Op::set_affinity(
                "cg_0",
                AffinityIntent::RandomSubset {
                    from: [0, 1].into(),
                    count: 1,
                },
            ),
        ]
    }

    pub fn steps() -> Vec<Step> {
        vec![Step::with_payload(&STRESS, HoldSpec::FULL)]
    }

    fn sized(ctx: &Ctx) -> Result<AssertResult> {
        let n = ctx.cpuset_cpus(&CpusetSpec::disjoint(0, 2));
        let def = ctx.cgroup_def("cg_0").workers(n.max(1));
        execute_defs(ctx, vec![def])
    }

    fn by_hand(ctx: &Ctx) -> Result<AssertResult> {
        use ktstr::scenario::*;
        let (handles, _guard) = setup_cgroups(ctx, 1, &dfl_wl(ctx))?;
        let mut reports = Vec::new();
        for h in handles {
            reports.extend(h.stop_and_collect());
        }
        Ok(ctx.assert.assert_cgroup(&reports, None))
    }
}

#[test]
fn declarations_travel_as_specs() {
    use ktstr::prelude::*;
    let ops = declarations::ops();
    match &ops[0] {
        Op::RunPayload { payload, args, .. } => {
            assert_eq!(payload.binary, "/usr/local/bin/stress");
            assert_eq!(payload.default_args, vec!["--cpu", "2"]);
            assert_eq!(args, &vec!["--timeout", "5"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&ops[3], Op::AttachScheduler { scheduler } if scheduler.binary == "/usr/local/bin/ktstr_fifo")
    );
    assert!(
        matches!(&ops[4], Op::ReplaceScheduler { scheduler } if scheduler.binary == "/usr/local/bin/scx_other")
    );
    assert!(matches!(
        &ops[6],
        Op::SetAffinity {
            affinity: AffinityIntent::RandomSubset { count: 1, .. },
            ..
        }
    ));
    assert_eq!(declarations::steps()[0].ops[0].kind(), OpKind::RunPayload);
}

#[test]
fn spec_expressions_build_what_they_say() {
    use ktstr::prelude::*;
    let kinds: Vec<OpKind> = ops_and_steps::ops().iter().map(Op::kind).collect();
    assert_eq!(
        kinds,
        [
            OpKind::AddCgroup,
            OpKind::SetCpuset,
            OpKind::StopCgroup,
            OpKind::Spawn,
            OpKind::SetAffinity,
            OpKind::Spawn,
        ]
    );
    for spec in ops_and_steps::cpusets() {
        spec.validate().unwrap();
    }
    assert_eq!(ops_and_steps::def().works[0].num_workers, Some(4));
    assert_eq!(ops_and_steps::step().ops.len(), 1);
    let steps = ops_and_steps::constructors();
    assert_eq!(steps[1].ops, vec![Op::add_cgroup("cg_1")]);
    for s in &steps {
        s.hold.validate().unwrap();
        s.to_wire().unwrap();
    }
}
