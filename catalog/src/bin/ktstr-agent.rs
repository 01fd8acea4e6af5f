//! The default `/init` of a ktstr guest: the agent with the canned
//! catalog as its registry (the same entry a test binary's `main` takes in
//! the guest, with that binary's tests instead).

// Links the catalog's declarations into this binary.
use ktstr_catalog as _;

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "ktstr-agent runs as PID 1 inside a ktstr VM (it mounts filesystems and powers the machine off); refusing to run here"
        );
        std::process::exit(2);
    }
    ktstr_agent::init::run_as_init()
}
