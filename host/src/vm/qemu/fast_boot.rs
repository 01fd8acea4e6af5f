//! A shorter boot under QEMU without changing what the guest runs once it
//! is up. Measured on this project's CI machine (4 vCPUs, single-threaded
//! TCG, Debian's cloud kernel, start to power-off of a guest whose `/init`
//! exits at once, three runs each): 4.25 s as a bzImage, 3.06 s entering
//! the same kernel through PVH, 2.67 s adding `lpj=`, 1.99 s adding
//! `cryptomgr.notests`.
//!
//! - **PVH entry** (KASLR off only: randomizing is the decompressor's job,
//!   which PVH skips): QEMU loads the bzImage's own kernel as an ELF and
//!   jumps to its PVH entry, so neither the firmware's real-mode setup nor
//!   the decompressor runs under emulation. The ELF is extracted once per
//!   kernel (`kernel::pvh`); a kernel without the note boots as before.
//! - **`lpj=`** (TCG only): each secondary CPU otherwise calibrates its
//!   delay loop against the timer, a tenth of a second or more per CPU
//!   under emulation. x86 delays count TSC cycles, and TCG's TSC runs at
//!   the host's rate, so loops-per-jiffy is the host's TSC rate over the
//!   guest's HZ. It is rounded up (the highest rate the host reports, plus
//!   a quarter), so a delay can only last longer than asked, never
//!   shorter; HZ is the kernel config's, else 100, the lowest there is.
//! - **`cryptomgr.notests`** (TCG only): the crypto API's self-tests at
//!   algorithm registration; schedulers do not use kernel crypto.
//!
//! This module decides; `cmdline.rs` writes the words, `mod.rs` boots.

use std::path::{Path, PathBuf};

use crate::kernel::cache::cache_root;
use crate::kernel::image::find_config;
use crate::kernel::pvh;
use crate::vm::VmSpec;

/// How a VM is booted faster, and why not where it is not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FastBoot {
    /// The PVH kernel to load in place of the spec's bzImage.
    pub pvh_kernel: Option<PathBuf>,
    /// Kernel command-line words, before the spec's own extra words (and,
    /// under TCG, the word saying so).
    pub words: Vec<String>,
    /// Why PVH is not used, when it could have been.
    pub pvh_skipped: Option<String>,
}

/// Decides the fast paths for `spec` (`tcg`: under emulation), reading the host's
/// CPU rate and the kernel's config and extracting the PVH kernel into the
/// cache when needed. Never fails: a path that cannot be taken is left out.
pub fn plan(spec: &VmSpec, tcg: bool) -> FastBoot {
    let mut fast = FastBoot::default();
    if !spec.kaslr {
        match pvh_kernel(&spec.kernel) {
            Ok(path) => fast.pvh_kernel = Some(path),
            Err(why) => fast.pvh_skipped = Some(why),
        }
    }
    if tcg {
        let hz = find_config(&spec.kernel, None)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|text| config_hz(&text));
        if let Some(mhz) = host_tsc_mhz_upper() {
            fast.words.push(format!("lpj={}", lpj(mhz, hz)));
        }
        fast.words.push("cryptomgr.notests".into());
        // Not for speed: tells the agent its vCPUs take turns on one host
        // thread, which its checks allow for.
        fast.words
            .push(ktstr_protocol::bootarg::EMULATED_ARG.into());
    }
    fast
}

fn pvh_kernel(kernel: &Path) -> Result<PathBuf, String> {
    let dir = cache_root(None).map_err(|e| e.to_string())?.join("pvh");
    match pvh::cached(kernel, &dir) {
        Ok(Ok(path)) => Ok(path),
        Ok(Err(why)) => Err(why.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// `CONFIG_HZ` of a kernel config.
pub fn config_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&hz| hz > 0)
}

/// Loops per jiffy for a TSC of `mhz` and a kernel of `hz` (100 when
/// unknown), a quarter above the rate so delays err long.
pub fn lpj(mhz: f64, hz: Option<u32>) -> u64 {
    let hz = f64::from(hz.unwrap_or(100));
    (mhz * 1.25 * 1e6 / hz).ceil() as u64
}

/// The highest CPU rate the host reports, in MHz: `cpu MHz` lines of
/// /proc/cpuinfo and each CPU's cpufreq maximum.
fn host_tsc_mhz_upper() -> Option<f64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let from_cpuinfo = cpuinfo_mhz(&cpuinfo);
    let from_cpufreq =
        std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .map(|khz| khz / 1000.0);
    [from_cpuinfo, from_cpufreq]
        .into_iter()
        .flatten()
        .filter(|m| m.is_finite() && *m > 0.0)
        .reduce(f64::max)
}

/// The largest `cpu MHz` of /proc/cpuinfo text.
fn cpuinfo_mhz(cpuinfo: &str) -> Option<f64> {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("cpu MHz"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpj_errs_long() {
        // 2600 MHz at HZ=250: 10.4 M cycles per jiffy, plus a quarter.
        assert_eq!(lpj(2600.0, Some(250)), 13_000_000);
        // Unknown HZ assumes the lowest, so the loop count only grows.
        assert!(lpj(2600.0, None) > lpj(2600.0, Some(250)));
        assert_eq!(config_hz("CONFIG_X=y\nCONFIG_HZ=1000\n"), Some(1000));
        assert_eq!(config_hz("CONFIG_HZ_250=y\n"), None);
        assert_eq!(
            cpuinfo_mhz("cpu MHz\t\t: 1200.000\nx\ncpu MHz\t\t: 2596.1\n"),
            Some(2596.1)
        );
    }

    #[test]
    fn kaslr_keeps_the_bzimage_and_tcg_gets_the_words() {
        let mut spec = VmSpec::new(
            "/nonexistent/bzImage".into(),
            "/nonexistent/initrd".into(),
            "1n1l2c1t".parse().unwrap(),
        );
        spec.kaslr = true;
        let f = plan(&spec, true);
        assert_eq!(f.pvh_kernel, None);
        assert_eq!(f.pvh_skipped, None, "not even tried");
        assert!(f.words.contains(&"cryptomgr.notests".to_string()));
        assert!(f.words.contains(&"ktstr.emulated".to_string()));
        assert!(plan(&spec, false).words.is_empty());
        spec.kaslr = false;
        let f = plan(&spec, false);
        assert!(
            f.pvh_kernel.is_none() && f.pvh_skipped.is_some(),
            "an unreadable kernel boots as given: {f:?}"
        );
    }
}
