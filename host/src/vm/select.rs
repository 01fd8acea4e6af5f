//! Which backend runs a VM, and why: what `--backend auto|qemu|kvm`
//! resolves to on this host ([`select`]), from what [`super::detect`]
//! finds. It starts nothing.

use std::str::FromStr;

use thiserror::Error;

use super::detect::{KvmSupport, detect_kvm};
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
        // Our VMM when the host can run it: it freezes vCPUs without a
        // monitor round trip and boots faster; QEMU covers the rest.
        BackendChoice::Auto if hw => Ok((
            Box::new(KvmBackend),
            format!("kvm, our VMM ({why}; --backend qemu for QEMU)"),
        )),
        BackendChoice::Auto => Ok((
            Box::new(QemuBackend::new(kvm)),
            format!("qemu ({why}, so our KVM VMM cannot boot Linux; QEMU uses TCG)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::detect::detect_kvm_at;

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
    fn auto_without_hardware_is_qemu_under_tcg() {
        let dir = tempfile::tempdir().unwrap();
        let pvm = detect_kvm_at(dir.path(), &dir.path().join("kvm"));
        let auto = select_with(BackendChoice::Auto, &pvm).unwrap();
        assert_eq!(auto.0.name(), "qemu");
        assert!(auto.1.contains("TCG"), "{}", auto.1);
    }

    #[test]
    fn auto_with_hardware_is_our_vmm() {
        let hw = KvmSupport {
            hardware: true,
            module: Some("kvm_intel".into()),
            why: "/dev/kvm is hardware virtualization (kvm_intel)".into(),
        };
        let (b, why) = select_with(BackendChoice::Auto, &hw).unwrap();
        assert_eq!(b.name(), "kvm");
        assert!(
            why.contains("kvm_intel") && why.contains("our VMM"),
            "{why}"
        );
        let (b, why) = select_with(BackendChoice::Qemu, &hw).unwrap();
        assert_eq!(b.name(), "qemu");
        assert!(why.contains("with KVM"), "{why}");
    }
}
