//! The QEMU backend: runs `qemu-system-x86_64` (KVM where the host has
//! hardware virtualization, else TCG) with one shared RAM file per NUMA
//! node, maps the ring region straight out of node 0's file, and drives the
//! VM over QMP (freeze = `stop`, thaw = `cont`).
//!
//! Owns the QEMU process, its work directory and its RAM files, and removes
//! all of them when the VM is dropped; it does not know about scenarios or
//! messages.
//!
//! Files: `cmdline` (arguments), `layout` (guest-physical layout), `qmp`
//! (monitor client), `gdb` (gdbstub client, write watchpoints only),
//! `process` (spawning and exit classification).

mod cmdline;
mod fast_boot;
mod gdb;
mod layout;
pub(crate) mod process;
mod qmp;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ktstr_protocol::SharedMapping;

use crate::vm::ram::{Forbidden, MappedRam, PhysMemory};
use ktstr_protocol::{Shm, ShmLayout};

pub use cmdline::Accel;
pub use layout::MAX_MEMORY_MIB;

use self::cmdline::{QemuFiles, qemu_args};
use self::layout::{FALLBACK_KERNEL_END, MemoryLayout, kernel_end};
use self::qmp::Qmp;
use super::detect::{KvmSupport, detect_kvm};
use super::{Backend, ShmHandle, VcpuRegs, Vm, VmError, VmExit, VmSpec};

/// The QEMU binary we run.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// Where guest RAM files live: tmpfs, so guest memory is plain shared memory.
pub const RAM_DIR: &str = "/dev/shm";
/// How long QEMU may take from spawn to a negotiated QMP connection.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one QMP command may take (a `stop` waits for every vCPU).
const QMP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of QEMU's own output kept in errors.
const STDERR_TAIL: usize = 4096;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// Starts QEMU VMs.
#[derive(Clone, Debug)]
pub struct QemuBackend {
    binary: Option<PathBuf>,
    accel: Accel,
    accel_reason: String,
}

impl Default for QemuBackend {
    fn default() -> Self {
        Self::detect()
    }
}

impl QemuBackend {
    /// A backend that runs QEMU under KVM when the host has hardware
    /// virtualization, else under TCG; QEMU is looked up on `PATH` at
    /// launch.
    pub fn new(kvm: &KvmSupport) -> Self {
        let accel = if kvm.hardware { Accel::Kvm } else { Accel::Tcg };
        Self {
            binary: None,
            accel,
            accel_reason: kvm.why.clone(),
        }
    }

    /// A backend for what [`detect_kvm`] finds on this host.
    pub fn detect() -> Self {
        Self::new(&detect_kvm())
    }

    /// A backend that uses `accel` regardless of what the host offers.
    pub fn with_accel(accel: Accel) -> Self {
        Self {
            binary: None,
            accel,
            accel_reason: "chosen by the caller".into(),
        }
    }

    /// Replaces the QEMU binary (default: `qemu-system-x86_64` on `PATH`).
    pub fn set_binary(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.binary = Some(path.into());
        self
    }

    /// The accelerator VMs will use.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// Why that accelerator was chosen.
    pub fn accel_reason(&self) -> &str {
        &self.accel_reason
    }

    fn binary(&self) -> Result<PathBuf, VmError> {
        self.binary_from(&std::env::var_os("PATH").unwrap_or_default())
    }

    /// The QEMU to run, searching `path_var` unless one was set.
    fn binary_from(&self, path_var: &std::ffi::OsStr) -> Result<PathBuf, VmError> {
        let unavailable = |why: String| VmError::Unavailable {
            backend: "qemu",
            why,
        };
        match &self.binary {
            Some(p) if process::is_executable(p) => Ok(p.clone()),
            Some(p) => Err(unavailable(format!(
                "{} is not an executable file",
                p.display()
            ))),
            None => process::find_on_path(QEMU_BINARY, path_var).ok_or_else(|| {
                unavailable(format!(
                    "{QEMU_BINARY} is not on PATH; install it with \
                         `apt-get install qemu-system-x86`"
                ))
            }),
        }
    }

    /// Like [`Backend::launch`], returning the concrete type for callers
    /// that want QEMU-specific queries.
    ///
    /// Steps: plan the memory layout, create the RAM files, map and
    /// initialise the region in node 0's file, spawn QEMU, negotiate QMP,
    /// unlink the RAM files so nothing stays in /dev/shm if we die. The
    /// greeting may come early (from the monitor's I/O thread), but the
    /// reply to `qmp_capabilities` comes from QEMU's main loop, which runs
    /// only after the board, and so every RAM file, is set up.
    pub fn launch_qemu(&self, spec: &VmSpec) -> Result<QemuVm, VmError> {
        let binary = self.binary()?;
        let topo = &spec.topology;
        topo.validate()?;
        let mut header = Vec::with_capacity(4096);
        File::open(&spec.kernel)
            .and_then(|f| f.take(4096).read_to_end(&mut header))
            .map_err(io_err(format!("reading kernel {}", spec.kernel.display())))?;
        let initrd_len = fs::metadata(&spec.initramfs)
            .map_err(io_err(format!(
                "inspecting initramfs {}",
                spec.initramfs.display()
            )))?
            .len();
        let layout = MemoryLayout::plan(
            spec.memory_mib,
            topo.numa_nodes,
            spec.shm_size,
            kernel_end(&header).unwrap_or(FALLBACK_KERNEL_END),
            initrd_len,
        )?;
        let shm_layout = ShmLayout::for_size(spec.shm_size)?;

        let (workdir, unique) = make_workdir()?;
        let mut owned = Owned {
            workdir,
            ram_files: Vec::new(),
            child: None,
        };
        let prefix = format!("ktstr-{}-{unique}", std::process::id());
        let files = QemuFiles::new(&owned.workdir, Path::new(RAM_DIR), &prefix, topo.numa_nodes);
        // sockaddr_un.sun_path holds 108 bytes including the NUL.
        if files.qmp.as_os_str().len() >= 108 {
            return Err(VmError::Setup(format!(
                "QMP socket path {} is longer than a Unix socket allows; set TMPDIR to a shorter directory",
                files.qmp.display()
            )));
        }
        let fast = fast_boot::plan(spec, self.accel == Accel::Tcg);
        match (&fast.pvh_kernel, &fast.pvh_skipped) {
            (Some(k), _) => tracing::debug!("entering the kernel through PVH: {}", k.display()),
            (None, Some(why)) => tracing::info!(
                "booting {} as a bzImage (no PVH entry: {why})",
                spec.kernel.display()
            ),
            (None, None) => {}
        }
        let args = qemu_args(spec, self.accel, &layout, &files, &fast)?;

        let mut node0 = None;
        let mut ram_maps = Vec::new();
        for path in &files.ram {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io_err(format!(
                    "creating guest RAM file {}",
                    path.display()
                )))?;
            owned.ram_files.push(path.clone());
            file.set_len(layout.node_bytes).map_err(io_err(format!(
                "sizing guest RAM file {} to {} MiB",
                path.display(),
                layout.node_mib()
            )))?;
            // The whole node, mapped shared: kernel-memory access reads
            // what the guest sees. Address space only until touched.
            let base = ram_maps.len() as u64 * layout.node_bytes;
            ram_maps.push((
                base,
                Arc::new(SharedMapping::map_fd(&file, 0, layout.node_bytes as usize)?),
            ));
            node0.get_or_insert(file);
        }
        let ram = Arc::new(MappedRam::new(
            ram_maps,
            vec![Forbidden {
                range: layout.shm_addr..layout.shm_addr + layout.shm_size,
                what: "ring region",
            }],
        ));
        let node0 = node0.ok_or_else(|| VmError::Setup("no NUMA nodes".into()))?;
        let mapping = SharedMapping::map_fd(&node0, layout.shm_addr, layout.shm_size as usize)?;
        drop(node0);
        Shm::init(mapping.region(), shm_layout)?;
        let shm = ShmHandle::new(Arc::new(mapping), shm_layout);

        let log_path = owned.workdir.join("qemu.log");
        let log =
            File::create(&log_path).map_err(io_err(format!("creating {}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io_err("duplicating the QEMU log file"))?;
        let mut cmd = Command::new(&binary);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        process::die_with_parent(&mut cmd);
        let child = process::spawn_from_keeper(cmd)
            .map_err(io_err(format!("starting {}", binary.display())))?;
        let child = owned.child.insert(child);

        let qmp = connect_qmp(&files.qmp, child, &log_path)?;
        while let Some(path) = owned.ram_files.pop() {
            if let Err(e) = fs::remove_file(&path) {
                owned.ram_files.push(path.clone());
                return Err(VmError::Io {
                    what: format!("unlinking guest RAM file {}", path.display()),
                    source: e,
                });
            }
        }
        Ok(QemuVm {
            shm,
            ram,
            gdb_socket: files.gdb,
            gdb: None,
            qmp: Some(qmp),
            exit: None,
            killed: false,
            shutdown_reason: None,
            layout,
            console: files.console,
            log: log_path,
            owned,
        })
    }
}

impl Backend for QemuBackend {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn launch(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, VmError> {
        Ok(Box::new(self.launch_qemu(spec)?))
    }
}

/// A fresh private directory `$TMPDIR/ktstr-qemu-<pid>-<n>` and its `n`.
fn make_workdir() -> Result<(PathBuf, u64), VmError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("ktstr-qemu-{}-{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok((dir, n)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(VmError::Io {
                    what: format!("creating VM work directory {}", dir.display()),
                    source: e,
                });
            }
        }
    }
}

/// The last `max_bytes` of a file, lossily decoded; empty if unreadable.
fn file_tail(path: &Path, max_bytes: usize) -> String {
    let read = || -> io::Result<Vec<u8>> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(max_bytes as u64)))?;
        let mut buf = Vec::new();
        f.take(max_bytes as u64).read_to_end(&mut buf)?;
        Ok(buf)
    };
    read()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Connects to QEMU's QMP socket once it listens and negotiates; fails with
/// QEMU's own output if it exits or stalls first.
fn connect_qmp(socket: &Path, child: &mut Child, log: &Path) -> Result<Qmp, VmError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let startup_failed = |child: &mut Child, what: String| {
        // Give a dying QEMU a moment to exit so the error can say how.
        let until = Instant::now() + Duration::from_secs(1);
        let mut status = child.try_wait().ok().flatten();
        while status.is_none() && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
            status = child.try_wait().ok().flatten();
        }
        let how = status.map_or("QEMU still runs".to_string(), |s| {
            format!("QEMU exited ({s})")
        });
        VmError::Setup(format!(
            "QEMU did not start: {what}; {how}. QEMU's output:\n{}",
            file_tail(log, STDERR_TAIL)
        ))
    };
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(startup_failed(child, "it exited during startup".into()));
        }
        match UnixStream::connect(socket) {
            Ok(stream) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let mut qmp = Qmp::handshake(stream, left.max(Duration::from_secs(1)))
                    .map_err(|e| startup_failed(child, e.to_string()))?;
                qmp.set_timeout(QMP_TIMEOUT);
                return Ok(qmp);
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(startup_failed(
                    child,
                    format!(
                        "its QMP socket {} did not accept a connection within {STARTUP_TIMEOUT:?} ({e})",
                        socket.display()
                    ),
                ));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// What a VM created on the host, undone on drop: the QEMU process (killed
/// and reaped), the RAM files not yet unlinked, the work directory.
struct Owned {
    workdir: PathBuf,
    ram_files: Vec<PathBuf>,
    child: Option<Child>,
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(None) = child.try_wait()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        for path in &self.ram_files {
            let _ = fs::remove_file(path);
        }
        let _ = fs::remove_dir_all(&self.workdir);
    }
}

/// A QEMU VM. Dropping it kills QEMU if still running, reaps it and
/// removes its work directory and RAM files.
pub struct QemuVm {
    shm: ShmHandle,
    /// Every node's RAM file, mapped at its guest-physical base.
    ram: Arc<MappedRam>,
    /// The gdbstub's socket, and the connection once a watchpoint asked
    /// for one.
    gdb_socket: PathBuf,
    gdb: Option<gdb::Gdb>,
    qmp: Option<Qmp>,
    exit: Option<VmExit>,
    killed: bool,
    shutdown_reason: Option<String>,
    layout: MemoryLayout,
    console: PathBuf,
    log: PathBuf,
    owned: Owned,
}

impl QemuVm {
    /// QMP `query-status`: `running`, `paused`, `shutdown`, ...
    pub fn query_status(&mut self) -> Result<String, VmError> {
        self.qmp_mut()?.status()
    }

    /// After exit, the reason of QEMU's last `SHUTDOWN` event:
    /// `guest-shutdown` (poweroff), `guest-reset` (reboot or panic, turned
    /// into an exit by `-no-reboot`), `host-signal`, ...
    pub fn shutdown_reason(&self) -> Option<&str> {
        self.shutdown_reason.as_deref()
    }

    /// Guest-physical address of the shared-memory region.
    pub fn shm_addr(&self) -> u64 {
        self.layout.shm_addr
    }

    /// The VM's private work directory (console log, QEMU log, QMP socket).
    pub fn workdir(&self) -> &Path {
        &self.owned.workdir
    }

    /// QEMU's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.owned.child.as_ref().map(Child::id)
    }

    fn qmp_mut(&mut self) -> Result<&mut Qmp, VmError> {
        if let Some(exit) = self.try_wait()? {
            return Err(VmError::Qmp(format!("the VM has ended ({exit})")));
        }
        self.qmp
            .as_mut()
            .ok_or_else(|| VmError::Qmp("no QMP connection".into()))
    }

    fn child(&mut self) -> &mut Child {
        self.owned
            .child
            .as_mut()
            .expect("a launched QemuVm always has its child")
    }

    /// Records how the reaped QEMU ended.
    fn finish(&mut self, status: std::process::ExitStatus) -> VmExit {
        if let Some(qmp) = self.qmp.as_mut() {
            qmp.drain(Duration::from_millis(500));
            self.shutdown_reason = qmp.shutdown_reason().map(str::to_owned);
        }
        let log = &self.log;
        let exit = process::classify(status, self.killed, self.shutdown_reason.as_deref(), || {
            file_tail(log, STDERR_TAIL)
        });
        self.exit = Some(exit.clone());
        exit
    }
}

impl Vm for QemuVm {
    fn shm(&self) -> ShmHandle {
        self.shm.clone()
    }

    fn try_wait(&mut self) -> Result<Option<VmExit>, VmError> {
        if let Some(exit) = &self.exit {
            return Ok(Some(exit.clone()));
        }
        match self.child().try_wait() {
            Ok(None) => Ok(None),
            Ok(Some(status)) => Ok(Some(self.finish(status))),
            Err(e) => Err(io_err("checking on the QEMU process")(e)),
        }
    }

    fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<VmExit>, VmError> {
        let deadline = Instant::now() + timeout;
        let mut nap = Duration::from_millis(1);
        loop {
            if let Some(exit) = self.try_wait()? {
                return Ok(Some(exit));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            thread::sleep(nap.min(deadline - now));
            nap = (nap * 2).min(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) -> Result<VmExit, VmError> {
        if let Some(exit) = self.try_wait()? {
            return Ok(exit);
        }
        self.killed = true;
        let child = self.child();
        child.kill().map_err(io_err("killing QEMU"))?;
        let status = child.wait().map_err(io_err("reaping QEMU"))?;
        Ok(self.finish(status))
    }

    fn host_sched(&self) -> Option<Vec<crate::vm::HostThreadTime>> {
        crate::vm::process_thread_times(self.pid()?)
    }

    fn console_tail(&self, max_bytes: usize) -> String {
        file_tail(&self.console, max_bytes)
    }

    fn freeze(&mut self) -> Result<(), VmError> {
        let qmp = self.qmp_mut()?;
        qmp.execute("stop")?;
        // `stop` returns once every vCPU has left guest code.
        match qmp.status()?.as_str() {
            "paused" => Ok(()),
            other => Err(VmError::Qmp(format!(
                "after stop the VM is {other:?}, not \"paused\""
            ))),
        }
    }

    fn thaw(&mut self) -> Result<(), VmError> {
        self.qmp_mut()?.execute("cont").map(drop)
    }

    fn watch(&mut self, va: u64, _pa: u64, len: u32) -> Result<(), VmError> {
        if self.gdb.is_none() {
            self.gdb = Some(gdb::Gdb::connect(&self.gdb_socket)?);
        }
        match self.gdb.as_mut() {
            Some(g) => g.watch(va, len),
            None => Err(VmError::Qmp("gdbstub: not connected".into())),
        }
    }

    fn unwatch(&mut self, va: u64) -> Result<(), VmError> {
        match self.gdb.as_mut() {
            Some(g) => g.unwatch(va, 4),
            None => Ok(()),
        }
    }

    fn poll_watch(&mut self) -> Result<Option<u64>, VmError> {
        match self.gdb.as_mut() {
            Some(g) => g.poll_hit(),
            None => Ok(None),
        }
    }

    fn resume_watch(&mut self) -> Result<(), VmError> {
        match self.gdb.as_mut() {
            Some(g) => g.resume(),
            None => Ok(()),
        }
    }

    fn frozen_registers(&mut self) -> Option<Vec<VcpuRegs>> {
        let text = self.qmp_mut().ok()?.human("info registers -a").ok()?;
        Some(parse_registers(&text))
    }

    fn guest_ram(&self) -> Option<Arc<dyn PhysMemory>> {
        Some(self.ram.clone())
    }
}

/// The registers of each `CPU#N` block of `info registers -a` output:
/// `RIP=`, `RSP=`, `RFL=` and `CR3=` (hex); a block without RIP is left
/// out.
fn parse_registers(text: &str) -> Vec<VcpuRegs> {
    let mut out: Vec<VcpuRegs> = Vec::new();
    let mut cur: Option<(VcpuRegs, bool)> = None;
    for line in text.lines() {
        if let Some(n) = line.trim().strip_prefix("CPU#") {
            if let Some((r, true)) = cur.take() {
                out.push(r);
            }
            let vcpu = n.trim().parse().unwrap_or(out.len() as u32);
            cur = Some((
                VcpuRegs {
                    vcpu,
                    ..Default::default()
                },
                false,
            ));
            continue;
        }
        let Some((r, seen)) = cur.as_mut() else {
            continue;
        };
        for word in line.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let Ok(v) = u64::from_str_radix(value, 16) else {
                continue;
            };
            match key {
                "RIP" => {
                    r.rip = v;
                    *seen = true;
                }
                "RSP" => r.rsp = v,
                "RFL" => r.rflags = v,
                "CR3" => r.cr3 = Some(v),
                _ => {}
            }
        }
    }
    if let Some((r, true)) = cur {
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_registers_are_parsed_per_cpu() {
        let text = "CPU#0\nRAX=0000000000000000 RBX=0000000000000001\n\
                    RSI=0 RDI=0 RBP=0 RSP=ffffffff82603e58\n\
                    RIP=ffffffff81c2a1cf RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\n\
                    CR0=80050033 CR2=0000000000000000 CR3=000000000260c000 CR4=00350ef0\n\
                    CPU#1\nRSP=ffffc90000083e80\nRIP=ffffffff81001234 RFL=00000202\n\
                    CPU#2\ngarbage RIP=notahex\n";
        let regs = parse_registers(text);
        assert_eq!(regs.len(), 2, "{regs:?}");
        assert_eq!(
            regs[0],
            VcpuRegs {
                vcpu: 0,
                rip: 0xffff_ffff_81c2_a1cf,
                rsp: 0xffff_ffff_8260_3e58,
                rflags: 0x246,
                cr3: Some(0x260_c000),
            }
        );
        assert_eq!(
            (regs[1].vcpu, regs[1].rip, regs[1].cr3),
            (1, 0xffff_ffff_8100_1234, None)
        );
        assert!(parse_registers("").is_empty());
    }

    #[test]
    fn missing_qemu_names_the_package() {
        let backend = QemuBackend::with_accel(Accel::Tcg);
        let empty = std::env::temp_dir().join("ktstr-no-such-dir");
        match backend.binary_from(empty.as_os_str()) {
            Err(VmError::Unavailable { backend, why }) => {
                assert_eq!(backend, "qemu");
                assert!(why.contains("apt-get install qemu-system-x86"), "{why}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn file_tail_keeps_the_end() {
        let dir = std::env::temp_dir().join(format!("ktstr-tail-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("log");
        fs::write(&f, "0123456789").unwrap();
        assert_eq!(file_tail(&f, 4), "6789");
        assert_eq!(file_tail(&f, 100), "0123456789");
        assert_eq!(file_tail(&dir.join("missing"), 4), "");
        fs::remove_dir_all(&dir).unwrap();
    }
}
