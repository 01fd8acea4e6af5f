//! The part of libtest's command line that cargo and cargo-nextest use:
//! `--list` (with `--format terse`), name filters with `--exact` and
//! `--skip`, `--ignored` / `--include-ignored`, `--nocapture`. Options
//! that only tune libtest's own output or threads are accepted and have
//! no effect here (each test is a VM, run one after another); anything
//! else is an error, as libtest makes it.

/// What the command line asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub list: bool,
    /// `--format terse`: the listing is only `NAME: test` lines.
    pub terse: bool,
    /// Tests whose names contain one of these (all when empty).
    pub filters: Vec<String>,
    /// Filters must equal the name, not be contained in it.
    pub exact: bool,
    /// Tests whose names contain one of these are left out.
    pub skip: Vec<String>,
    /// Only the ignored tests.
    pub ignored: bool,
    /// Ignored tests as well.
    pub include_ignored: bool,
    /// Stream the VM's progress while a test runs.
    pub nocapture: bool,
    /// ktstr's own: print `NAME<TAB>REASON` for every test this binary
    /// skips (`ktstr junit-skipped` reads it).
    pub list_skipped: bool,
}

/// libtest options that take a value and change nothing here.
const IGNORED_WITH_VALUE: &[&str] = &[
    "--test-threads",
    "--color",
    "-Z",
    "--logfile",
    "--shuffle-seed",
];

/// libtest flags that change nothing here.
const IGNORED_FLAGS: &[&str] = &[
    "--show-output",
    "--quiet",
    "-q",
    "--test",
    "--bench",
    "--report-time",
    "--ensure-time",
    "--shuffle",
    "--force-run-in-process",
];

/// Parses `argv` (without the program name).
pub fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{what} needs a value")),
            }
        };
        match key {
            "--list" => a.list = true,
            "--exact" => a.exact = true,
            "--ignored" => a.ignored = true,
            "--include-ignored" => a.include_ignored = true,
            "--nocapture" | "--no-capture" => a.nocapture = true,
            "--ktstr-list-skipped" => a.list_skipped = true,
            "--skip" => a.skip.push(value("--skip")?),
            "--format" => match value("--format")?.as_str() {
                "terse" => a.terse = true,
                "pretty" => a.terse = false,
                other => return Err(format!("--format {other}: only pretty and terse")),
            },
            k if IGNORED_WITH_VALUE.contains(&k) => {
                value(k)?;
            }
            k if IGNORED_FLAGS.contains(&k) => {}
            k if k.starts_with('-') => {
                return Err(format!(
                    "unknown option {k:?} (this test binary speaks the libtest options cargo \
                     and nextest use: --list, --format, --exact, --skip, --ignored, \
                     --include-ignored, --nocapture)"
                ));
            }
            _ => a.filters.push(arg.clone()),
        }
    }
    Ok(a)
}

impl Args {
    /// Whether the test called `name` passes the filters.
    pub fn selects(&self, name: &str) -> bool {
        let hit = |f: &String| {
            if self.exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(hit))
            && !self.skip.iter().any(|s| {
                if self.exact {
                    name == s
                } else {
                    name.contains(s.as_str())
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn what_cargo_and_nextest_pass() {
        let a = args("--list --format terse").unwrap();
        assert!(a.list && a.terse && !a.ignored);
        let a = args("--list --format=terse --ignored").unwrap();
        assert!(a.list && a.terse && a.ignored);
        let a = args("--exact sched::two_cgroups --nocapture").unwrap();
        assert!(a.exact && a.nocapture);
        assert!(a.selects("sched::two_cgroups"));
        assert!(!a.selects("sched::two_cgroups_more"));
        let a = args("cgroups --skip slow --test-threads 1 --color never -q").unwrap();
        assert!(a.selects("two_cgroups") && !a.selects("slow_cgroups") && !a.selects("x"));
        assert!(args("").unwrap().selects("anything"));
    }

    #[test]
    fn unknown_options_and_missing_values_are_errors() {
        assert!(args("--frobnicate").unwrap_err().contains("--frobnicate"));
        assert!(args("--skip").unwrap_err().contains("needs a value"));
        assert!(args("--format json").is_err());
    }
}
