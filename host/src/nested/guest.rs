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

use super::{CONFIG_PATH, ERROR_MARKER, NestedConfig, RESULT_MARKER, SKIP_MARKER};
use crate::backend::hardware_kvm;
use crate::runner::{self, RunConfig};
use crate::vm::VmSpec;
use crate::vm::kvm::backend::KvmBackend;

/// `finit_module` flag: the kernel decompresses the module itself.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// Runs L1 to the end and powers off; never returns.
pub fn main() -> ! {
    match run() {
        Ok(line) => println!("{line}"),
        Err(e) => println!("{ERROR_MARKER}{e}"),
    }
    power_off()
}

fn run() -> Result<String, String> {
    mount_pseudo_filesystems()?;
    let text = std::fs::read_to_string(CONFIG_PATH).map_err(|e| format!("{CONFIG_PATH}: {e}"))?;
    let cfg: NestedConfig =
        serde_json::from_str(&text).map_err(|e| format!("{CONFIG_PATH}: {e}"))?;
    for m in &cfg.modules {
        load_module(m)?;
    }
    let (hardware, why) = hardware_kvm();
    if !hardware {
        return Ok(format!("{SKIP_MARKER}{why}"));
    }
    println!("nested: {why}");
    let topology = cfg
        .topology
        .parse()
        .map_err(|e| format!("topology {}: {e}", cfg.topology))?;
    let mut spec = VmSpec::new(
        PathBuf::from(&cfg.kernel),
        PathBuf::from(&cfg.initramfs),
        topology,
    );
    spec.memory_mib = cfg.memory_mib;
    spec.verbose = cfg.verbose;
    spec.cmdline_extra = cfg.cmdline_extra;
    let run_cfg = RunConfig {
        spec,
        plan: cfg.plan,
        boot_timeout: Duration::from_secs(cfg.boot_timeout_s),
        run_timeout: None,
        t0: Instant::now(),
        progress: Box::new(|m| println!("nested: {m}")),
    };
    let outcome = runner::run(&KvmBackend, run_cfg).map_err(|e| format!("launching L2: {e}"))?;
    let json = serde_json::to_string(&outcome).map_err(|e| format!("outcome: {e}"))?;
    Ok(format!("{RESULT_MARKER}{json}"))
}

fn mount_pseudo_filesystems() -> Result<(), String> {
    for (fstype, target) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("tmpfs", "/tmp"),
    ] {
        std::fs::create_dir_all(target).map_err(|e| format!("mkdir {target}: {e}"))?;
        let src = CString::new(fstype).map_err(|e| e.to_string())?;
        let dst = CString::new(target).map_err(|e| e.to_string())?;
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
                return Err(format!("mount {fstype} on {target}: {e}"));
            }
        }
    }
    Ok(())
}

/// Loads one module with `finit_module`, letting the kernel decompress it.
fn load_module(path: &str) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("module {path}: {e}"))?;
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
            return Err(format!("loading {path}: {e}"));
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
