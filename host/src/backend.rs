//! `--backend auto|qemu|kvm`: which VM backend runs, and why.

use std::path::Path;
use std::str::FromStr;

use crate::vm::kvm::backend::KvmBackend;
use crate::vm::qemu::QemuBackend;
use crate::vm::{Backend, VmError};

/// The user's backend choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    #[default]
    Auto,
    Qemu,
    Kvm,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "qemu" => Ok(Self::Qemu),
            "kvm" => Ok(Self::Kvm),
            other => Err(format!(
                "unknown backend {other:?}: expected auto, qemu or kvm"
            )),
        }
    }
}

/// Which KVM module backs /dev/kvm, if any (`kvm_intel`, `kvm_amd`, `kvm_pvm`...).
pub fn kvm_flavour(sys_module: &Path) -> Option<String> {
    let entries = std::fs::read_dir(sys_module).ok()?;
    let mut found: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("kvm_"))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Whether /dev/kvm is backed by hardware virtualization, with the reason.
pub fn hardware_kvm() -> (bool, String) {
    if !Path::new("/dev/kvm").exists() {
        return (false, "/dev/kvm does not exist".into());
    }
    match kvm_flavour(Path::new("/sys/module")) {
        Some(m) if m == "kvm_intel" || m == "kvm_amd" => {
            (true, format!("/dev/kvm is hardware virtualization ({m})"))
        }
        Some(m) => (
            false,
            format!("/dev/kvm is not hardware virtualization ({m})"),
        ),
        None => (false, "no kvm_intel or kvm_amd module is loaded".into()),
    }
}

/// Resolves the choice to a backend and a one-line reason.
pub fn select(choice: BackendChoice) -> Result<(Box<dyn Backend>, String), VmError> {
    let (hw, why) = hardware_kvm();
    match choice {
        BackendChoice::Qemu => Ok((
            Box::new(QemuBackend::new(hw)),
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
            Box::new(QemuBackend::new(hw)),
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
                .contains("auto, qemu or kvm")
        );
    }

    #[test]
    fn kvm_backend_needs_hardware_virtualization() {
        let (hw, why) = hardware_kvm();
        match select(BackendChoice::Kvm) {
            Ok((b, _)) => assert!(hw && b.name() == "kvm"),
            Err(e) => {
                assert!(!hw);
                let e = e.to_string();
                assert!(e.contains(&why) && e.contains("--backend qemu"), "{e}");
            }
        }
    }

    #[test]
    fn flavour_from_fake_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        for m in ["kvm", "kvm_pvm", "loop"] {
            std::fs::create_dir(dir.path().join(m)).unwrap();
        }
        assert_eq!(kvm_flavour(dir.path()).as_deref(), Some("kvm_pvm"));
    }
}
