//! The agent as PID 1: mount, attach the ring, say Hello, take the plan, run
//! it, report, power off. Any failure after the ring is attached is reported
//! as an `Error` message followed by `Done`; failures before that go to the
//! console. Either way the guest powers off, so the host never has to wait
//! for its timeout when the guest can say what went wrong.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use ktstr_protocol::PROTOCOL_VERSION;
use ktstr_protocol::message::{AgentError, GuestMsg, Hello, HostMsg, LogLevel};
use ktstr_protocol::model::FaultInjection;
use ktstr_protocol::ring::{Consumer, Producer};
use ktstr_protocol::layout::agent_state;
use ktstr_protocol::{SharedMapping, Shm};

use crate::cgroup::CgroupManager;
use crate::engine::{Engine, Sink};
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
}

impl<'a> Channel<'a> {
    pub fn new(shm: Shm<'a>) -> Result<Self> {
        Ok(Self {
            shm,
            tx: shm.g2h_producer()?,
            rx: shm.h2g_consumer()?,
            buf: Vec::new(),
        })
    }

    /// Waits for the next host message.
    pub fn recv(&mut self, deadline: Instant) -> Result<Option<HostMsg>> {
        Ok(self
            .rx
            .recv_msg("host message", &mut self.buf, Some(deadline))?)
    }
}

impl Sink for Channel<'_> {
    fn send(&mut self, msg: GuestMsg) -> Result<()> {
        self.tx
            .send_msg("guest message", &msg, Some(Instant::now() + SEND_DEADLINE))?;
        self.shm.g2h_doorbell().fetch_add(1, Ordering::Release);
        Ok(())
    }
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
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
    // SAFETY: plain syscalls; reboot only returns on failure.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Entry point of the `/init` binary.
pub fn run_as_init() -> ! {
    if let Err(e) = agent_main() {
        eprintln!("ktstr-agent: fatal: {e:#}");
    }
    power_off()
}

fn agent_main() -> Result<()> {
    let warnings = crate::mounts::mount_all()?;
    crate::mounts::attach_console();
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let args = crate::cmdline::parse(&cmdline)?;
    let (addr, size) = args
        .shm
        .ok_or_else(|| anyhow!("no ktstr.shm=ADDR,SIZE on the kernel command line"))?;
    // O_SYNC keeps the mapping uncached on real hardware; harmless under
    // emulation, and the ring only relies on atomics and ordering.
    let devmem = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_SYNC)
        .open("/dev/mem")
        .context("opening /dev/mem")?;
    let size = usize::try_from(size).context("ktstr.shm size")?;
    let map = SharedMapping::map_fd(&devmem, addr, size)
        .with_context(|| format!("mapping the ring at {addr:#x}"))?;
    let shm = Shm::attach(map.region())
        .context("attaching the ring region (was it initialised by the host?)")?;
    shm.agent_state()
        .store(agent_state::ATTACHED, Ordering::Release);
    let mut chan = Channel::new(shm)?;
    for w in warnings {
        let _ = chan.send(GuestMsg::Log {
            level: LogLevel::Warn,
            text: w,
        });
    }
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session(&mut chan, shm)));
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
        eprintln!("ktstr-agent: {}: {}", err.stage, err.message);
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
fn session(chan: &mut Channel<'_>, shm: Shm<'_>) -> StageResult<()> {
    let observed = at("topology", crate::sysfs::observe(Path::new("/sys")))?;
    let hello = Hello {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        protocol_version: PROTOCOL_VERSION,
        kernel_release: kernel_release(),
        topology: observed.clone(),
        uptime_ms: uptime_ms(),
        sched_ext_state: std::fs::read_to_string("/sys/kernel/sched_ext/state")
            .ok()
            .map(|s| s.trim().to_string()),
    };
    at("hello", chan.send(GuestMsg::Hello(hello)))?;
    eprintln!("ktstr-agent: ring attached, Hello sent; waiting for the plan");
    let plan = match at("plan", chan.recv(Instant::now() + PLAN_DEADLINE))? {
        Some(HostMsg::Plan(plan)) => plan,
        Some(HostMsg::Abort { reason }) => {
            return Err((
                "plan".into(),
                anyhow!("host aborted before the plan: {reason}"),
            ));
        }
        None => {
            return Err((
                "plan".into(),
                anyhow!("no plan from the host within {PLAN_DEADLINE:?}"),
            ));
        }
    };
    eprintln!(
        "ktstr-agent: plan {:?}: {} steps, {:?}",
        plan.name,
        plan.steps.len(),
        plan.duration
    );
    match plan.fault {
        Some(FaultInjection::HangAfterPlan) => loop {
            eprintln!("ktstr-agent: fault injection: hanging on purpose");
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
    at("plan", Engine::validate(&plan))?;
    at(
        "cgroups",
        crate::mounts::enable_root_controllers(Path::new("/sys/fs/cgroup")),
    )?;
    let cgroups = at("cgroups", CgroupManager::new(CGROUP_PARENT))?;
    let topo = TestTopology::from_observed(&observed);
    let verdict = {
        let mut engine = Engine::new(&cgroups, &topo, shm.current_step(), chan);
        at("scenario", engine.run(&plan))?
    };
    eprintln!(
        "ktstr-agent: scenario {}",
        if verdict.passed { "passed" } else { "failed" }
    );
    at("verdict", chan.send(GuestMsg::Verdict(verdict)))?;
    Ok(())
}
