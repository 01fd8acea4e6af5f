//! Declarations test code writes once, typically as `static`s, and ops
//! and steps refer to by `&'static` reference: a userspace payload
//! ([`Payload`]) and a sched_ext scheduler ([`Scheduler`]) with its named
//! flags ([`SchedFlag`]) and check layer. Each converts into the spec that
//! travels in a plan ([`PayloadSpec`], [`SchedulerSpec`]).

use thiserror::Error;

use super::assert::Assert;
use super::metrics::{MetricLimit, MetricsFormat};
use super::op::{PayloadSpec, SchedulerSpec};
use super::plan::Needs;

/// The directory packed executables live in inside the guest.
pub const GUEST_BIN_DIR: &str = "/usr/local/bin";

/// Where a host file named `host_path` (or a bare name) is packed in the
/// guest: [`GUEST_BIN_DIR`] plus its file name.
pub fn guest_path(host_path: &str) -> String {
    let name = host_path
        .rsplit('/')
        .find(|p| !p.is_empty())
        .unwrap_or("executable");
    format!("{GUEST_BIN_DIR}/{name}")
}

/// A userspace binary a scenario runs in the background
/// (`Op::run_payload`, `Step::with_payload`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Payload {
    pub name: &'static str,
    /// Its path inside the guest.
    pub binary: &'static str,
    pub default_args: &'static [&'static str],
    /// Output the agent asks for and parses (see [`MetricsFormat`]).
    pub metrics: Option<MetricsFormat>,
    /// Limits on those metrics.
    pub limits: &'static [MetricLimit],
}

impl Payload {
    /// `binary` (a path in the guest) run as `name` with no arguments.
    pub const fn new(name: &'static str, binary: &'static str) -> Self {
        Self {
            name,
            binary,
            default_args: &[],
            metrics: None,
            limits: &[],
        }
    }

    /// Parses its `format` output into the result.
    pub const fn set_metrics(mut self, format: MetricsFormat) -> Self {
        self.metrics = Some(format);
        self
    }

    /// Replaces the limits on its metrics.
    pub const fn set_limits(mut self, limits: &'static [MetricLimit]) -> Self {
        self.limits = limits;
        self
    }

    /// Replaces the arguments every run starts with.
    pub const fn set_default_args(mut self, args: &'static [&'static str]) -> Self {
        self.default_args = args;
        self
    }
}

impl From<&Payload> for PayloadSpec {
    fn from(p: &Payload) -> Self {
        PayloadSpec {
            name: p.name.into(),
            binary: p.binary.to_string(),
            default_args: p.default_args.iter().map(|a| a.to_string()).collect(),
            metrics: p.metrics,
            limits: p.limits.to_vec(),
        }
    }
}

impl From<&Scheduler> for SchedulerSpec {
    /// The scheduler with its default arguments, from its guest path.
    fn from(s: &Scheduler) -> Self {
        SchedulerSpec {
            name: s.name.into(),
            binary: s.guest_binary(),
            args: s.default_args.iter().map(|a| a.to_string()).collect(),
            ops: s.ops.map(String::from),
        }
    }
}

/// A named argument set of a scheduler, which may need other flags on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedFlag {
    pub name: &'static str,
    pub args: &'static [&'static str],
    /// Flags that must also be enabled for this one to make sense.
    pub requires: &'static [&'static str],
}

/// Where a declared scheduler's binary comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerBinary {
    /// ktstr's own fixture, built for the kernel under test.
    Fixture,
    /// A binary on the host (packed into the guest with its libraries).
    Path(&'static str),
}

/// A sched_ext scheduler declared once (typically as a `static`) and named
/// by reference: its sched_ext ops name, binary, default arguments, named
/// flags, preferred topology and its own check layer (merged between the
/// defaults and each test's checks).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scheduler {
    /// What the harness calls it.
    pub name: &'static str,
    /// How the sched_ext ops name it registers starts (what
    /// `/sys/kernel/sched_ext/root/ops` reads); `None`: whatever it
    /// registers (nothing else loads schedulers in the guest).
    pub ops: Option<&'static str>,
    pub binary: SchedulerBinary,
    pub default_args: &'static [&'static str],
    pub flags: &'static [SchedFlag],
    pub default_topology: &'static str,
    pub checks: Assert,
    /// The topologies it means anything on; elsewhere runs are skipped.
    pub needs: Needs,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("scheduler {sched} has no flag {flag:?}; its flags: {known}")]
    Unknown {
        sched: String,
        flag: String,
        known: String,
    },
    #[error("scheduler {sched}: flag {flag:?} requires {missing:?}, which is not enabled")]
    Requires {
        sched: String,
        flag: String,
        missing: String,
    },
}

impl Scheduler {
    /// A scheduler with `name` as its ops name, run from `binary` with no
    /// arguments, flags or checks of its own.
    pub const fn new(name: &'static str, binary: SchedulerBinary) -> Self {
        Self {
            name,
            ops: None,
            binary,
            default_args: &[],
            flags: &[],
            default_topology: "1n2l2c1t",
            checks: Assert::NONE,
            needs: Needs::NONE,
        }
    }

    /// Where its binary lives in the guest.
    pub fn guest_binary(&self) -> String {
        match self.binary {
            SchedulerBinary::Fixture => guest_path(self.name),
            SchedulerBinary::Path(p) => guest_path(p),
        }
    }

    /// Checks a flag selection against the declaration.
    pub fn check_flags(&self, enabled: &[&str]) -> Result<(), FlagError> {
        for f in enabled {
            let decl =
                self.flags
                    .iter()
                    .find(|d| d.name == *f)
                    .ok_or_else(|| FlagError::Unknown {
                        sched: self.name.into(),
                        flag: (*f).into(),
                        known: self
                            .flags
                            .iter()
                            .map(|d| d.name)
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
            if let Some(missing) = decl.requires.iter().find(|r| !enabled.contains(r)) {
                return Err(FlagError::Requires {
                    sched: self.name.into(),
                    flag: (*f).into(),
                    missing: (*missing).into(),
                });
            }
        }
        Ok(())
    }

    /// Every flag combination whose `requires` hold (the empty one first),
    /// for sweeps across a scheduler's configurations.
    pub fn valid_flag_sets(&self) -> Vec<Vec<&'static str>> {
        let n = self.flags.len().min(16);
        (0u32..1 << n)
            .map(|mask| {
                (0..n)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| self.flags[i].name)
                    .collect::<Vec<_>>()
            })
            .filter(|set| self.check_flags(set).is_ok())
            .collect()
    }

    /// Default arguments followed by each enabled flag's arguments.
    pub fn args(&self, enabled: &[&str]) -> Result<Vec<String>, FlagError> {
        self.check_flags(enabled)?;
        let mut args: Vec<String> = self.default_args.iter().map(|a| a.to_string()).collect();
        for f in self.flags.iter().filter(|f| enabled.contains(&f.name)) {
            args.extend(f.args.iter().map(|a| a.to_string()));
        }
        Ok(args)
    }

    /// The merged checks: `defaults` -> this scheduler -> `test`.
    pub fn merged_checks(&self, defaults: &Assert, test: &Assert) -> Assert {
        defaults.merge(&self.checks).merge(test)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Check;

    fn decl() -> Scheduler {
        const FLAGS: &[SchedFlag] = &[
            SchedFlag {
                name: "llc",
                args: &["--llc"],
                requires: &[],
            },
            SchedFlag {
                name: "llc-steal",
                args: &["--steal"],
                requires: &["llc"],
            },
            SchedFlag {
                name: "verbose",
                args: &["-v"],
                requires: &[],
            },
        ];
        Scheduler {
            name: "scx_demo",
            ops: Some("demo"),
            binary: SchedulerBinary::Path("/usr/bin/scx_demo"),
            default_args: &["--stats", "0"],
            flags: FLAGS,
            default_topology: "1n2l4c1t",
            checks: Assert::NONE.max_gap_ms(5000),
            needs: Needs::NONE,
        }
    }

    #[test]
    fn flags_and_requires() {
        let d = decl();
        assert_eq!(
            d.args(&["llc", "llc-steal"]).unwrap(),
            vec!["--stats", "0", "--llc", "--steal"]
        );
        assert!(matches!(
            d.args(&["llc-steal"]),
            Err(FlagError::Requires { .. })
        ));
        assert!(
            d.args(&["nope"])
                .unwrap_err()
                .to_string()
                .contains("llc, llc-steal, verbose")
        );
        let sets = d.valid_flag_sets();
        assert_eq!(sets.len(), 6, "{sets:?}");
        assert_eq!(sets[0], Vec::<&str>::new());
        assert!(
            !sets
                .iter()
                .any(|s| s.contains(&"llc-steal") && !s.contains(&"llc"))
        );
    }

    #[test]
    fn checks_merge_default_then_scheduler_then_test() {
        let d = decl();
        let m = d.merged_checks(
            &Assert::default_checks(),
            &Assert::NONE.max_spread_pct(25.0),
        );
        assert_eq!(
            m.max_gap_ms,
            Check::On(5000),
            "scheduler layer over the default"
        );
        assert_eq!(m.max_spread_pct, Check::On(25.0), "test layer last");
        assert_eq!(m.not_starved, Check::On(()), "defaults kept");
        let m = d.merged_checks(&Assert::default_checks(), &Assert::NONE.max_gap_ms(100));
        assert_eq!(m.max_gap_ms, Check::On(100));
    }

    #[test]
    fn declarations_become_specs() {
        static SH: Payload = Payload::new("sh", "/bin/sh").set_default_args(&["-c", "true"]);
        let spec = PayloadSpec::from(&SH);
        assert_eq!(spec.binary, "/bin/sh");
        assert_eq!(spec.default_args, vec!["-c", "true"]);
        static DEMO: Scheduler = Scheduler::new("demo", SchedulerBinary::Path("/opt/x/scx_demo"));
        let s = SchedulerSpec::from(&DEMO);
        assert_eq!(s.name, "demo");
        assert_eq!(s.ops, None, "any ops it registers");
        assert_eq!(s.binary, "/usr/local/bin/scx_demo");
        assert_eq!(guest_path("ktstr_fifo"), "/usr/local/bin/ktstr_fifo");
    }
}

/// A [`Payload`] and where the host has its binary, so the host can pack
/// it (at the payload's own path in the guest) or say what to install.
#[derive(Debug)]
pub struct HostPayload {
    pub payload: Payload,
    /// On the host.
    pub host_path: &'static str,
    /// The Debian package that installs it.
    pub package: &'static str,
}

impl HostPayload {
    /// Why it cannot be packed, if the host lacks it.
    pub fn missing(&self) -> Option<String> {
        (!std::path::Path::new(self.host_path).is_file()).then(|| {
            format!(
                "needs {} ({}) on the host: apt-get install {} (the setup step installs it)",
                self.payload.name, self.host_path, self.package
            )
        })
    }

    /// (guest path, host path) for packing.
    pub fn executable(&self) -> (String, std::path::PathBuf) {
        (self.payload.binary.to_string(), self.host_path.into())
    }
}
