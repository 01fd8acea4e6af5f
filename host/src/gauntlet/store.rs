//! The results store: every sweep writes its cells and a manifest under
//! `<target>/ktstr/runs/<run-id>/`, which `merge` and `compare` read back.
//! A baseline is a name for a run (`<target>/ktstr/baselines/NAME` holds
//! the run's directory).
//!
//! ```text
//! runs/<run-id>/manifest.json   kernels, scheduler, profiles, presets,
//!                               scenarios, commit, host, time, shard
//! runs/<run-id>/cells/*.json    one CellRecord per variant
//! runs/<run-id>/matrix.txt, results.json, junit.xml
//! ```
//!
//! File names come from scenario, preset and flag names, which a user's
//! declaration may spell any way: they are reduced to `[A-Za-z0-9._+-]`.

use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::matrix::{self, CellRecord};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a ktstr result: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}: no ktstr results here (no cells/ directory)")]
    NotARun(PathBuf),
    #[error("no run or baseline called {0:?} (looked in {1})")]
    Unknown(String, PathBuf),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// `name` reduced to characters safe in a file name.
pub fn file_safe(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '+' | '-' => c,
            '/' => '~',
            _ => '_',
        })
        .collect();
    match s.trim_start_matches('.') {
        "" => "_".into(),
        t => t.to_string(),
    }
}

/// Where runs and baselines live: `<target>/ktstr`, with `<target>` from
/// `CARGO_TARGET_DIR`, else `./target`.
pub fn default_root() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("ktstr")
}

/// A run id: UTC date and time, then the process id
/// (`20261202-081500-4242`), sortable and unique on one host.
pub fn new_run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{}-{}", utc_stamp(secs), std::process::id())
}

/// `YYYYMMDD-HHMMSS` of Unix time `secs` (UTC; civil-from-days).
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One run's directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    /// Creates `root/runs/<id>/cells` (private to the user).
    pub fn create(root: &Path, id: &str) -> Result<RunDir, StoreError> {
        let path = root.join("runs").join(file_safe(id));
        let cells = path.join("cells");
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&cells)
            .map_err(io("creating", &cells))?;
        Ok(RunDir { path })
    }

    /// Writes one cell's record.
    pub fn write_cell(&self, records: &[CellRecord], r: &CellRecord) -> Result<(), StoreError> {
        let file = self
            .path
            .join("cells")
            .join(format!("{}.json", file_safe(&matrix::name_of(records, r))));
        let text = serde_json::to_string_pretty(r).map_err(|source| StoreError::Parse {
            path: file.clone(),
            source,
        })?;
        fs::write(&file, text).map_err(io("writing", &file))
    }

    /// Writes `name` (the manifest, matrix, JSON, JUnit) in the run dir.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf, StoreError> {
        let file = self.path.join(name);
        fs::write(&file, text).map_err(io("writing", &file))?;
        Ok(file)
    }

    /// The run's cells, in file-name order.
    pub fn read_cells(dir: &Path) -> Result<Vec<CellRecord>, StoreError> {
        let cells = dir.join("cells");
        if !cells.is_dir() {
            return Err(StoreError::NotARun(dir.to_path_buf()));
        }
        let mut files: Vec<PathBuf> = fs::read_dir(&cells)
            .map_err(io("reading", &cells))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|f| {
                let text = fs::read_to_string(&f).map_err(io("reading", &f))?;
                serde_json::from_str(&text).map_err(|source| StoreError::Parse { path: f, source })
            })
            .collect()
    }

    /// The manifest, or `null` when it is missing or unreadable.
    pub fn read_manifest(dir: &Path) -> serde_json::Value {
        fs::read_to_string(dir.join("manifest.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Names the run at `run` `name` (`root/baselines/NAME`).
pub fn save_baseline(root: &Path, name: &str, run: &Path) -> Result<PathBuf, StoreError> {
    let dir = root.join("baselines");
    fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let file = dir.join(file_safe(name));
    let target = fs::canonicalize(run).unwrap_or_else(|_| run.to_path_buf());
    fs::write(&file, target.to_string_lossy().as_bytes()).map_err(io("writing", &file))?;
    Ok(file)
}

/// A run named by a path, a run id under `root/runs`, or a baseline name.
pub fn resolve(root: &Path, what: &str) -> Result<PathBuf, StoreError> {
    let p = Path::new(what);
    if p.join("cells").is_dir() {
        return Ok(p.to_path_buf());
    }
    let by_id = root.join("runs").join(file_safe(what));
    if by_id.join("cells").is_dir() {
        return Ok(by_id);
    }
    let baseline = root.join("baselines").join(file_safe(what));
    if let Ok(text) = fs::read_to_string(&baseline) {
        let run = PathBuf::from(text.trim());
        if run.join("cells").is_dir() {
            return Ok(run);
        }
    }
    Err(StoreError::Unknown(what.to_string(), root.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_safe_and_stamps_are_civil_dates() {
        assert_eq!(
            file_safe("steady/1n2l2c1t/slow+crash"),
            "steady~1n2l2c1t~slow+crash"
        );
        assert_eq!(file_safe("../../etc/passwd"), "~..~etc~passwd");
        assert_eq!(file_safe(""), "_");
        assert_eq!(file_safe("a b\0c"), "a_b_c");
        assert_eq!(utc_stamp(0), "19700101-000000");
        // 2026-12-02 08:15:00 UTC
        assert_eq!(utc_stamp(1_796_199_300), "20261202-081500");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
    }

    #[test]
    fn runs_baselines_and_bad_dirs() {
        let root = tempfile::tempdir().unwrap();
        let run = RunDir::create(root.path(), "r1").unwrap();
        assert!(RunDir::read_cells(&run.path).unwrap().is_empty());
        save_baseline(root.path(), "main", &run.path).unwrap();
        assert_eq!(
            fs::canonicalize(resolve(root.path(), "main").unwrap()).unwrap(),
            fs::canonicalize(&run.path).unwrap()
        );
        assert_eq!(resolve(root.path(), "r1").unwrap(), run.path);
        assert!(matches!(
            resolve(root.path(), "nope"),
            Err(StoreError::Unknown(..))
        ));
        assert!(matches!(
            RunDir::read_cells(root.path()),
            Err(StoreError::NotARun(_))
        ));
        fs::write(run.path.join("cells/x.json"), "{").unwrap();
        assert!(matches!(
            RunDir::read_cells(&run.path),
            Err(StoreError::Parse { .. })
        ));
    }
}
