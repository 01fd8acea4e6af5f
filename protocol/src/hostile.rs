//! Test-only misbehaviour the host can ask of the agent with the kernel
//! command-line word `ktstr.hostile=MODE`, to prove that a guest which
//! lies, floods or scribbles cannot hurt the host: every mode must end the
//! run with a named verdict, in bounded time and memory.
//!
//! A word on the command line (not a field of the plan) because one mode
//! lies in the Hello, which goes out before any plan. Owns the names and
//! their parsing only; what each mode does is the agent's business.

use std::fmt;
use std::str::FromStr;

use crate::bootarg::BootArgError;

/// The word's key, `ktstr.hostile`.
pub const HOSTILE_ARG_KEY: &str = "ktstr.hostile";

/// How a hostile agent misbehaves. Each one is acted out once the plan has
/// arrived, except [`HostileMode::LyingHello`], which is the Hello itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostileMode {
    /// Frames whose checksum is right but whose payload decodes to nothing,
    /// sent without end.
    GarbageFrames,
    /// One frame header announcing far more bytes than any ring carries.
    OversizedFrame,
    /// Log lines as fast as the ring takes them, without end.
    LogFlood,
    /// A Hello claiming twice the CPUs the guest has.
    LyingHello,
    /// Messages for a step the plan does not have, and a second Hello.
    OutOfOrder,
    /// The shared-memory header (magic, version, phase word) overwritten.
    HeaderOverwrite,
    /// A steady trickle of log lines, never a verdict or Done.
    BusyNoDone,
}

impl HostileMode {
    /// Every mode, in a fixed order.
    pub const ALL: [HostileMode; 7] = [
        HostileMode::GarbageFrames,
        HostileMode::OversizedFrame,
        HostileMode::LogFlood,
        HostileMode::LyingHello,
        HostileMode::OutOfOrder,
        HostileMode::HeaderOverwrite,
        HostileMode::BusyNoDone,
    ];

    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            HostileMode::GarbageFrames => "garbage_frames",
            HostileMode::OversizedFrame => "oversized_frame",
            HostileMode::LogFlood => "log_flood",
            HostileMode::LyingHello => "lying_hello",
            HostileMode::OutOfOrder => "out_of_order",
            HostileMode::HeaderOverwrite => "header_overwrite",
            HostileMode::BusyNoDone => "busy_no_done",
        }
    }

    /// The command-line word asking for this mode.
    pub fn boot_arg(self) -> String {
        format!("{HOSTILE_ARG_KEY}={}", self.name())
    }

    /// Finds the word in a whole kernel command line; `Ok(None)` when it is
    /// absent. The last occurrence wins.
    pub fn find(cmdline: &str) -> Result<Option<Self>, BootArgError> {
        let mut found = None;
        for word in cmdline.split_whitespace() {
            if let Some(v) = word
                .strip_prefix(HOSTILE_ARG_KEY)
                .and_then(|rest| rest.strip_prefix('='))
            {
                found = Some(v.parse().map_err(|_| BootArgError {
                    word: word.to_string(),
                    why: "unknown hostile mode",
                })?);
            }
        }
        Ok(found)
    }
}

impl fmt::Display for HostileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HostileMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown hostile mode {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_round_trips_through_the_command_line() {
        for mode in HostileMode::ALL {
            let line = format!("console=ttyS0 {} quiet", mode.boot_arg());
            assert_eq!(HostileMode::find(&line).unwrap(), Some(mode));
        }
        assert_eq!(HostileMode::find("quiet ktstr.hostilex=1").unwrap(), None);
    }

    #[test]
    fn an_unknown_mode_is_an_error_naming_the_word() {
        let e = HostileMode::find("ktstr.hostile=nice").unwrap_err();
        assert_eq!(e.word, "ktstr.hostile=nice");
    }
}
