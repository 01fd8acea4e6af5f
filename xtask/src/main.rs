//! `cargo xtask`: the user-facing commands (vmtest, gauntlet, kernel fetch,
//! setup, ci). Thin: argument parsing and progress output over the host
//! crate.

fn main() -> anyhow::Result<()> {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    anyhow::bail!("xtask {cmd:?}: not implemented yet (coming with the vmtest issue)")
}
