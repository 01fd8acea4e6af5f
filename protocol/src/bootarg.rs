//! The kernel command-line word that tells the agent where the shared
//! region is: `ktstr.shm=ADDR,SIZE` (guest-physical address and size, hex
//! or decimal). Both backends format it and the agent parses it with the
//! two functions here, so the contract has one owner. Also the bare word
//! `ktstr.emulated` (single-threaded TCG) and what it implies.

use std::fmt;

use thiserror::Error;

/// The word's key, `ktstr.shm`.
pub const SHM_ARG_KEY: &str = "ktstr.shm";

/// The word the QEMU backend adds under TCG: the guest's vCPUs take turns
/// on one host thread, so the agent's checks allow for it.
pub const EMULATED_ARG: &str = "ktstr.emulated";

/// How long QEMU's single-threaded TCG runs one vCPU before the next
/// (its round-robin kick period, a tenth of a second).
pub const TCG_SLICE_MS: u64 = 100;

/// Where the shared-memory region sits in guest-physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmArg {
    pub addr: u64,
    pub size: u64,
}

/// A `ktstr.shm=` word that cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("bad kernel command line word {word:?}: {why}")]
pub struct BootArgError {
    pub word: String,
    pub why: &'static str,
}

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl ShmArg {
    /// Parses the value after `ktstr.shm=`; `word` is the whole word, for
    /// the error.
    fn parse_value(value: &str, word: &str) -> Result<Self, BootArgError> {
        let err = |why| BootArgError {
            word: word.to_string(),
            why,
        };
        let (addr, size) = value
            .split_once(',')
            .ok_or_else(|| err("expected ADDR,SIZE"))?;
        let addr = parse_num(addr).ok_or_else(|| err("ADDR is not a number"))?;
        let size = parse_num(size).ok_or_else(|| err("SIZE is not a number"))?;
        if addr % 4096 != 0 || size == 0 || size % 4096 != 0 {
            return Err(err("ADDR and SIZE must be non-zero multiples of 4096"));
        }
        Ok(Self { addr, size })
    }

    /// Finds the word in a whole kernel command line (`/proc/cmdline`);
    /// `Ok(None)` when it is absent. The last occurrence wins, as for the
    /// kernel's own parameters.
    pub fn find(cmdline: &str) -> Result<Option<Self>, BootArgError> {
        let mut found = None;
        for word in cmdline.split_whitespace() {
            if let Some(v) = word
                .strip_prefix(SHM_ARG_KEY)
                .and_then(|rest| rest.strip_prefix('='))
            {
                found = Some(Self::parse_value(v, word)?);
            }
        }
        Ok(found)
    }
}

impl fmt::Display for ShmArg {
    /// The word as a backend puts it on the command line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHM_ARG_KEY}={:#x},{:#x}", self.addr, self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_back() {
        for (addr, size) in [
            (0x1000_0000, 0x100_0000),
            (4096, 8192),
            (0xfe00_0000, 0x11000),
        ] {
            let arg = ShmArg { addr, size };
            let word = arg.to_string();
            let line = format!("console=ttyS0 {word} quiet");
            assert_eq!(ShmArg::find(&line).unwrap(), Some(arg), "{word}");
        }
        assert_eq!(
            ShmArg {
                addr: 0x1000_0000,
                size: 0x100_0000
            }
            .to_string(),
            "ktstr.shm=0x10000000,0x1000000"
        );
    }

    #[test]
    fn absent_decimal_and_last_wins() {
        assert_eq!(ShmArg::find("quiet ktstr.shmx=1").unwrap(), None);
        assert_eq!(
            ShmArg::find("ktstr.shm=4096,8192 ktstr.shm=8192,4096").unwrap(),
            Some(ShmArg {
                addr: 8192,
                size: 4096
            })
        );
    }

    #[test]
    fn rejects_bad_words() {
        for bad in [
            "ktstr.shm=0x1000",
            "ktstr.shm=zz,0x1000",
            "ktstr.shm=0x1001,0x1000",
            "ktstr.shm=0x1000,0",
        ] {
            let e = ShmArg::find(bad).unwrap_err();
            assert_eq!(e.word, bad);
            assert!(e.to_string().contains("ktstr.shm"), "{e}");
        }
    }
}
