//! Makes sure the host has what a run needs (QEMU), installing it with apt
//! when running as root on Debian, otherwise naming the exact command.

use std::path::Path;
use std::process::Command;

use thiserror::Error;

use crate::progress::Progress;

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{tool} is not installed; install it with:\n    {command}")]
    Missing { tool: String, command: String },
    #[error("`{command}` failed ({status}):\n{stderr_tail}")]
    InstallFailed {
        command: String,
        status: String,
        stderr_tail: String,
    },
    #[error("running `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `name` is an executable on PATH.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Installs Debian packages providing missing tools. `needs` pairs a tool on
/// PATH with the package that provides it; `progress` hears what is done.
pub fn ensure_tools(needs: &[(&str, &str)], progress: &Progress) -> Result<(), SetupError> {
    let missing: Vec<(&str, &str)> = needs
        .iter()
        .copied()
        .filter(|(tool, _)| !on_path(tool))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    let command = format!(
        "apt-get update && apt-get install -y {}",
        packages.join(" ")
    );
    let debian = Path::new("/etc/debian_version").exists() && on_path("apt-get");
    if !(is_root() && debian) {
        let prefix = if debian { "sudo " } else { "" };
        return Err(SetupError::Missing {
            tool: missing
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
                .join(", "),
            command: format!("{prefix}{command}"),
        });
    }
    progress.say(&format!(
        "installing {} with apt (running as root on Debian)",
        packages.join(" ")
    ));
    let run = |args: &[&str]| -> Result<(), SetupError> {
        let mut apt = Command::new("apt-get");
        apt.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run_install(apt, &command)
    };
    run(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&packages);
    run(&install)?;
    Ok(())
}

/// The tools a QEMU-backend run needs.
pub const QEMU_TOOLS: &[(&str, &str)] = &[("qemu-system-x86_64", "qemu-system-x86")];

/// What building the BPF fixture scheduler (scheds/build.sh) needs.
pub const BPF_TOOLS: &[(&str, &str)] = &[
    ("clang-14", "clang-14"),
    ("llvm-strip-14", "llvm-14"),
    ("bpftool", "bpftool"),
    ("zstd", "zstd"),
    ("gcc", "gcc"),
    ("/usr/include/bpf/libbpf.h", "libbpf-dev"),
    ("/usr/include/libelf.h", "libelf-dev"),
];

/// What the ACPI table tests use to check our tables independently.
pub const ACPI_TOOLS: &[(&str, &str)] = &[("iasl", "acpica-tools")];

/// What the initramfs tests use to read our archives independently.
pub const ARCHIVE_TOOLS: &[(&str, &str)] = &[("cpio", "cpio")];

/// The programs the payload scenarios run in the guest.
pub const PAYLOAD_TOOLS: &[(&str, &str)] = &[
    ("/usr/bin/stress-ng", "stress-ng"),
    ("/usr/bin/cyclictest", "rt-tests"),
];

/// What the HTML report test opens pages in (headless, for screenshots).
pub const REPORT_TOOLS: &[(&str, &str)] = &[("chromium", "chromium")];

/// Everything `cargo xtask setup` installs: QEMU for runs, iasl and cpio
/// for the independent ACPI and archive checks, the BPF toolchain for the
/// fixture scheduler, the payload scenarios' programs, and Chromium for
/// the report pages' screenshot test.
pub fn setup_tools() -> Vec<(&'static str, &'static str)> {
    [
        QEMU_TOOLS,
        ACPI_TOOLS,
        ARCHIVE_TOOLS,
        BPF_TOOLS,
        PAYLOAD_TOOLS,
        REPORT_TOOLS,
    ]
    .concat()
}

/// Installs cargo-nextest from crates.io (`cargo install --locked`) when
/// `cargo nextest` does not run: the runner the example's nextest profile
/// and sharded CI jobs use. Building it takes minutes, once.
pub fn ensure_nextest(progress: &Progress) -> Result<(), SetupError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let works = Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Ok(());
    }
    let command = format!("{cargo} install --locked cargo-nextest");
    progress.say(&format!(
        "installing cargo-nextest: {command} (builds for a few minutes)"
    ));
    let mut install = Command::new(&cargo);
    install.args(["install", "--locked", "cargo-nextest"]);
    run_install(install, &command)?;
    Ok(())
}

/// Runs an installer; a failure carries its status and the last lines it
/// wrote to stderr.
fn run_install(mut cmd: Command, command: &str) -> Result<(), SetupError> {
    let out = cmd.output().map_err(|source| SetupError::Spawn {
        command: command.to_string(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut tail: Vec<&str> = stderr.lines().rev().take(20).collect();
    tail.reverse();
    Err(SetupError::InstallFailed {
        command: command.to_string(),
        status: out.status.to_string(),
        stderr_tail: tail.join("\n"),
    })
}
