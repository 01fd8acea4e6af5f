//! Which backend runs a VM, and why: the one place that decides whether
//! /dev/kvm is hardware virtualization ([`detect_kvm`]) and what
//! `--backend auto|qemu|kvm` resolves to ([`select`]).
//!
//! Both backends ask this module; neither probes the host on its own. It
//! starts nothing.

use std::fs::OpenOptions;
use std::path::Path;
use std::str::FromStr;

use thiserror::Error;

use super::kvm::backend::KvmBackend;
use super::qemu::QemuBackend;
use super::{Backend, VmError};

/// The user's backend choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    #[default]
    Auto,
    Qemu,
    Kvm,
}

/// A `--backend` value that names no backend.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unknown backend {0:?}: expected auto, qemu or kvm")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendChoice {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "qemu" => Ok(Self::Qemu),
            "kvm" => Ok(Self::Kvm),
            other => Err(UnknownBackend(other.to_string())),
        }
    }
}

/// What the host offers for running guests under KVM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmSupport {
    /// /dev/kvm is backed by hardware virtualization (kvm_intel or
    /// kvm_amd) and this process can open it.
    pub hardware: bool,
    /// The KVM flavour module loaded (`kvm_intel`, `kvm_amd`, `kvm_pvm`...).
    pub module: Option<String>,
    /// One line saying why, for progress output and SKIP lines.
    pub why: String,
}

/// Which KVM flavour module is loaded, if any, looking in `sys_module`
/// (normally `/sys/module`).
pub fn kvm_flavour(sys_module: &Path) -> Option<String> {
    let entries = std::fs::read_dir(sys_module).ok()?;
    let mut found: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("kvm_"))
        .collect();
    found.sort();
    // A hardware module wins over anything else loaded beside it.
    found
        .iter()
        .find(|m| *m == "kvm_intel" || *m == "kvm_amd")
        .cloned()
        .or_else(|| found.into_iter().next())
}

/// Whether /dev/kvm is hardware virtualization this process can use.
pub fn detect_kvm() -> KvmSupport {
    detect_kvm_at(Path::new("/sys/module"), Path::new("/dev/kvm"))
}

/// [`detect_kvm`] against other paths, for tests.
pub fn detect_kvm_at(sys_module: &Path, dev_kvm: &Path) -> KvmSupport {
    let module = kvm_flavour(sys_module);
    let (hardware, why) = match module.as_deref() {
        _ if !dev_kvm.exists() => (false, format!("{} does not exist", dev_kvm.display())),
        Some(m @ ("kvm_intel" | "kvm_amd")) => {
            match OpenOptions::new().read(true).write(true).open(dev_kvm) {
                Ok(_) => (true, format!("/dev/kvm is hardware virtualization ({m})")),
                Err(e) => (
                    false,
                    format!("{m} is loaded but {} cannot be opened ({e})", dev_kvm.display()),
                ),
            }
        }
        Some(m) => (
            false,
            format!("/dev/kvm is not hardware virtualization ({m})"),
        ),
        None => (false, "no kvm_intel or kvm_amd module is loaded".into()),
    };
    KvmSupport {
        hardware,
        module,
        why,
    }
}

/// Resolves the choice to a backend and a one-line reason.
pub fn select(choice: BackendChoice) -> Result<(Box<dyn Backend>, String), VmError> {
    select_with(choice, &detect_kvm())
}

/// [`select`] with a given detection result.
pub fn select_with(
    choice: BackendChoice,
    kvm: &KvmSupport,
) -> Result<(Box<dyn Backend>, String), VmError> {
    let hw = kvm.hardware;
    let why = &kvm.why;
    match choice {
        BackendChoice::Qemu => Ok((
            Box::new(QemuBackend::new(kvm)),
            format!("qemu (requested; {})", if hw { "with KVM" } else { "TCG" }),
        )),
        BackendChoice::Kvm if hw => Ok((Box::new(KvmBackend), format!("kvm (requested; {why})"))),
        BackendChoice::Kvm => Err(VmError::Unavailable {
            backend: "kvm",
            why: format!(
                "our KVM VMM boots Linux only on hardware virtualization, and {why}; use --backend qemu or auto"
            ),
        }),
        BackendChoice::Auto => Ok((
            Box::new(QemuBackend::new(kvm)),
            format!(
                "qemu ({why}; {})",
                if hw { "QEMU uses KVM" } else { "QEMU uses TCG" }
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choices() {
        assert_eq!(
            "auto".parse::<BackendChoice>().unwrap(),
            BackendChoice::Auto
        );
        assert!(
            "xen"
                .parse::<BackendChoice>()
                .unwrap_err()
                .to_string()
                .contains("auto, qemu or kvm")
        );
    }

    #[test]
    fn kvm_backend_needs_hardware_virtualization() {
        let kvm = detect_kvm();
        match select(BackendChoice::Kvm) {
            Ok((b, _)) => assert!(kvm.hardware && b.name() == "kvm"),
            Err(e) => {
                assert!(!kvm.hardware);
                let e = e.to_string();
                assert!(e.contains(&kvm.why) && e.contains("--backend qemu"), "{e}");
            }
        }
    }

    #[test]
    fn detection_from_fake_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("module");
        std::fs::create_dir(&sys).unwrap();
        for m in ["kvm", "kvm_pvm", "loop"] {
            std::fs::create_dir(sys.join(m)).unwrap();
        }
        assert_eq!(kvm_flavour(&sys).as_deref(), Some("kvm_pvm"));
        let dev = dir.path().join("kvm");
        let none = detect_kvm_at(&sys, &dev);
        assert!(!none.hardware && none.why.contains("does not exist"), "{none:?}");
        std::fs::write(&dev, b"").unwrap();
        let pvm = detect_kvm_at(&sys, &dev);
        assert!(!pvm.hardware && pvm.why.contains("kvm_pvm"), "{pvm:?}");
        std::fs::create_dir(sys.join("kvm_amd")).unwrap();
        assert_eq!(kvm_flavour(&sys).as_deref(), Some("kvm_amd"));
        let amd = detect_kvm_at(&sys, &dev);
        assert!(amd.hardware && amd.why.contains("kvm_amd"), "{amd:?}");
        let auto = select_with(BackendChoice::Auto, &pvm).unwrap();
        assert_eq!(auto.0.name(), "qemu");
        assert!(auto.1.contains("TCG"), "{}", auto.1);
    }
}
