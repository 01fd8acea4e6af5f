//! Scheduler declarations as files a user writes (TOML), read into the
//! same [`Scheduler`] a Rust `static` declares:
//!
//! ```toml
//! name = "scx_demo"              # what the harness calls it
//! binary = "scx_demo"            # host path, relative to this file
//! ops = "demo"                   # optional: how its sched_ext ops name starts
//! default_args = ["--stats", "0"]
//! default_topology = "1n2l4c1t"
//!
//! [[flags]]
//! name = "llc"
//! args = ["--llc"]
//! requires = []
//!
//! [checks]                       # its check layer
//! max_gap_ms = 5000              # a threshold turns a check on
//! isolation = false              # false switches one off, true turns it on
//!
//! [needs]                        # topologies it means anything on
//! min_llcs = 2
//! smt = false
//! ```
//!
//! A declaration read here lives as long as the command (its strings are
//! leaked into `'static` ones, as a `static` declaration's are); reading
//! checks every name and value and says which one is wrong.

use std::path::{Path, PathBuf};

use ktstr_protocol::model::{
    Assert, CheckName, Needs, SchedFlag, Scheduler, SchedulerBinary, Topology,
};
use serde::Deserialize;
use thiserror::Error;

/// Why a declaration file cannot be used.
#[derive(Debug, Error)]
pub enum DeclFileError {
    #[error("reading scheduler declaration {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scheduler declaration {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("scheduler declaration {}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagFile {
    name: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    requires: Vec<String>,
}

/// A check as a file writes it: a number (a threshold), or a boolean
/// (on without a threshold, or off).
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum CheckValue {
    Switch(bool),
    Number(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclFile {
    name: String,
    binary: String,
    ops: Option<String>,
    #[serde(default)]
    default_args: Vec<String>,
    default_topology: Option<String>,
    #[serde(default)]
    flags: Vec<FlagFile>,
    #[serde(default)]
    checks: std::collections::BTreeMap<String, CheckValue>,
    #[serde(default)]
    needs: Needs,
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn leak_all(v: Vec<String>) -> &'static [&'static str] {
    Box::leak(
        v.into_iter()
            .map(leak)
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

/// Sets `name` in `a` from a file's value, or says why it cannot.
fn set_check(a: Assert, name: &str, v: CheckValue) -> Result<Assert, String> {
    let check = CheckName::ALL
        .iter()
        .copied()
        .find(|c| c.to_string() == name)
        .ok_or_else(|| {
            let known: Vec<String> = CheckName::ALL.iter().map(|c| c.to_string()).collect();
            format!(
                "[checks] has no check {name:?}; known: {}",
                known.join(", ")
            )
        })?;
    let number = |v: CheckValue| match v {
        CheckValue::Number(n) if n >= 0.0 => Ok(n),
        _ => Err(format!(
            "[checks] {name} takes a non-negative number (or false to switch it off)"
        )),
    };
    if let CheckValue::Switch(false) = v {
        return Ok(a.switch_off(check));
    }
    Ok(match check {
        CheckName::NotStarved | CheckName::Isolation | CheckName::FailOnStall => match v {
            CheckValue::Switch(true) if check == CheckName::NotStarved => a.check_not_starved(),
            CheckValue::Switch(true) if check == CheckName::FailOnStall => a.fail_on_stall(),
            CheckValue::Switch(true) => a.check_isolation(),
            _ => return Err(format!("[checks] {name} takes true or false")),
        },
        CheckName::MaxSpreadPct => a.max_spread_pct(number(v)?),
        CheckName::MaxGapMs => a.max_gap_ms(number(v)? as u64),
        CheckName::MaxThroughputSpreadPct => a.max_throughput_spread_pct(number(v)?),
        CheckName::MaxWakeP99Us => a.max_wake_p99_us(number(v)? as u64),
        CheckName::MaxWakeCv => a.max_wake_cv(number(v)?),
        CheckName::MaxMigrationRatio => a.max_migration_ratio(number(v)?),
        CheckName::MinNumaLocality => a.min_numa_locality(number(v)?),
        CheckName::MaxWeightErrorPct => a.max_weight_error_pct(number(v)?),
        CheckName::MaxClassInversionPct => a.max_class_inversion_pct(number(v)?),
        CheckName::MaxImbalanceRatio => a.max_imbalance_ratio(number(v)?),
        CheckName::MaxLocalDsqDepth => a.max_local_dsq_depth(number(v)? as u32),
    })
}

/// Reads the declaration at `path`.
pub fn load(path: &Path) -> Result<Scheduler, DeclFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| DeclFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |what: String| DeclFileError::Invalid {
        path: path.to_path_buf(),
        what,
    };
    let file: DeclFile = toml::from_str(&text).map_err(|e| DeclFileError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if file.name.trim().is_empty() {
        return Err(invalid("name is empty".into()));
    }
    let binary = {
        let b = PathBuf::from(&file.binary);
        let b = if b.is_relative() {
            path.parent().unwrap_or(Path::new(".")).join(b)
        } else {
            b
        };
        b.to_string_lossy().into_owned()
    };
    let topology = file.default_topology.unwrap_or_else(|| "1n2l2c1t".into());
    topology
        .parse::<Topology>()
        .map_err(|e| invalid(format!("default_topology: {e}")))?;
    let mut checks = Assert::NONE;
    for (name, v) in file.checks {
        checks = set_check(checks, &name, v).map_err(invalid)?;
    }
    let flags: Vec<SchedFlag> = file
        .flags
        .into_iter()
        .map(|f| SchedFlag {
            name: leak(f.name),
            args: leak_all(f.args),
            requires: leak_all(f.requires),
        })
        .collect();
    let decl = Scheduler {
        name: leak(file.name),
        ops: file.ops.map(leak),
        binary: SchedulerBinary::Path(leak(binary)),
        default_args: leak_all(file.default_args),
        flags: Box::leak(flags.into_boxed_slice()),
        default_topology: leak(topology),
        checks,
        needs: file.needs,
    };
    // Every flag's `requires` must name a declared flag.
    for f in decl.flags {
        if let Some(r) = f
            .requires
            .iter()
            .find(|r| !decl.flags.iter().any(|d| d.name == **r))
        {
            return Err(invalid(format!(
                "flag {:?} requires {r:?}, which is not a declared flag",
                f.name
            )));
        }
    }
    Ok(decl)
}

#[cfg(test)]
mod tests {
    use ktstr_protocol::model::Check;

    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("sched.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_user_written_declaration_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            r#"
name = "scx_demo"
binary = "bin/scx_demo"
ops = "demo"
default_args = ["--stats", "0"]
default_topology = "1n2l4c1t"

[[flags]]
name = "llc"
args = ["--llc"]

[[flags]]
name = "steal"
args = ["--steal"]
requires = ["llc"]

[checks]
max_gap_ms = 5000
isolation = false
not_starved = true

[needs]
min_llcs = 2
"#,
        );
        let s = load(&p).unwrap();
        assert_eq!(s.name, "scx_demo");
        assert_eq!(s.ops, Some("demo"));
        assert_eq!(
            s.binary,
            SchedulerBinary::Path(leak(d.path().join("bin/scx_demo").display().to_string()))
        );
        assert_eq!(
            s.args(&["llc", "steal"]).unwrap(),
            ["--stats", "0", "--llc", "--steal"]
        );
        assert!(s.args(&["steal"]).is_err(), "requires");
        assert_eq!(s.checks.max_gap_ms, Check::On(5000));
        assert_eq!(s.checks.isolation, Check::Off);
        assert_eq!(s.checks.not_starved, Check::On(()));
        assert_eq!(s.needs.min_llcs, 2);
        assert_eq!(s.default_topology, "1n2l4c1t");
    }

    /// The guide's example is a declaration that reads.
    #[test]
    fn the_guides_example_reads() {
        let readme = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schedulers.md"),
        )
        .unwrap();
        let start = readme
            .find("```toml\nname = \"rusty\"")
            .expect("the example")
            + 8;
        let text = &readme[start..start + readme[start..].find("```").unwrap()];
        let d = tempfile::tempdir().unwrap();
        let s = load(&write(d.path(), text)).unwrap();
        assert_eq!(s.name, "rusty");
        assert_eq!(
            s.args(&["lowlat", "greedy"]).unwrap(),
            [
                "--stats",
                "0",
                "--slice-us",
                "5000",
                "--greedy-threshold",
                "1"
            ]
        );
        assert_eq!(s.checks.max_weight_error_pct, Check::Off);
        assert_eq!((s.needs.min_llcs, s.needs.max_cpus), (2, 64));
    }

    #[test]
    fn mistakes_are_named() {
        let d = tempfile::tempdir().unwrap();
        for (text, needle) in [
            (
                "name = \"x\"\nbinary = \"y\"\nflavour = 1\n",
                "unknown field",
            ),
            (
                "name = \"x\"\nbinary = \"y\"\n[checks]\nmax_gap = 5\n",
                "no check \"max_gap\"",
            ),
            (
                "name = \"x\"\nbinary = \"y\"\n[checks]\nisolation = 3\n",
                "true or false",
            ),
            (
                "name = \"x\"\nbinary = \"y\"\ndefault_topology = \"2x\"\n",
                "default_topology",
            ),
            (
                "name = \"x\"\nbinary = \"y\"\n[[flags]]\nname = \"a\"\nrequires = [\"b\"]\n",
                "not a declared flag",
            ),
            ("binary = \"y\"\n", "missing field `name`"),
        ] {
            let e = crate::errors::chain(&load(&write(d.path(), text)).unwrap_err());
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
