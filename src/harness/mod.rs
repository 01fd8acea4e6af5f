//! Scheduler tests in a scheduler author's own crate: functions declared
//! with `#[ktstr::test]` land in [`KTSTR_TESTS`](static@KTSTR_TESTS), and `ktstr::main!()`
//! gives the test binary (`harness = false`) a `main` that works on both
//! sides of a VM:
//!
//! - on the host it speaks the libtest command line cargo and
//!   cargo-nextest use ([`args`]) and runs each chosen test in its own VM
//!   ([`host`]), with this very binary as the guest's `/init`;
//! - in the guest (PID 1) it is the agent, with the binary's tests in its
//!   registry, so the host's plan can name one.
//!
//! This module owns the dispatch ([`decl`] the binary's declarations); booting is the
//! host crate's, running scenarios the agent's.

pub mod args;
pub mod decl;
pub mod host;

pub use linkme;

pub use decl::{registries, tests};
pub use ktstr_agent::decl::{DEFAULT_DURATION_MS, DEFAULT_TOPOLOGY, KTSTR_TESTS, TestDecl};

/// `main` of a test binary: the agent when it is the guest's PID 1, the
/// libtest-speaking runner otherwise. Returns the exit status.
pub fn main() -> i32 {
    if std::process::id() == 1 {
        ktstr_agent::init::run_as_init_with(registries());
    }
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match args::parse(&argv) {
        Ok(a) => host::run(&a),
        Err(e) => {
            eprintln!("error: {e}");
            101
        }
    }
}

/// `fn main` for a test binary whose tests are declared with
/// `#[ktstr::test]` (in `tests/NAME.rs`, with `harness = false` for that
/// target in Cargo.toml).
#[macro_export]
macro_rules! main {
    () => {
        fn main() {
            ::std::process::exit($crate::harness::main())
        }
    };
}
