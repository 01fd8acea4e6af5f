//! The agent as PID 1: mount, attach the ring, say Hello, take the plan, run
//! it, report, power off. Any failure after the ring is attached is reported
//! as an `Error` message followed by `Done`; failures before that go to the
//! console. Either way the guest powers off, so the host never has to wait
//! for its timeout when the guest can say what went wrong.
//!
//! Also sets up the agent's console log: a `tracing` subscriber writing to
//! stderr (the serial console), `debug` with `ktstr.verbose`, else `info`.
//! Nothing forked by the agent may log through it (no locks after fork).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ktstr_protocol::PROTOCOL_VERSION;
use ktstr_protocol::hostile::HostileMode;
use ktstr_protocol::layout::agent_state;
use ktstr_protocol::message::{AgentError, GuestMsg, Hello, HostMsg, LogLevel};
use ktstr_protocol::model::{FaultInjection, KernelAccess, KernelReply, KernelRequest};
use ktstr_protocol::ring::{Consumer, Producer};
use ktstr_protocol::{SharedMapping, Shm};
use nix::fcntl::OFlag;
use nix::sys::reboot::{RebootMode, reboot};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber, error, info};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cgroup::CgroupManager;
use crate::plan_runner::{MessageSink, PlanRunner};
use crate::scenario::{FactoryRegistry, ScenarioRegistry};
use crate::topology::TestTopology;

/// How long a send may wait for the host to drain a full ring.
const SEND_DEADLINE: Duration = Duration::from_secs(30);
/// How long the agent waits for its plan after Hello.
const PLAN_DEADLINE: Duration = Duration::from_secs(120);
/// Where managed cgroups live.
const CGROUP_PARENT: &str = "/sys/fs/cgroup/ktstr";

/// The agent's two ring ends plus the header words it writes.
pub struct Channel<'a> {
    shm: Shm<'a>,
    tx: Producer<'a>,
    rx: Consumer<'a>,
    buf: Vec<u8>,
    /// The host has this guest's kernel info (sent once per guest).
    kernel_info_sent: bool,
    /// The id of the next kernel request.
    next_request: u32,
}

impl<'a> Channel<'a> {
    pub fn new(shm: Shm<'a>) -> Result<Self> {
        Ok(Self {
            shm,
            tx: shm.g2h_producer()?,
            rx: shm.h2g_consumer()?,
            buf: Vec::new(),
            kernel_info_sent: false,
            next_request: 1,
        })
    }

    /// Waits for the next host message.
    pub fn recv(&mut self, deadline: Instant) -> Result<Option<HostMsg>> {
        Ok(self
            .rx
            .recv_msg("host message", &mut self.buf, Some(deadline))?)
    }
}

impl MessageSink for Channel<'_> {
    fn send(&mut self, msg: GuestMsg) -> Result<()> {
        self.tx
            .send_msg("guest message", &msg, Some(Instant::now() + SEND_DEADLINE))?;
        self.shm.g2h_doorbell().fetch_add(1, Ordering::Release);
        Ok(())
    }

    fn announce_kernel(&mut self) -> Result<()> {
        if !self.kernel_info_sent {
            let info = crate::kernel_info::gather(&kernel_release())
                .context("gathering what the host needs to reach kernel memory")?;
            self.send(GuestMsg::KernelInfo(Box::new(info)))?;
            self.kernel_info_sent = true;
        }
        Ok(())
    }

    fn kernel(&mut self, cold: bool, accesses: Vec<KernelAccess>) -> Result<KernelReply> {
        self.announce_kernel()?;
        let id = self.next_request;
        self.next_request += 1;
        self.send(GuestMsg::KernelRequest(KernelRequest {
            id,
            cold,
            accesses,
        }))?;
        let deadline = Instant::now() + KERNEL_REPLY_DEADLINE;
        match self.recv(deadline)? {
            Some(HostMsg::KernelReply(r)) if r.id == id => Ok(r),
            Some(HostMsg::KernelReply(r)) => {
                bail!(
                    "the host answered kernel request {} while {id} was asked",
                    r.id
                )
            }
            Some(HostMsg::Abort { reason }) => {
                bail!("host aborted during kernel request {id}: {reason}")
            }
            Some(other) => bail!(
                "the host sent {} while kernel request {id} waited for its answer",
                host_msg_name(&other)
            ),
            None => bail!("no answer to kernel request {id} within {KERNEL_REPLY_DEADLINE:?}"),
        }
    }
}

/// How long a kernel request may wait for the host (it freezes the guest,
/// which under emulation can take a while).
const KERNEL_REPLY_DEADLINE: Duration = Duration::from_secs(30);

fn host_msg_name(m: &HostMsg) -> &'static str {
    match m {
        HostMsg::Plan(_) => "a plan",
        HostMsg::Finish => "Finish",
        HostMsg::KernelReply(_) => "a kernel reply",
        HostMsg::Abort { .. } => "Abort",
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| "unknown".into(),
        |u| u.release().to_string_lossy().into_owned(),
    )
}

fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0, |s| (s * 1000.0) as u64)
}

/// Powers the machine off; never returns.
pub fn power_off() -> ! {
    nix::unistd::sync();
    // Returns only on failure; then there is nothing left to do but wait.
    let _ = reboot(RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Console lines as `ktstr-agent: MESSAGE`, with the level in front of the
/// message when it is not INFO. No time: the kernel console adds its own.
struct ConsoleFormat;

impl<S, N> FormatEvent<S, N> for ConsoleFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "ktstr-agent: ")?;
        let level = *event.metadata().level();
        if level != Level::INFO {
            write!(writer, "{level} ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The console log writing to `writer`: `debug` when `verbose`, else
/// `info`; no ANSI colours.
fn console_subscriber<W>(writer: W, verbose: bool) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let level = if verbose {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_max_level(level)
        .event_format(ConsoleFormat)
        .finish()
}

/// Installs the console log on stderr (the serial console, once
/// [`crate::mounts::attach_console`] ran). Only the first call counts.
fn start_logging(verbose: bool) {
    let _ = console_subscriber(std::io::stderr, verbose).try_init();
}

/// The scenario functions and setup factories plans may name: the
/// built-in ones, plus a test binary's own when it is the agent.
#[derive(Clone, Debug)]
pub struct Registries {
    pub scenarios: ScenarioRegistry,
    pub factories: FactoryRegistry,
}

impl Registries {
    /// What every agent has: the built-in probes and factories, and each
    /// catalog entry that runs in the guest (from the declarations linked
    /// into this binary; none when the catalog crate is not linked).
    pub fn builtin() -> Self {
        let mut scenarios = ScenarioRegistry::with_builtins();
        for decl in crate::decl::KTSTR_CATALOG.iter() {
            if let Some(f) = decl.guest_fn() {
                scenarios = scenarios.register(decl.full_name(), f);
            }
        }
        Self {
            scenarios,
            factories: FactoryRegistry::with_builtins(),
        }
    }
}

/// Entry point of the `/init` binary.
pub fn run_as_init() -> ! {
    run_as_init_with(Registries::builtin())
}

/// Entry point of a test binary running as the guest's `/init`: the agent,
/// with `registries` (its tests) for plans to name.
pub fn run_as_init_with(registries: Registries) -> ! {
    if let Err(e) = agent_main(&registries) {
        // The failure may have come before the command line was read.
        start_logging(false);
        error!("fatal: {e:#}");
    }
    power_off()
}

fn agent_main(registries: &Registries) -> Result<()> {
    let warnings = crate::mounts::mount_all()?;
    crate::mounts::attach_console();
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let args = crate::cmdline::parse(&cmdline)?;
    start_logging(args.verbose);
    tracing::debug!("kernel command line: {}", cmdline.trim());
    let shm = args
        .shm
        .ok_or_else(|| anyhow!("no ktstr.shm=ADDR,SIZE on the kernel command line"))?;
    let addr = shm.addr;
    // O_SYNC keeps the mapping uncached on real hardware; harmless under
    // emulation, and the ring only relies on atomics and ordering.
    let devmem = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(OFlag::O_SYNC.bits())
        .open("/dev/mem")
        .context("opening /dev/mem")?;
    let size = usize::try_from(shm.size).context("ktstr.shm size")?;
    let map = SharedMapping::map_fd(&devmem, addr, size)
        .with_context(|| format!("mapping the ring at {addr:#x}"))?;
    let shm = Shm::attach(map.region())
        .context("attaching the ring region (was it initialised by the host?)")?;
    shm.agent_state()
        .store(agent_state::ATTACHED, Ordering::Release);
    let mut chan = Channel::new(shm)?;
    for w in warnings {
        tracing::debug!("{w}");
        let _ = chan.send(GuestMsg::Log {
            level: LogLevel::Warn,
            text: w,
        });
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        session(&mut chan, shm, registries, &args)
    }));
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err((stage, e))) => Some(AgentError {
            stage,
            message: format!("{e:#}"),
        }),
        Err(panic) => Some(AgentError {
            stage: "agent".into(),
            message: format!(
                "agent panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            ),
        }),
    };
    if let Some(err) = failure {
        error!("{}: {}", err.stage, err.message);
        chan.send(GuestMsg::Error(err))?;
    }
    chan.send(GuestMsg::Done)?;
    shm.agent_state()
        .store(agent_state::FINISHED, Ordering::Release);
    Ok(())
}

type StageResult<T> = std::result::Result<T, (String, anyhow::Error)>;

fn at<T>(stage: &str, r: Result<T>) -> StageResult<T> {
    r.map_err(|e| (stage.to_string(), e))
}

/// Everything after the ring is up; errors carry the stage they happened in.
fn session(
    chan: &mut Channel<'_>,
    shm: Shm<'_>,
    registries: &Registries,
    args: &crate::cmdline::AgentArgs,
) -> StageResult<()> {
    let hostile = args.hostile;
    let observed = at("topology", crate::sysfs::observe(Path::new("/sys")))?;
    let mut hello = Hello {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        protocol_version: PROTOCOL_VERSION,
        kernel_release: kernel_release(),
        topology: observed.clone(),
        uptime_ms: uptime_ms(),
        sched_ext_state: std::fs::read_to_string("/sys/kernel/sched_ext/state")
            .ok()
            .map(|s| s.trim().to_string()),
    };
    if hostile == Some(HostileMode::LyingHello) {
        crate::hostile::lie_in_hello(&mut hello);
    }
    at("hello", chan.send(GuestMsg::Hello(hello.clone())))?;
    info!("ring attached, Hello sent; waiting for the plan");
    let cgroups = std::cell::OnceCell::new();
    let topo = TestTopology::from_observed(&observed);
    let topo = if args.emulated { topo.emulated() } else { topo };
    let mut first = true;
    // Plans one after another on this guest, until the host says Finish.
    loop {
        let plan = match at("plan", chan.recv(Instant::now() + PLAN_DEADLINE))? {
            Some(HostMsg::Plan(plan)) => plan,
            Some(HostMsg::Finish) if !first => return Ok(()),
            Some(HostMsg::Finish) => {
                return Err(("plan".into(), anyhow!("the host finished before any plan")));
            }
            Some(HostMsg::Abort { reason }) => {
                return Err(("plan".into(), anyhow!("host aborted: {reason}")));
            }
            Some(other @ HostMsg::KernelReply(_)) => {
                return Err((
                    "plan".into(),
                    anyhow!(
                        "the host sent {} when a plan was due",
                        host_msg_name(&other)
                    ),
                ));
            }
            None => {
                return Err((
                    "plan".into(),
                    anyhow!("no plan (or Finish) from the host within {PLAN_DEADLINE:?}"),
                ));
            }
        };
        let received = Instant::now();
        first = false;
        info!(
            "plan {:?}: {} steps, {:?}",
            plan.name,
            plan.steps.len(),
            plan.duration
        );
        if let Some(mode) = hostile {
            crate::hostile::act(mode, &mut chan.tx, shm, &hello);
        }
        match plan.fault {
            Some(FaultInjection::HangAfterPlan) => loop {
                info!("fault injection: hanging on purpose");
                std::thread::sleep(Duration::from_secs(3600));
            },
            Some(FaultInjection::PanicAfterPlan) => {
                let _ = std::fs::write("/proc/sysrq-trigger", "c");
                return Err((
                    "fault".into(),
                    anyhow!("sysrq crash did not take the kernel down"),
                ));
            }
            None => {}
        }
        at(
            "plan",
            PlanRunner::validate_with(&plan, &registries.factories, &registries.scenarios),
        )?;
        if cgroups.get().is_none() {
            at(
                "cgroups",
                crate::mounts::enable_root_controllers(Path::new("/sys/fs/cgroup")),
            )?;
            let manager = at("cgroups", CgroupManager::new(CGROUP_PARENT))?;
            let _ = cgroups.set(manager);
        }
        let Some(manager) = cgroups.get() else {
            return Err(("cgroups".into(), anyhow!("no cgroup manager")));
        };
        let verdict = {
            let mut runner = PlanRunner::new(manager, &topo, shm.current_step(), chan)
                .set_factories(registries.factories.clone())
                .set_scenarios(registries.scenarios.clone());
            at("scenario", runner.run_from(&plan, received))?
        };
        info!(
            "scenario {}",
            if verdict.passed { "passed" } else { "failed" }
        );
        at("verdict", chan.send(GuestMsg::Verdict(verdict)))?;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(verbose: bool) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = console_subscriber(move || out.clone(), verbose);
        tracing::subscriber::with_default(subscriber, || {
            info!("ring attached, Hello sent; waiting for the plan");
            tracing::warn!("CgroupGroup teardown: {}", "busy");
            tracing::debug!("kernel command line: quiet");
        });
        let bytes = buf.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8(bytes).unwrap_or_default()
    }

    #[test]
    fn console_lines_keep_the_agent_prefix() {
        assert_eq!(
            logged(false),
            "ktstr-agent: ring attached, Hello sent; waiting for the plan\n\
             ktstr-agent: WARN CgroupGroup teardown: busy\n"
        );
    }

    #[test]
    fn verbose_adds_debug_lines() {
        assert!(
            logged(true).ends_with("ktstr-agent: DEBUG kernel command line: quiet\n"),
            "{}",
            logged(true)
        );
    }
}
