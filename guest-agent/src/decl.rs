//! What `#[ktstr::test]` declares ([`TestDecl`]) and the two lists the
//! attribute fills at link time: a test binary's own tests
//! ([`KTSTR_TESTS`]) and the canned catalog ([`KTSTR_CATALOG`], entries
//! with a family). Both sides read them: the host lists, selects and
//! builds plans; the agent registers the bodies that run in the guest.
//!
//! It lives here, below the host and the catalog, because a declaration
//! names a guest function ([`ScenarioFn`]) and the catalog crate, which
//! the host and the default agent both link, declares its entries with
//! the same attribute. Plain data: nothing here boots or runs anything.

use ktstr_protocol::model::{Assert, Backdrop, HostPayload, Needs, ScenarioParams, Step, Topology};

use crate::scenario::ScenarioFn;

#[doc(hidden)]
pub use linkme;

/// What the attribute's `checks = EXPR` is evaluated with in scope.
#[doc(hidden)]
pub mod check_scope {
    pub use ktstr_protocol::model::*;
}

/// Every `#[ktstr::test]` of a test binary (declarations without a family).
#[linkme::distributed_slice]
pub static KTSTR_TESTS: [TestDecl];

/// The canned catalog: declarations with a `family`.
#[linkme::distributed_slice]
pub static KTSTR_CATALOG: [TestDecl];

/// The topology a test gets when neither it nor `KTSTR_TOPOLOGY` names one.
pub const DEFAULT_TOPOLOGY: &str = "1n2l2c1t";

/// Default hold of a test that names no duration.
pub const DEFAULT_DURATION_MS: u64 = 3000;

/// A scenario built from data on the host: its backdrop and steps.
pub type StepsFn = fn(&ScenarioParams) -> (Backdrop, Vec<Step>);

/// What a declared test runs.
#[derive(Clone, Copy, Debug)]
pub enum TestBody {
    /// A function run in the guest by name (`fn(&Ctx) -> Result<AssertResult>`).
    Guest(ScenarioFn),
    /// Steps the host builds and sends as a plan
    /// (`fn(&ScenarioParams) -> (Backdrop, Vec<Step>)`, wire types).
    Steps(StepsFn),
}

/// One declared test, as the attribute wrote it.
#[derive(Debug)]
pub struct TestDecl {
    /// The function's name.
    pub name: &'static str,
    /// `module_path!()` where it was declared.
    pub module: &'static str,
    /// `line!()` of the declaration: the catalog's order within a family.
    pub line: u32,
    pub body: TestBody,
    /// The catalog family (`basic`, `stress`, ...); `None` for a test.
    pub family: Option<&'static str>,
    /// One line on what it does (`--list` of the catalog).
    pub about: &'static str,
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
    /// It only means something with a sched_ext scheduler attached.
    pub needs_scheduler: bool,
    /// Programs it runs, which the host must pack.
    pub payloads: &'static [&'static HostPayload],
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
    /// A catalog entry is known by its function name alone.
    pub fn full_name(&self) -> String {
        if self.family.is_some() {
            return self.name.to_string();
        }
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

    /// Its own checks layer ([`Assert::NONE`] when it declares none).
    pub fn own_checks(&self) -> Assert {
        self.checks.map_or(Assert::NONE, |f| f())
    }

    /// The guest function, for a test run in the guest.
    pub fn guest_fn(&self) -> Option<ScenarioFn> {
        match self.body {
            TestBody::Guest(f) => Some(f),
            TestBody::Steps(_) => None,
        }
    }
}

/// The declarations of `slice` in name order; two with one name are an
/// error.
pub fn sorted(slice: &'static [TestDecl]) -> Result<Vec<&'static TestDecl>, String> {
    let mut all: Vec<&'static TestDecl> = slice.iter().collect();
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
