//! Where a command will write its results, checked before it runs: a
//! result that cannot be written is an error up front, not after the VMs
//! ran. Imports nothing from the other command modules.

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
