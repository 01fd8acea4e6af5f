//! What the host needs to reach this kernel's memory, gathered once per
//! guest: `/proc/kallsyms` (gzip-compressed: several MiB of text), the
//! physical address of the kernel's code from `/proc/iomem`, `/proc/version`
//! and CONFIG_HZ (from the kernel config packed into the initramfs).
//!
//! Reads files only; sending is the caller's business.

use std::io::Write;

use anyhow::{Context, Result, bail};
use ktstr_protocol::model::KernelInfo;

/// The start of the "Kernel code" range in `/proc/iomem` text.
pub fn kernel_code_start(iomem: &str) -> Option<u64> {
    iomem.lines().find_map(|line| {
        let (range, name) = line.trim().split_once(" : ")?;
        (name.trim() == "Kernel code")
            .then(|| u64::from_str_radix(range.split('-').next()?, 16).ok())
            .flatten()
    })
}

/// CONFIG_HZ from kernel config text.
pub fn config_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
}

/// Gathers the kernel info of the running guest (`release` names its
/// config file under /boot).
pub fn gather(release: &str) -> Result<KernelInfo> {
    let kallsyms = std::fs::read("/proc/kallsyms").context("reading /proc/kallsyms")?;
    if kallsyms.starts_with(b"0000000000000000 ") {
        bail!(
            "/proc/kallsyms shows no addresses (kptr_restrict); the agent runs as root, so this kernel hides them from everyone"
        );
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&kallsyms)
        .and_then(|()| enc.try_finish())
        .context("compressing /proc/kallsyms")?;
    let kallsyms_gz = enc.finish().context("compressing /proc/kallsyms")?;
    let iomem = std::fs::read_to_string("/proc/iomem").context("reading /proc/iomem")?;
    let text_pa = kernel_code_start(&iomem)
        .filter(|&a| a != 0)
        .context("/proc/iomem has no \"Kernel code\" range with an address")?;
    let proc_version = std::fs::read_to_string("/proc/version")
        .context("reading /proc/version")?
        .trim_end()
        .to_string();
    let hz = std::fs::read_to_string(format!("/boot/config-{release}"))
        .ok()
        .and_then(|c| config_hz(&c))
        .unwrap_or(0);
    Ok(KernelInfo {
        kallsyms_gz,
        text_pa,
        proc_version,
        hz,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iomem_and_config_parse() {
        let iomem = "00000000-00000fff : Reserved\n00100000-7ffdffff : System RAM\n  \
                     3a000000-3b1fffff : Kernel code\n  3b200000-3bbfffff : Kernel rodata\n";
        assert_eq!(kernel_code_start(iomem), Some(0x3a00_0000));
        assert_eq!(kernel_code_start("00100000-7ffdffff : System RAM\n"), None);
        assert_eq!(
            config_hz("# c\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
        assert_eq!(config_hz("CONFIG_HZ_1000=y\n"), None);
    }
}
