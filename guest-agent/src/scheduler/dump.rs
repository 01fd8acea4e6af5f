//! The kernel's sched_ext exit dump: on an error exit (a stall, an
//! `scx_bpf_error()`) the kernel dumps its scheduler state line by line
//! through the `sched_ext_dump` tracepoint. The agent enables that
//! tracepoint before a scheduler starts, clears the trace buffer, and
//! after a death reads back the dump lines, whatever the scheduler itself
//! printed.
//!
//! Reads and writes tracefs only; it knows nothing of processes.

use std::path::{Path, PathBuf};

/// Where tracefs is mounted in the guest.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Dump lines kept (a dump has a block per CPU; the first lines say why).
pub const DUMP_KEEP_LINES: usize = 200;
/// What a dump line carries in the trace buffer.
const MARK: &str = "sched_ext_dump: ";

/// The sched_ext_dump tracepoint, when this kernel and mount have it.
#[derive(Clone, Debug)]
pub struct ExitDump {
    tracefs: Option<PathBuf>,
}

impl ExitDump {
    /// Enables the tracepoint under `tracefs`; without tracefs or the
    /// tracepoint, dumps read as empty.
    pub fn enable(tracefs: Option<&Path>) -> Self {
        let tracefs = tracefs.filter(|t| {
            std::fs::write(t.join("events/sched_ext/sched_ext_dump/enable"), "1").is_ok()
        });
        Self {
            tracefs: tracefs.map(Path::to_path_buf),
        }
    }

    /// Whether dumps can be read.
    pub fn available(&self) -> bool {
        self.tracefs.is_some()
    }

    /// Empties the trace buffer, so the next read holds only what came
    /// after (opening `trace` for writing with truncation clears it).
    pub fn clear(&self) {
        if let Some(t) = &self.tracefs {
            let _ = std::fs::write(t.join("trace"), "");
        }
    }

    /// The dump lines in the buffer, oldest first, at most
    /// [`DUMP_KEEP_LINES`] (the first ones: they say why).
    pub fn read(&self) -> Vec<String> {
        let Some(t) = &self.tracefs else {
            return Vec::new();
        };
        let text = std::fs::read_to_string(t.join("trace")).unwrap_or_default();
        dump_lines(&text)
    }
}

/// The dump lines of a trace buffer's text.
pub fn dump_lines(trace: &str) -> Vec<String> {
    trace
        .lines()
        .filter_map(|l| {
            l.split_once(MARK)
                .map(|(_, rest)| rest.trim_end().to_string())
        })
        .take(DUMP_KEEP_LINES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_lines_come_out_of_the_trace_format() {
        let trace = "# tracer: nop\n#\n\
            kworker/u8:1-45  [001] d..1.  12.345678: sched_ext_dump: Error: runnable task stall (kworker/1:2[71] failed to run for 30.1s)\n\
            kworker/u8:1-45  [001] d..1.  12.345679: sched_ext_dump: CPU 1   : nr_run=2 flags=0x1\n\
            kworker/u8:1-45  [001] d..1.  12.345680: other_event: x\n";
        assert_eq!(
            dump_lines(trace),
            vec![
                "Error: runnable task stall (kworker/1:2[71] failed to run for 30.1s)",
                "CPU 1   : nr_run=2 flags=0x1"
            ]
        );
    }

    #[test]
    fn a_fake_tracefs_is_enabled_cleared_and_read() {
        let d = tempfile::tempdir().unwrap();
        let ev = d.path().join("events/sched_ext/sched_ext_dump");
        std::fs::create_dir_all(&ev).unwrap();
        std::fs::write(ev.join("enable"), "0").unwrap();
        let dump = ExitDump::enable(Some(d.path()));
        assert!(dump.available());
        assert_eq!(std::fs::read_to_string(ev.join("enable")).unwrap(), "1");
        std::fs::write(
            d.path().join("trace"),
            "x-1 [0] 1.0: sched_ext_dump: line\n",
        )
        .unwrap();
        assert_eq!(dump.read(), vec!["line"]);
        dump.clear();
        assert!(dump.read().is_empty());
        assert!(!ExitDump::enable(Some(&d.path().join("nope"))).available());
    }
}
