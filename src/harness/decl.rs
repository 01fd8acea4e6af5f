//! What `#[ktstr::test]` declares: [`TestDecl`], the binary's list of
//! them ([`KTSTR_TESTS`]), their names, topologies and skip reasons, and
//! the agent registries they make. Plain data; running is `host.rs`'s.

use ktstr_agent::init::Registries;
use ktstr_agent::scenario::ScenarioFn;
use ktstr_protocol::model::{Assert, Needs, Topology};

/// Every `#[ktstr::test]` of the binary.
#[linkme::distributed_slice]
pub static KTSTR_TESTS: [TestDecl];

/// The topology a test gets when neither it nor `KTSTR_TOPOLOGY` names one.
pub const DEFAULT_TOPOLOGY: &str = "1n2l2c1t";

/// Default hold of a test that names no duration.
pub const DEFAULT_DURATION_MS: u64 = 3000;

/// One declared test, as the attribute wrote it.
#[derive(Debug)]
pub struct TestDecl {
    /// The function's name.
    pub name: &'static str,
    /// `module_path!()` where it was declared.
    pub module: &'static str,
    pub func: ScenarioFn,
    /// `fixture`, a scheduler binary, or a declaration file (`.toml`).
    pub scheduler: Option<&'static str>,
    /// Extra scheduler arguments, split on whitespace.
    pub sched_args: &'static str,
    /// Flags of a declared scheduler, comma-separated.
    pub sched_flags: &'static str,
    /// `NnLlCcTt`; `None`: `KTSTR_TOPOLOGY`, else [`DEFAULT_TOPOLOGY`].
    pub topology: Option<&'static str>,
    /// What the topology must offer, else the test is skipped.
    pub needs: Needs,
    /// Hold (`ctx.duration`); 0: [`DEFAULT_DURATION_MS`].
    pub duration_ms: u64,
    /// Whole-run limit; `None`: derived from boot and duration.
    pub timeout_ms: Option<u64>,
    pub memory_mib: Option<u64>,
    /// Workers per cgroup; 0: the default (2).
    pub workers: usize,
    /// The test's checks layer, over the defaults and the scheduler's.
    pub checks: Option<fn() -> Assert>,
    /// Sample runqueues from the host while it runs.
    pub monitor: bool,
    /// Ignored, with a reason (possibly empty).
    pub ignore: Option<&'static str>,
}

impl TestDecl {
    /// The name cargo and nextest see: the module path below the crate
    /// root, then the function (`sched::two_cgroups`, or `two_cgroups`).
    pub fn full_name(&self) -> String {
        match self.module.split_once("::") {
            Some((_, rest)) => format!("{rest}::{}", self.name),
            None => self.name.to_string(),
        }
    }

    /// The topology it runs on: its own, else `env` (`KTSTR_TOPOLOGY`),
    /// else [`DEFAULT_TOPOLOGY`].
    pub fn topology(&self, env: Option<&str>) -> Result<Topology, String> {
        let (text, from) = match (self.topology, env) {
            (Some(t), _) => (t, "its #[ktstr::test] topology"),
            (None, Some(t)) => (t, "KTSTR_TOPOLOGY"),
            (None, None) => (DEFAULT_TOPOLOGY, "the default topology"),
        };
        text.parse::<Topology>()
            .map_err(|e| format!("{}: {from} {text:?}: {e}", self.full_name()))
    }

    /// Why it cannot run on `topo`, if it cannot.
    pub fn unmet(&self, topo: &Topology) -> Option<String> {
        self.needs.unmet_by(topo)
    }
}

/// The tests in name order; two with one name are an error.
pub fn tests() -> Result<Vec<&'static TestDecl>, String> {
    let mut all: Vec<&'static TestDecl> = KTSTR_TESTS.iter().collect();
    all.sort_by_key(|t| t.full_name());
    for w in all.windows(2) {
        if w[0].full_name() == w[1].full_name() {
            return Err(format!(
                "two #[ktstr::test] functions are called {}",
                w[0].full_name()
            ));
        }
    }
    Ok(all)
}

/// The agent's registries with every test of this binary added under its
/// full name.
pub fn registries() -> Registries {
    let mut r = Registries::builtin();
    for t in KTSTR_TESTS.iter() {
        r.scenarios = r.scenarios.register(t.full_name(), t.func);
    }
    r
}
