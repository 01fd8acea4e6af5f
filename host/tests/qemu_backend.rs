//! Boots real kernels under QEMU (TCG here) with a tiny static C `/init`
//! that writes into the ring region through /dev/mem, and checks what the
//! host sees: the exit kind, the console, the region's bytes, freeze/thaw
//! over QMP, kill, and that nothing is left behind.
//!
//! Needs `qemu-system-x86_64`, `gcc` (static glibc) and a kernel: `$KTSTR_KERNEL`,
//! else the newest `kernels/*/bzImage` in the ktstr cache; each test prints
//! SKIP and passes when one is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ktstr_host::protocol::SharedMapping;
use ktstr_host::protocol::model::Topology;
use ktstr_host::protocol::{Shm, ShmLayout};
use ktstr_host::skip;
use ktstr_host::vm::qemu::{Accel, QemuBackend, QemuVm};
use ktstr_host::vm::{Backend, Vm, VmError, VmExit, VmSpec};
use ktstr_initramfs::InitramfsBuilder;

/// This process's user id, from /proc (no libc call needed).
fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// What the guest's init does after writing the ring.
#[derive(Clone, Copy)]
enum InitMode {
    PowerOff,
    SleepThenPowerOff(u32),
    Hang,
}

/// The value the guest writes into the header's `current_step` word.
const GUEST_MARK: u32 = 0x4242;
const BOOT_DEADLINE: Duration = Duration::from_secs(120);

/// Serializes the tests: each boots a VM on a 2-core machine, and the
/// leftover-process checks look at every QEMU child of this process.
static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

const INIT_C: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

static void say(const char *s) {
    int fd = open("/dev/console", O_WRONLY);
    if (fd >= 0) { write(fd, s, strlen(s)); close(fd); }
}

static void die(const char *what) {
    char buf[256];
    snprintf(buf, sizeof buf, "ktstr-test-init FAIL: %s: %s\n", what, strerror(errno));
    say(buf);
    reboot(RB_POWER_OFF);
    for (;;) pause();
}

int main(void) {
    mkdir("/proc", 0755);
    mkdir("/dev", 0755);
    if (mount("proc", "/proc", "proc", 0, 0)) die("mount /proc");
    if (mount("devtmpfs", "/dev", "devtmpfs", 0, 0)) die("mount /dev");
    char cmdline[4096] = {0};
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd < 0 || read(fd, cmdline, sizeof cmdline - 1) < 0) die("read /proc/cmdline");
    close(fd);
    char *p = strstr(cmdline, "ktstr.shm=");
    if (!p) { errno = ENOENT; die("no ktstr.shm= on the command line"); }
    char *end;
    unsigned long long addr = strtoull(p + strlen("ktstr.shm="), &end, 0);
    unsigned long long size = strtoull(end + 1, NULL, 0);
    int mem = open("/dev/mem", O_RDWR | O_SYNC);
    if (mem < 0) die("open /dev/mem");
    volatile unsigned char *r = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mem, addr);
    if (r == MAP_FAILED) die("mmap /dev/mem");
    char magic[9] = {0};
    for (int i = 0; i < 8; i++) magic[i] = r[i];
    char line[256];
    snprintf(line, sizeof line, "ktstr-test-init region %#llx+%#llx magic %s\n", addr, size, magic);
    say(line);
    *(volatile uint32_t *)(r + 64) = 0x4242;
    say("ktstr-test-init ok\n");
#ifdef HANG
    for (;;) pause();
#endif
#ifdef SLEEP_SECS
    sleep(SLEEP_SECS);
#endif
    reboot(RB_POWER_OFF);
    die("reboot(RB_POWER_OFF) returned");
    return 0;
}
"#;

fn qemu_on_path() -> bool {
    skip::tool("qemu-system-x86_64", "qemu-system-x86")
}

/// The kernel to boot (`$KTSTR_KERNEL`, else the default one), or `None`
/// after printing why the test is skipped.
fn prerequisites() -> Option<PathBuf> {
    if !qemu_on_path() {
        return None;
    }
    if let Some(k) = std::env::var_os("KTSTR_KERNEL") {
        return Some(PathBuf::from(k));
    }
    skip::default_kernel().map(|k| k.image)
}

/// Compiles the init for `mode` and packs it as `/init` in a cpio archive.
fn build_initramfs(dir: &Path, mode: InitMode) -> PathBuf {
    let src = dir.join("init.c");
    let bin = dir.join("init");
    std::fs::write(&src, INIT_C).unwrap();
    let mut cc = Command::new("gcc");
    cc.args(["-static", "-O2", "-o"]).arg(&bin).arg(&src);
    match mode {
        InitMode::PowerOff => {}
        InitMode::SleepThenPowerOff(s) => {
            cc.arg(format!("-DSLEEP_SECS={s}"));
        }
        InitMode::Hang => {
            cc.arg("-DHANG");
        }
    }
    let out = cc.output().expect("running gcc");
    assert!(
        out.status.success(),
        "gcc -static failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut b = InitramfsBuilder::new();
    b.add_file("/init", &bin).unwrap();
    let cpio = dir.join("initramfs.cpio");
    std::fs::write(&cpio, b.to_cpio().unwrap()).unwrap();
    cpio
}

fn spec(kernel: &Path, initramfs: &Path, topo: &str) -> VmSpec {
    let topology: Topology = topo.parse().unwrap();
    let mut s = VmSpec::new(kernel.into(), initramfs.into(), topology);
    s.memory_mib = 512;
    s
}

fn tcg() -> QemuBackend {
    QemuBackend::with_accel(Accel::Tcg)
}

/// Files this process left in /dev/shm.
fn our_shm_files() -> Vec<String> {
    let prefix = format!("ktstr-{}-", std::process::id());
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// QEMU processes (zombies included) whose parent is this process.
fn our_qemu_children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[stat.find('(').unwrap_or(0) + 1..close];
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if ppid == Some(me.as_str()) && comm.starts_with("qemu-system") {
            found.push(stat);
        }
    }
    found
}

/// Drops the VM and checks that its process, work dir and RAM files are gone.
fn drop_and_check_cleanup(vm: QemuVm) {
    let pid = vm.pid().unwrap();
    let workdir = vm.workdir().to_path_buf();
    drop(vm);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU {pid} still exists after drop"
    );
    assert!(!workdir.exists(), "{} left behind", workdir.display());
    assert_eq!(our_shm_files(), Vec::<String>::new(), "/dev/shm leftovers");
    assert_eq!(our_qemu_children(), Vec::<String>::new(), "QEMU children");
}

/// The region must hold exactly what `Shm::init` wrote, plus the guest's
/// mark: the guest kernel left it alone, and the guest's write at
/// guest-physical `addr + 64` landed at that offset of node 0's RAM file.
fn check_region_intact(vm: &QemuVm, shm_size: u64) {
    let handle = vm.shm();
    let shm = handle.shm();
    assert_eq!(shm.current_step().load(Ordering::Acquire), GUEST_MARK);
    let layout = ShmLayout::for_size(shm_size).unwrap();
    assert_eq!(Shm::attach(shm.region()).unwrap().layout(), layout);
    let fresh = SharedMapping::anonymous(shm_size as usize).unwrap();
    let expected = Shm::init(fresh.region(), layout).unwrap();
    expected.current_step().store(GUEST_MARK, Ordering::Relaxed);
    let (mut want, mut got) = (vec![0u8; shm_size as usize], vec![0u8; shm_size as usize]);
    fresh.region().read(0, &mut want).unwrap();
    shm.region().read(0, &mut got).unwrap();
    let first_diff = want.iter().zip(&got).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "region differs from its initial contents");
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOOT_DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn boots_writes_the_region_and_powers_off() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(kernel) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let initramfs = build_initramfs(dir.path(), InitMode::PowerOff);
    let spec = spec(&kernel, &initramfs, "1n1l2c1t");
    let start = Instant::now();
    let mut vm = tcg().launch_qemu(&spec).unwrap();
    eprintln!(
        "launch took {:?} (region at {:#x})",
        start.elapsed(),
        vm.shm_addr()
    );
    assert_eq!(
        our_shm_files(),
        Vec::<String>::new(),
        "RAM files are unlinked once QEMU runs"
    );
    // Everything else the VM made (QMP and gdb sockets, console, QEMU's
    // log) lives in a directory only this user can enter.
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(vm.workdir()).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o700,
            "work directory mode"
        );
        assert_eq!(meta.uid(), own_uid(), "owned by us");
        let names: Vec<String> = std::fs::read_dir(vm.workdir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.contains("qmp")), "{names:?}");
    }
    let exit = vm.wait_timeout(BOOT_DEADLINE).unwrap();
    let took = start.elapsed();
    let console = vm.console_tail(16 << 10);
    eprintln!("1n1l2c1t TCG: launch to exit {took:?}; console tail:\n{console}");
    assert_eq!(exit, Some(VmExit::Shutdown), "console:\n{console}");
    assert_eq!(vm.shutdown_reason(), Some("guest-shutdown"));
    assert!(console.contains("ktstr-test-init ok"), "{console}");
    assert!(console.contains("magic KTSTRSHM"), "{console}");
    check_region_intact(&vm, spec.shm_size);
    // Asking an ended VM is an error, not a hang.
    assert!(vm.freeze().is_err());
    assert_eq!(vm.kill().unwrap(), VmExit::Shutdown);
    drop_and_check_cleanup(vm);
}

#[test]
fn freeze_and_thaw_over_qmp() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(kernel) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let initramfs = build_initramfs(dir.path(), InitMode::SleepThenPowerOff(3));
    // Two NUMA nodes: the region lives in node 0's file of two.
    let spec = spec(&kernel, &initramfs, "2n2l1c1t");
    let start = Instant::now();
    let mut vm = tcg().launch_qemu(&spec).unwrap();
    wait_for("the guest's mark", || {
        vm.shm().shm().current_step().load(Ordering::Acquire) == GUEST_MARK
    });
    eprintln!("2n2l1c1t TCG: launch to guest mark {:?}", start.elapsed());
    vm.freeze().unwrap();
    assert_eq!(vm.query_status().unwrap(), "paused");
    // Longer than the guest's 3 s sleep: a frozen guest's clock stands still.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(vm.try_wait().unwrap(), None, "the VM ran on while frozen");
    assert_eq!(vm.query_status().unwrap(), "paused");
    vm.thaw().unwrap();
    assert_eq!(vm.query_status().unwrap(), "running");
    let thawed = Instant::now();
    let exit = vm.wait_timeout(BOOT_DEADLINE).unwrap();
    let console = vm.console_tail(16 << 10);
    eprintln!(
        "2n2l1c1t TCG: launch to exit {:?} (thaw to exit {:?})",
        start.elapsed(),
        thawed.elapsed()
    );
    assert_eq!(exit, Some(VmExit::Shutdown), "console:\n{console}");
    assert!(console.contains("ktstr-test-init ok"), "{console}");
    check_region_intact(&vm, spec.shm_size);
    drop_and_check_cleanup(vm);
}

#[test]
fn hung_guest_is_killed_through_the_trait() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(kernel) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let initramfs = build_initramfs(dir.path(), InitMode::Hang);
    let spec = spec(&kernel, &initramfs, "1n1l1c1t");
    let backend: Box<dyn Backend> = Box::new(tcg());
    assert_eq!(backend.name(), "qemu");
    let start = Instant::now();
    let mut vm = backend.launch(&spec).unwrap();
    wait_for("the guest's init", || {
        vm.console_tail(4096).contains("ktstr-test-init ok")
    });
    eprintln!("1n1l1c1t TCG: launch to init {:?}", start.elapsed());
    assert_eq!(vm.wait_timeout(Duration::from_secs(2)).unwrap(), None);
    let t = Instant::now();
    assert_eq!(vm.kill().unwrap(), VmExit::Killed);
    eprintln!("kill took {:?}", t.elapsed());
    assert_eq!(vm.try_wait().unwrap(), Some(VmExit::Killed));
    assert_eq!(vm.kill().unwrap(), VmExit::Killed);
    drop(vm);
    assert_eq!(our_shm_files(), Vec::<String>::new(), "/dev/shm leftovers");
    assert_eq!(our_qemu_children(), Vec::<String>::new(), "QEMU children");
}

#[test]
fn qemu_startup_failure_reports_its_output() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !qemu_on_path() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("not-a-kernel");
    let initramfs = dir.path().join("initramfs.cpio");
    std::fs::write(&kernel, vec![0u8; 8192]).unwrap();
    std::fs::write(&initramfs, b"").unwrap();
    let err = tcg()
        .launch(&spec(&kernel, &initramfs, "1n1l1c1t"))
        .err()
        .expect("QEMU cannot boot zeros");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, VmError::Setup(_)), "{msg}");
    assert!(msg.contains("QEMU exited (exit status: 1)"), "{msg}");
    assert!(
        msg.contains("QEMU's output:\nqemu"),
        "QEMU's own words: {msg}"
    );
    assert_eq!(our_shm_files(), Vec::<String>::new(), "/dev/shm leftovers");
    assert_eq!(our_qemu_children(), Vec::<String>::new(), "QEMU children");
}

#[test]
fn a_topology_tcg_cannot_address_is_refused_before_qemu_starts() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !qemu_on_path() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("kernel");
    let initramfs = dir.path().join("initramfs.cpio");
    std::fs::write(&kernel, vec![0u8; 8192]).unwrap();
    std::fs::write(&initramfs, b"").unwrap();
    let started = Instant::now();
    let err = tcg()
        .launch(&spec(&kernel, &initramfs, "1n10l12c2t"))
        .err()
        .expect("APIC IDs past 254 under TCG");
    let msg = err.to_string();
    assert!(
        msg.contains("APIC IDs up to 311") && msg.contains("hardware KVM"),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused up front"
    );
    assert_eq!(our_qemu_children(), Vec::<String>::new(), "no QEMU started");
    assert_eq!(our_shm_files(), Vec::<String>::new(), "/dev/shm leftovers");
}

#[test]
fn missing_binary_is_unavailable() {
    let mut backend = tcg();
    backend.set_binary("/nonexistent/qemu-system-x86_64");
    let spec = spec(Path::new("/k"), Path::new("/i"), "1n1l1c1t");
    match backend.launch(&spec).err() {
        Some(VmError::Unavailable { backend, why }) => {
            assert_eq!(backend, "qemu");
            assert!(why.contains("/nonexistent/qemu-system-x86_64"), "{why}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
