//! Kernel config checking: the list of options a ktstr guest kernel must
//! have (`kernels/required.config`, compiled in) and the comparison of a
//! kernel's `.config` against it. Pure text in, problems out; this module
//! reads a file only in [`check_config_file`].

use std::collections::HashMap;
use std::path::Path;

use super::error::{ConfigProblem, KernelError};

/// The options every ktstr guest kernel must have, one `CONFIG_X=value` a
/// line, `#` comments. The workspace's `kernels/required.config`.
pub const REQUIRED_CONFIG: &str = include_str!("../../../kernels/required.config");

/// One line of the required-options list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredOption {
    /// `CONFIG_...`.
    pub name: String,
    /// The value it must have (`y` for every option today).
    pub value: String,
}

/// Parses a required-options list: `CONFIG_X=value` lines, blank lines and
/// `#` comments. Anything else is an error, so a typo in the list cannot
/// silently drop a requirement.
pub fn parse_required(required_text: &str) -> Result<Vec<RequiredOption>, KernelError> {
    let mut out = Vec::new();
    for (i, raw) in required_text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || KernelError::BadRequiredList {
            line_no: i + 1,
            line: raw.to_string(),
        };
        let (name, value) = line.split_once('=').ok_or_else(bad)?;
        if !is_option_name(name) || value.is_empty() {
            return Err(bad());
        }
        out.push(RequiredOption {
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    Ok(out)
}

fn is_option_name(name: &str) -> bool {
    name.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// The options of a kernel `.config`: `CONFIG_X=value` lines. `# CONFIG_X
/// is not set` lines and comments are not recorded (an unset option is an
/// absent key).
pub fn parse_config(config_text: &str) -> HashMap<&str, &str> {
    config_text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let (name, value) = line.split_once('=')?;
            is_option_name(name).then_some((name, value))
        })
        .collect()
}

/// Every required option the config lacks or sets to another value, in the
/// order of the required list.
pub fn config_problems(
    config_text: &str,
    required_text: &str,
) -> Result<Vec<ConfigProblem>, KernelError> {
    let required = parse_required(required_text)?;
    let have = parse_config(config_text);
    Ok(required
        .into_iter()
        .filter_map(|req| match have.get(req.name.as_str()) {
            None => Some(ConfigProblem::NotSet {
                name: req.name,
                want: req.value,
            }),
            Some(got) if *got != req.value => Some(ConfigProblem::Wrong {
                name: req.name,
                want: req.value,
                got: (*got).to_string(),
            }),
            Some(_) => None,
        })
        .collect())
}

/// Checks a config text against a required list; the error lists every
/// missing or wrong option by name.
pub fn check_config(config_text: &str, required_text: &str) -> Result<(), KernelError> {
    check_config_named(config_text, required_text, "the given config")
}

/// Reads a config file and checks it; the error names the file.
pub fn check_config_file(path: &Path, required_text: &str) -> Result<(), KernelError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| KernelError::io("read kernel config", path, e))?;
    check_config_named(&text, required_text, &path.display().to_string())
}

fn check_config_named(
    config_text: &str,
    required_text: &str,
    origin: &str,
) -> Result<(), KernelError> {
    let problems = config_problems(config_text, required_text)?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(KernelError::ConfigMissing {
            origin: origin.to_string(),
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "# needed\nCONFIG_SCHED_CLASS_EXT=y\n\nCONFIG_NUMA=y\nCONFIG_HZ=250\n";

    #[test]
    fn compiled_in_list_parses_and_names_sched_ext() {
        let req = parse_required(REQUIRED_CONFIG).expect("kernels/required.config parses");
        assert!(
            req.iter()
                .any(|o| o.name == "CONFIG_SCHED_CLASS_EXT" && o.value == "y")
        );
        assert!(req.len() >= 10);
    }

    #[test]
    fn satisfied_config_passes() {
        let cfg = "#\n# Automatically generated\nCONFIG_SCHED_CLASS_EXT=y\nCONFIG_NUMA=y\nCONFIG_HZ=250\nCONFIG_OTHER=m\n";
        check_config(cfg, REQ).expect("all options present");
    }

    #[test]
    fn every_missing_option_is_named() {
        let cfg = "# CONFIG_SCHED_CLASS_EXT is not set\nCONFIG_NUMA=m\n";
        let problems = config_problems(cfg, REQ).unwrap();
        assert_eq!(
            problems,
            vec![
                ConfigProblem::NotSet {
                    name: "CONFIG_SCHED_CLASS_EXT".into(),
                    want: "y".into()
                },
                ConfigProblem::Wrong {
                    name: "CONFIG_NUMA".into(),
                    want: "y".into(),
                    got: "m".into()
                },
                ConfigProblem::NotSet {
                    name: "CONFIG_HZ".into(),
                    want: "250".into()
                },
            ]
        );
        let msg = check_config(cfg, REQ).unwrap_err().to_string();
        assert!(
            msg.contains("CONFIG_SCHED_CLASS_EXT is not set in the given config"),
            "{msg}"
        );
        assert!(
            msg.contains("CONFIG_NUMA=m in the given config, need CONFIG_NUMA=y"),
            "{msg}"
        );
        assert!(msg.contains("CONFIG_HZ is not set"), "{msg}");
    }

    #[test]
    fn file_check_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "CONFIG_NUMA=y\nCONFIG_HZ=250\n").unwrap();
        let msg = check_config_file(&path, REQ).unwrap_err().to_string();
        let want = format!("CONFIG_SCHED_CLASS_EXT is not set in {}", path.display());
        assert!(msg.contains(&want), "{msg}");
    }

    #[test]
    fn malformed_required_line_is_an_error() {
        let err = parse_required("CONFIG_A=y\nSCHED_EXT=y\n").unwrap_err();
        assert!(
            matches!(err, KernelError::BadRequiredList { line_no: 2, .. }),
            "{err}"
        );
        assert!(parse_required("CONFIG_A=\n").is_err());
        assert!(parse_required("CONFIG_=y\n").is_err());
    }

    #[test]
    fn config_parse_ignores_comments_and_keeps_quoted_values() {
        let map = parse_config("# CONFIG_A is not set\nCONFIG_B=\"x y\"\nnoise\n");
        assert_eq!(map.len(), 1);
        assert_eq!(map["CONFIG_B"], "\"x y\"");
    }
}
