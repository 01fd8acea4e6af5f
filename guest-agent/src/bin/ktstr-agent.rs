//! The static `/init` of a ktstr guest.

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "ktstr-agent runs as PID 1 inside a ktstr VM (it mounts filesystems and powers the machine off); refusing to run here"
        );
        std::process::exit(2);
    }
    ktstr_agent::init::run_as_init()
}
