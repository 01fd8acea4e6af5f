//! The kernel command line words the host sets for the agent:
//! `ktstr.shm=ADDR,SIZE`, parsed by its owner [`ShmArg`] in the protocol
//! crate, `ktstr.verbose`, and the test-only `ktstr.hostile=MODE`
//! ([`HostileMode`], also the protocol crate's).
//!
//! Parsing only: this module must not act on what it finds, and must not
//! parse `ktstr.shm` itself (the host formats it with the same `ShmArg`).

use ktstr_protocol::ShmArg;
use ktstr_protocol::bootarg::{BootArgError, EMULATED_ARG};
use ktstr_protocol::hostile::HostileMode;

/// What the host told the agent on the kernel command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentArgs {
    /// Where the shared-memory region is.
    pub shm: Option<ShmArg>,
    /// `ktstr.verbose`: log more to the console.
    pub verbose: bool,
    /// `ktstr.hostile=MODE`: misbehave on purpose (tests of the host).
    pub hostile: Option<HostileMode>,
    /// `ktstr.emulated`: the vCPUs take turns on one host thread.
    pub emulated: bool,
}

/// A command line word the agent cannot use.
pub type CmdlineError = BootArgError;

/// Parses `/proc/cmdline` contents.
pub fn parse(cmdline: &str) -> Result<AgentArgs, CmdlineError> {
    let verbose = cmdline
        .split_whitespace()
        .any(|w| w == "ktstr.verbose" || w == "ktstr.verbose=1");
    Ok(AgentArgs {
        shm: ShmArg::find(cmdline)?,
        verbose,
        hostile: HostileMode::find(cmdline)?,
        emulated: cmdline.split_whitespace().any(|w| w == EMULATED_ARG),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_shm_and_verbose() {
        let a = parse("console=ttyS0 ktstr.shm=0x10000000,0x1000000 quiet ktstr.verbose").unwrap();
        assert_eq!(
            a.shm,
            Some(ShmArg {
                addr: 0x1000_0000,
                size: 0x100_0000
            })
        );
        assert!(a.verbose);
        assert_eq!(a.hostile, None);
        assert!(!a.emulated);
        assert!(parse("quiet ktstr.emulated").unwrap().emulated);
        assert!(parse("ktstr.verbose=1").unwrap().verbose);
        assert_eq!(
            parse("ktstr.hostile=log_flood").unwrap().hostile,
            Some(HostileMode::LogFlood)
        );
        for quiet in ["quiet", "ktstr.verbose=0", "ktstr.verbosex"] {
            assert_eq!(parse(quiet).unwrap(), AgentArgs::default(), "{quiet}");
        }
    }

    #[test]
    fn a_bad_shm_word_is_an_error_naming_it() {
        let e = parse("ktstr.verbose ktstr.shm=0x1001,0x1000").unwrap_err();
        assert!(e.to_string().contains("ktstr.shm=0x1001,0x1000"), "{e}");
    }
}
