//! [`Progress`]: where the progress lines of long work go (kernel fetch,
//! builds, boot, each step of a run). The one callback type every module
//! of the host takes; the command line prints the lines as `ktstr: ...`
//! on stderr, tests usually silence them or prefix them.
//!
//! Progress lines are for a person watching; diagnostics go through
//! `tracing` instead.

use std::fmt;
use std::sync::Arc;

/// A shareable sink of progress lines.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(&str) + Send + Sync>);

impl Progress {
    /// Lines go to `f`.
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Lines go to stderr as `ktstr: <line>` (what the command line does).
    pub fn stderr() -> Self {
        Self::new(|m| eprintln!("ktstr: {m}"))
    }

    /// Lines are dropped.
    pub fn silent() -> Self {
        Self::new(|_| {})
    }

    /// Reports one line.
    pub fn say(&self, line: &str) {
        (self.0)(line)
    }

    /// A sink that puts `prefix: ` before each line and passes it here.
    pub fn prefixed(&self, prefix: impl Into<String>) -> Self {
        let inner = self.clone();
        let prefix = prefix.into();
        Self::new(move |m| (inner.0)(&format!("{prefix}: {m}")))
    }
}

impl Default for Progress {
    /// [`Progress::stderr`].
    fn default() -> Self {
        Self::stderr()
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress(<fn>)")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn prefixes_nest_and_lines_arrive_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let p = Progress::new(move |m| sink.lock().unwrap().push(m.to_string()));
        p.say("a");
        let q = p.prefixed("steady").prefixed("step 1");
        q.say("b");
        assert_eq!(*seen.lock().unwrap(), vec!["a", "steady: step 1: b"]);
        Progress::silent().say("dropped");
    }
}
