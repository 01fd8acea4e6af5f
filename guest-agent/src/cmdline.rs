//! Parsing the kernel command line words the host sets for the agent.

use thiserror::Error;

/// What the host told the agent on the kernel command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentArgs {
    /// Guest-physical address and size of the shared-memory region.
    pub shm: Option<(u64, u64)>,
    /// `ktstr.verbose`: log more to the console.
    pub verbose: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("bad kernel command line word {word:?}: {why}")]
pub struct CmdlineError {
    pub word: String,
    pub why: String,
}

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses `/proc/cmdline` contents.
pub fn parse(cmdline: &str) -> Result<AgentArgs, CmdlineError> {
    let mut args = AgentArgs::default();
    for word in cmdline.split_whitespace() {
        if let Some(v) = word.strip_prefix("ktstr.shm=") {
            let err = |why: &str| CmdlineError {
                word: word.to_string(),
                why: why.to_string(),
            };
            let (addr, size) = v.split_once(',').ok_or_else(|| err("expected ADDR,SIZE"))?;
            let addr = parse_num(addr).ok_or_else(|| err("ADDR is not a number"))?;
            let size = parse_num(size).ok_or_else(|| err("SIZE is not a number"))?;
            if addr % 4096 != 0 || size == 0 || size % 4096 != 0 {
                return Err(err("ADDR and SIZE must be non-zero multiples of 4096"));
            }
            args.shm = Some((addr, size));
        } else if word == "ktstr.verbose" || word == "ktstr.verbose=1" {
            args.verbose = true;
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shm_and_flags() {
        let a = parse("console=ttyS0 ktstr.shm=0x10000000,0x1000000 quiet ktstr.verbose").unwrap();
        assert_eq!(a.shm, Some((0x1000_0000, 0x100_0000)));
        assert!(a.verbose);
        assert_eq!(parse("quiet").unwrap(), AgentArgs::default());
        assert_eq!(
            parse("ktstr.shm=4096,8192").unwrap().shm,
            Some((4096, 8192))
        );
    }

    #[test]
    fn rejects_bad_shm() {
        for bad in [
            "ktstr.shm=0x1000",
            "ktstr.shm=zz,0x1000",
            "ktstr.shm=0x1001,0x1000",
            "ktstr.shm=0x1000,0",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("ktstr.shm"), "{e}");
        }
    }
}
