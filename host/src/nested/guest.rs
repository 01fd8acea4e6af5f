//! The L1 side: PID 1 in a QEMU guest with emulated SVM. Mounts the
//! pseudo filesystems, loads `irqbypass`, `kvm` and `kvm_amd`, checks that
//! /dev/kvm is hardware virtualization, runs the L2 plan on our VMM, prints
//! the outcome on the console and powers off. Every path ends in a marker
//! line and a power-off, so the host never waits for a timeout to learn
//! what happened.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::{CONFIG_PATH, ERROR_MARKER, NestedConfig, RESULT_MARKER, SKIP_MARKER};
use crate::progress::Progress;
use crate::runner::{self, RunConfig};
use crate::vm::detect::detect_kvm;
use crate::vm::kvm::backend::KvmBackend;
use crate::vm::{VmError, VmSpec};

/// `finit_module` flag: the kernel decompresses the module itself.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// Why L1 could not run L2; printed after [`ERROR_MARKER`].
#[derive(Debug, Error)]
enum L1Error {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{CONFIG_PATH}")]
    Config(#[source] serde_json::Error),
    #[error("topology {0}")]
    Topology(String, #[source] ktstr_protocol::model::TopologyError),
    #[error("launching L2")]
    Launch(#[source] VmError),
    #[error("encoding the outcome")]
    Outcome(#[source] serde_json::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> L1Error {
    let what = what.into();
    move |source| L1Error::Io { what, source }
}

/// Runs L1 to the end and powers off; never returns.
pub fn main() -> ! {
    match run() {
        Ok(line) => println!("{line}"),
        Err(e) => println!("{ERROR_MARKER}{}", crate::errors::chain(&e)),
    }
    power_off()
}

fn run() -> Result<String, L1Error> {
    mount_pseudo_filesystems()?;
    let text = std::fs::read_to_string(CONFIG_PATH).map_err(io(CONFIG_PATH))?;
    let cfg: NestedConfig = serde_json::from_str(&text).map_err(L1Error::Config)?;
    for m in &cfg.modules {
        load_module(m)?;
    }
    let kvm = detect_kvm();
    if !kvm.hardware {
        return Ok(format!("{SKIP_MARKER}{}", kvm.why));
    }
    println!("nested: {}", kvm.why);
    let topology = cfg
        .topology
        .parse()
        .map_err(|e| L1Error::Topology(cfg.topology.clone(), e))?;
    let mut spec = VmSpec::new(
        PathBuf::from(&cfg.kernel),
        PathBuf::from(&cfg.initramfs),
        topology,
    );
    spec.memory_mib = cfg.memory_mib;
    spec.verbose = cfg.verbose;
    // Our VMM boots the bzImage through its decompressor: with KASLR on,
    // the check that it moved the kernel proves that path.
    spec.kaslr = true;
    spec.cmdline_extra = cfg.cmdline_extra;
    let run_cfg = RunConfig {
        boot_timeout: Duration::from_secs(cfg.boot_timeout_s),
        t0: Instant::now(),
        progress: Progress::new(|m| println!("nested: {m}")),
        ..RunConfig::many(spec, cfg.plans)
    };
    let outcomes = runner::run_all(&KvmBackend, run_cfg).map_err(L1Error::Launch)?;
    let json = serde_json::to_string(&outcomes).map_err(L1Error::Outcome)?;
    Ok(format!("{RESULT_MARKER}{json}"))
}

fn mount_pseudo_filesystems() -> Result<(), L1Error> {
    for (fstype, target) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("tmpfs", "/tmp"),
    ] {
        std::fs::create_dir_all(target).map_err(io(format!("mkdir {target}")))?;
        // Literals without NUL bytes: these cannot fail.
        let src = CString::new(fstype).unwrap_or_default();
        let dst = CString::new(target).unwrap_or_default();
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            // devtmpfs may already be mounted by the kernel.
            if e.raw_os_error() != Some(libc::EBUSY) {
                return Err(io(format!("mount {fstype} on {target}"))(e));
            }
        }
    }
    Ok(())
}

/// Loads one module with `finit_module`, letting the kernel decompress it.
fn load_module(path: &str) -> Result<(), L1Error> {
    let f = File::open(path).map_err(io(format!("module {path}")))?;
    let flags = if path.ends_with(".xz") || path.ends_with(".zst") || path.ends_with(".gz") {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let params = c"";
    // SAFETY: a valid fd and NUL-terminated parameter string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(io(format!("loading {path}"))(e));
        }
    }
    println!("nested: loaded {path}");
    Ok(())
}

fn power_off() -> ! {
    // SAFETY: plain syscalls; as PID 1 we own the machine.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on failure (not PID 1, or no privilege).
    std::process::exit(1)
}
