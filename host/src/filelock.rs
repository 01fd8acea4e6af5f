//! An exclusive advisory lock on a file (`flock`), held until dropped:
//! how concurrent ktstr processes (nextest runs tests in parallel) take
//! turns at shared caches, such as a kernel fetch or the fixture build.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A held lock; dropping it (closing the file) releases it.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// Locks `path` (created if missing), waiting for another holder;
/// `on_wait` is called once when it has to wait.
pub fn lock(path: &Path, on_wait: impl FnOnce()) -> io::Result<FileLock> {
    let file = File::create(path)?;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open descriptor owned by `file`, which outlives
    // both calls; flock has no memory effects.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        on_wait();
        // SAFETY: as above.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(FileLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = lock(&path, || panic!("nobody holds it yet")).unwrap();
        let p = path.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _second = lock(&p, || tx.send(()).unwrap()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the second caller waited");
        drop(first);
        t.join().unwrap();
    }
}
