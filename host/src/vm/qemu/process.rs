//! Starting and classifying the QEMU process: finding the binary, spawning
//! it so that it dies with us, and turning its exit status into a
//! [`VmExit`].

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;

use crate::vm::VmExit;

/// The first executable regular file called `name` in the `PATH`-style
/// list `path_var`.
pub fn find_on_path(name: &str, path_var: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Whether `path` is a regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Makes `cmd`'s child get SIGKILL when this process dies, and puts it in
/// its own process group so a terminal's Ctrl-C reaches only us (QEMU
/// treats SIGINT as a clean shutdown, which would look like a guest
/// poweroff).
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    cmd.process_group(0);
    // SAFETY: the hook runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: prctl(2) and getppid(2) are plain
    // system calls, and the errors are built from raw errno values without
    // allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // We died between fork and prctl: the signal will never come.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from a thread that lives as long as the process.
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not
/// the process; spawning from the caller's thread would kill QEMU as soon
/// as, say, a test's or a runner's worker thread ended while the VM was
/// handed elsewhere.
pub fn spawn_from_keeper(cmd: Command) -> io::Result<Child> {
    static KEEPER: OnceLock<Option<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        thread::Builder::new()
            .name("ktstr-qemu-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .ok()
            .map(|_| tx)
    });
    let gone = || io::Error::other("the QEMU spawner thread is not running");
    let keeper = keeper.as_ref().ok_or_else(gone)?;
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper.send((cmd, reply_tx)).map_err(|_| gone())?;
    reply_rx.recv().map_err(|_| gone())?
}

/// How an exited QEMU process ended. `killed_by_us`: we sent SIGKILL.
/// `shutdown_reason`: the reason of QEMU's last QMP `SHUTDOWN` event, which
/// tells a guest poweroff or reset (both end as exit status 0 under
/// `-no-reboot`) from QEMU being asked to quit by a signal.
pub fn classify(
    status: ExitStatus,
    killed_by_us: bool,
    shutdown_reason: Option<&str>,
    stderr_tail: impl FnOnce() -> String,
) -> VmExit {
    if killed_by_us && status.signal() == Some(libc::SIGKILL) {
        return VmExit::Killed;
    }
    if !status.success() {
        return VmExit::Failed {
            status: status.to_string(),
            stderr: stderr_tail(),
        };
    }
    match shutdown_reason {
        Some(reason @ ("host-signal" | "host-qmp-quit")) => VmExit::Failed {
            status: format!("{status}, but QEMU was told to quit ({reason}), not by the guest"),
            stderr: stderr_tail(),
        },
        _ => VmExit::Shutdown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn signalled(sig: i32) -> ExitStatus {
        ExitStatus::from_raw(sig)
    }

    #[test]
    fn exit_statuses_map_to_vm_exits() {
        let tail = || "tail".to_string();
        assert_eq!(classify(exited(0), false, None, tail), VmExit::Shutdown);
        assert_eq!(
            classify(exited(0), false, Some("guest-shutdown"), tail),
            VmExit::Shutdown
        );
        assert_eq!(
            classify(exited(0), false, Some("guest-reset"), tail),
            VmExit::Shutdown
        );
        assert_eq!(
            classify(signalled(libc::SIGKILL), true, None, tail),
            VmExit::Killed
        );
        // Exited by itself just before our kill landed.
        assert_eq!(classify(exited(0), true, None, tail), VmExit::Shutdown);
        assert!(matches!(
            classify(signalled(libc::SIGKILL), false, None, tail),
            VmExit::Failed { status, stderr } if status.contains("SIGKILL") && stderr == "tail"
        ));
        assert!(matches!(
            classify(exited(1), false, None, tail),
            VmExit::Failed { status, .. } if status.contains("exit status: 1")
        ));
        assert!(matches!(
            classify(exited(0), false, Some("host-signal"), tail),
            VmExit::Failed { status, .. } if status.contains("host-signal")
        ));
    }

    #[test]
    fn path_search_finds_executables_only() {
        let dir = std::env::temp_dir().join(format!("ktstr-path-test-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("tool"), "").unwrap();
        std::fs::write(b.join("tool"), "").unwrap();
        std::fs::set_permissions(b.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(find_on_path("tool", &path), Some(b.join("tool")));
        assert_eq!(find_on_path("missing", &path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
