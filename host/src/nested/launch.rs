//! The host side of the nested check: pack the L1 initramfs (the static
//! L1 program as `/init`, the KVM modules, the L2 kernel and initramfs, the
//! config), run QEMU with TCG and `-cpu max` (which emulates SVM), stream
//! its console, and turn the marker line into an outcome. QEMU dies with
//! us, is killed on timeout or Ctrl-C, and the initramfs file is removed on
//! every path.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ktstr_initramfs::{Compression, InitramfsBuilder};
use ktstr_protocol::model::Plan;
use ktstr_protocol::model::Topology;
use thiserror::Error;

use super::{CONFIG_PATH, ERROR_MARKER, NestedConfig, RESULT_MARKER, SKIP_MARKER};
use crate::interrupt;
use crate::progress::Progress;
use crate::vm::qemu::QEMU_BINARY;
use crate::vm::qemu::process::{die_with_parent, find_on_path, spawn_from_keeper};

/// The L1 program's binary name (`host/src/bin/`).
pub const GUEST_BIN: &str = "ktstr-nested-guest";
/// Console bytes kept for error reports.
const CONSOLE_KEEP: usize = 16 << 10;
/// How long QEMU gets to power off after the marker line.
const POWEROFF_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum NestedError {
    #[error("{QEMU_BINARY} is not on PATH; `cargo xtask setup` installs it")]
    NoQemu,
    #[error("packing the L1 initramfs: {0}")]
    Initramfs(#[from] ktstr_initramfs::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("L1 gave no result within {after:?}; console tail:\n{console}")]
    Timeout { after: Duration, console: String },
    #[error("interrupted; console tail:\n{console}")]
    Interrupted { console: String },
    #[error("L1 ended without a result; console tail:\n{console}")]
    NoResult { console: String },
    #[error("L1 failed: {message}; console tail:\n{console}")]
    L1Failed { message: String, console: String },
    #[error("L1 printed an outcome that is not JSON ({error}): {line}")]
    BadOutcome { error: String, line: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NestedError {
    let what = what.into();
    move |source| NestedError::Io { what, source }
}

/// What to run nested.
pub struct NestedRequest<'a> {
    /// The bzImage L1 boots; L2 boots it too.
    pub kernel: &'a Path,
    /// The L2 initramfs (the agent's).
    pub l2_initramfs: &'a Path,
    /// KVM modules in load order (`fetch_kvm_modules`).
    pub modules: &'a [PathBuf],
    /// The static L1 program (`build_static(.., GUEST_BIN)`).
    pub guest_bin: &'a Path,
    pub topology: Topology,
    /// L2 RAM in MiB.
    pub memory_mib: u64,
    /// Run in order on one L2 guest while they pass; the outcome is a JSON
    /// array with one entry per plan run.
    pub plans: Vec<Plan>,
    /// How long L2 gets to say Hello.
    pub boot_timeout: Duration,
    /// The whole L1 run.
    pub timeout: Duration,
    /// Full L2 kernel console in the outcome's console tail.
    pub verbose: bool,
    /// Extra L2 kernel command-line words.
    pub l2_cmdline_extra: Vec<String>,
    /// Progress lines (L1's own progress is passed through).
    pub progress: Progress,
}

/// How the nested run ended.
#[derive(Debug)]
pub enum NestedOutcome {
    /// L2 ran; the runner's outcomes as a JSON array (`RunOutcome`'s fields), one per plan run.
    Ran(serde_json::Value),
    /// L1 could not offer hardware KVM (the reason it printed).
    Skipped(String),
}

/// A finished nested run.
#[derive(Debug)]
pub struct NestedRun {
    pub outcome: NestedOutcome,
    /// The tail of L1's console (which carries L1's progress lines).
    pub console: String,
    pub elapsed: Duration,
}

/// Removes a file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Kills and reaps QEMU when dropped.
struct QemuChild(Child);

impl Drop for QemuChild {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Builds the L1 initramfs file (uncompressed: L1 unpacks it faster under
/// TCG than it would inflate it).
fn l1_initramfs(req: &NestedRequest<'_>) -> Result<TempFile, NestedError> {
    let mut b = InitramfsBuilder::new();
    b.set_compression(Compression::None);
    b.add_file("/init", req.guest_bin)?;
    for dir in ["/proc", "/sys", "/dev", "/tmp", "/kvm", "/l2"] {
        b.add_dir(dir, 0o755)?;
    }
    let mut modules = Vec::new();
    for m in req.modules {
        let name = m
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let at = format!("/kvm/{name}");
        b.add_file(&at, m)?;
        modules.push(at);
    }
    b.add_file("/l2/bzImage", req.kernel)?;
    b.add_file("/l2/initramfs", req.l2_initramfs)?;
    let cfg = NestedConfig {
        modules,
        kernel: "/l2/bzImage".into(),
        initramfs: "/l2/initramfs".into(),
        topology: req.topology.to_string(),
        memory_mib: req.memory_mib,
        boot_timeout_s: req.boot_timeout.as_secs().max(1),
        // QEMU's TCG does not apply the SVM intercept to XSETBV, so an L2
        // XSETBV changes XCR0 behind L1's KVM: CPUID(0xD) then disagrees
        // with XCR0 and the L2 kernel's xstate init oopses. Plain FXSAVE
        // sidesteps it; hardware SVM and VMX intercept XSETBV.
        cmdline_extra: std::iter::once("noxsave".to_string())
            .chain(req.l2_cmdline_extra.iter().cloned())
            .collect(),
        verbose: req.verbose,
        plans: req.plans.clone(),
    };
    let json = serde_json::to_vec(&cfg).map_err(|e| NestedError::BadOutcome {
        error: e.to_string(),
        line: "the L1 config".into(),
    })?;
    b.add_bytes(CONFIG_PATH, json, 0o644)?;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "ktstr-nested-{}-{}.cpio",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let bytes = b.build()?;
    // Private to us (it carries our VMM and the plans), and never a file
    // someone else put at that name: only a file we created is ours to
    // remove.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(format!("creating {}", path.display())))?;
    let file = TempFile(path);
    std::io::Write::write_all(&mut f, &bytes)
        .map_err(io(format!("writing {}", file.0.display())))?;
    Ok(file)
}

/// Keeps the last [`CONSOLE_KEEP`] bytes of console text.
#[derive(Default)]
struct Console(String);

impl Console {
    fn push(&mut self, line: &str) {
        self.0.push_str(line);
        self.0.push('\n');
        if self.0.len() > 2 * CONSOLE_KEEP {
            let mut cut = self.0.len() - CONSOLE_KEEP;
            while !self.0.is_char_boundary(cut) {
                cut += 1;
            }
            self.0.drain(..cut);
        }
    }

    fn tail(&self) -> String {
        let mut cut = self.0.len().saturating_sub(CONSOLE_KEEP);
        while !self.0.is_char_boundary(cut) {
            cut += 1;
        }
        self.0[cut..].to_string()
    }
}

/// Boots L1 and waits for its marker line.
pub fn run(req: &NestedRequest<'_>) -> Result<NestedRun, NestedError> {
    let start = Instant::now();
    let qemu = std::env::var_os("PATH")
        .and_then(|p| find_on_path(QEMU_BINARY, &p))
        .ok_or(NestedError::NoQemu)?;
    let initramfs = l1_initramfs(req)?;
    // L1 needs the L2 RAM plus its own kernel and the unpacked initramfs.
    let l1_mib = req.memory_mib + 1024;
    let mut cmd = Command::new(qemu);
    // One L1 vCPU: with two, L2 vCPUs on different L1 vCPUs stopped seeing
    // each other's stores under QEMU 7.2's emulated nested paging (an L2
    // spinlock spun forever with its holder idle). L2 still gets as many
    // vCPUs as its topology asks for; they share L1's one CPU.
    cmd.args(["-accel", "tcg,thread=single", "-cpu", "max", "-smp", "1"])
        .args(["-m", &l1_mib.to_string()])
        .args(["-nodefaults", "-display", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-kernel"])
        .arg(req.kernel)
        .arg("-initrd")
        .arg(&initramfs.0)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    req.progress.say(&format!(
        "booting L1 under QEMU TCG with emulated SVM ({l1_mib} MiB); L2 is {} on our VMM",
        req.topology
    ));
    let mut child = QemuChild(spawn_from_keeper(cmd).map_err(io("starting QEMU"))?);
    let (tx, rx) = mpsc::channel::<String>();
    if let Some(out) = child.0.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    if let Some(err) = child.0.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(format!("qemu: {line}")).is_err() {
                    break;
                }
            }
        });
    }
    let deadline = start + req.timeout;
    let mut console = Console::default();
    let outcome = loop {
        if interrupt::interrupted() {
            return Err(NestedError::Interrupted {
                console: console.tail(),
            });
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(NestedError::Timeout {
                after: req.timeout,
                console: console.tail(),
            });
        }
        let line = match rx.recv_timeout((deadline - now).min(Duration::from_millis(500))) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(NestedError::NoResult {
                    console: console.tail(),
                });
            }
        };
        // Serial lines end in \r; the console may also carry escapes.
        let line = line.trim_end_matches('\r').to_string();
        if let Some(p) = line.strip_prefix("nested: ") {
            req.progress.say(&format!("L1: {p}"));
        }
        if let Some(json) = find_marker(&line, RESULT_MARKER) {
            let v = serde_json::from_str(json).map_err(|e| NestedError::BadOutcome {
                error: e.to_string(),
                line: json.chars().take(400).collect(),
            })?;
            break NestedOutcome::Ran(v);
        }
        if let Some(why) = find_marker(&line, SKIP_MARKER) {
            break NestedOutcome::Skipped(why.to_string());
        }
        if let Some(msg) = find_marker(&line, ERROR_MARKER) {
            return Err(NestedError::L1Failed {
                message: msg.to_string(),
                console: console.tail(),
            });
        }
        console.push(&line);
    };
    // L1 powers off after the marker; give it a moment, then kill it.
    let off = Instant::now() + POWEROFF_WAIT;
    while Instant::now() < off && matches!(child.0.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(child);
    Ok(NestedRun {
        outcome,
        console: console.tail(),
        elapsed: start.elapsed(),
    })
}

/// The text after `marker` when `line` carries it.
fn find_marker<'l>(line: &'l str, marker: &str) -> Option<&'l str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_after_console_noise() {
        assert_eq!(
            find_marker("\u{1b}[0mKTSTR-NESTED-SKIP no svm", SKIP_MARKER),
            Some("no svm")
        );
        assert_eq!(find_marker("nested: booting", RESULT_MARKER), None);
    }

    #[test]
    fn console_keeps_only_its_tail() {
        let mut c = Console::default();
        for i in 0..10_000 {
            c.push(&format!("line {i} é"));
        }
        let t = c.tail();
        assert!(t.len() <= CONSOLE_KEEP);
        assert!(t.ends_with("line 9999 é\n"));
    }
}
