//! The one detector of what the host offers for running guests under KVM:
//! is /dev/kvm hardware virtualization (kvm_intel or kvm_amd) that this
//! process can open, and if not, why. Both backends and the backend choice
//! ask it; nothing else probes /sys/module or /dev/kvm. It changes nothing.

use std::fs::OpenOptions;
use std::path::Path;

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
                    format!(
                        "{m} is loaded but {} cannot be opened ({e})",
                        dev_kvm.display()
                    ),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            !none.hardware && none.why.contains("does not exist"),
            "{none:?}"
        );
        std::fs::write(&dev, b"").unwrap();
        let pvm = detect_kvm_at(&sys, &dev);
        assert!(!pvm.hardware && pvm.why.contains("kvm_pvm"), "{pvm:?}");
        std::fs::create_dir(sys.join("kvm_amd")).unwrap();
        assert_eq!(kvm_flavour(&sys).as_deref(), Some("kvm_amd"));
        let amd = detect_kvm_at(&sys, &dev);
        assert!(amd.hardware && amd.why.contains("kvm_amd"), "{amd:?}");
    }
}
