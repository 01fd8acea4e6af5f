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
