//! Where a command will write its results, checked before it runs: a
//! result that cannot be written is an error up front, not after the VMs
//! ran; and the writing of `--report` pages. Imports nothing from the
//! other command modules.

use anyhow::Result;

/// Fails, before anything is built or booted, when a result could not be
/// written to `path` later: its directory is missing or not writable, or
/// the file exists and cannot be opened for writing. Nothing is changed
/// (a file created to find out is removed again).
pub(super) fn ensure_writable(what: &str, path: &std::path::Path) -> Result<()> {
    use std::fs::OpenOptions;
    let refuse = |e: std::io::Error| {
        anyhow::anyhow!(
            "{what} {} cannot be written ({e}); nothing was run, so no result is lost",
            path.display()
        )
    };
    if path.is_dir() {
        return Err(refuse(std::io::Error::other("it is a directory")));
    }
    if path.exists() {
        OpenOptions::new().append(true).open(path).map_err(refuse)?;
        return Ok(());
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(refuse)?;
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Fails, before anything is built or booted, when pages could not be
/// written into the directory `dir` later: it is a file, or it cannot be
/// created, or a file cannot be created in it. A missing directory is
/// created (the pages go there anyway); a file created to find out is
/// removed again.
pub(super) fn ensure_dir_writable(what: &str, dir: &std::path::Path) -> Result<()> {
    let refuse = |e: std::io::Error| {
        anyhow::anyhow!(
            "{what} {} cannot be written into ({e}); nothing was run, so no result is lost",
            dir.display()
        )
    };
    if dir.exists() && !dir.is_dir() {
        return Err(refuse(std::io::Error::other("it is not a directory")));
    }
    std::fs::create_dir_all(dir).map_err(refuse)?;
    tempfile::Builder::new()
        .prefix(".ktstr-report-check")
        .tempfile_in(dir)
        .map_err(refuse)?;
    Ok(())
}

/// Writes the page `name` into `dir` and returns its path.
pub(super) fn write_page(
    dir: &std::path::Path,
    name: &str,
    html: &str,
) -> Result<std::path::PathBuf> {
    use anyhow::Context as _;
    let path = dir.join(name);
    std::fs::write(&path, html).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_directory_is_created_or_refused_before_anything_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new/pages");
        ensure_dir_writable("--report", &dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the probe is removed"
        );
        let file = tmp.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let e = ensure_dir_writable("--report", &file)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--report") && e.contains("not a directory"),
            "{e}"
        );
        let under_file = file.join("sub");
        let e = ensure_dir_writable("--report", &under_file)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nothing was run"), "{e}");
        let p = write_page(&dir, "run-x.html", "<html></html>").unwrap();
        assert_eq!(std::fs::read_to_string(p).unwrap(), "<html></html>");
    }
}
