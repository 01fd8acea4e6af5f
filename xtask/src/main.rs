//! `cargo xtask`: the ktstr commands for this workspace, forwarded to the
//! host crate's command line (`ktstr_host::cli`), plus the checks that only
//! make sense on the workspace's own sources.

use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ktstr_host::cli::{self, Global};

mod imports;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "ktstr: boot a kernel with a chosen topology and test its scheduler"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(flatten)]
    Ktstr(cli::Command),
    /// Check that no source file of a workspace crate imports, directly or
    /// through others, a file that imports it.
    CheckImports,
}

fn check_imports() -> Result<bool> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
    let mut cycles = Vec::new();
    for krate in imports::workspace_roots(root)? {
        cycles.extend(imports::crate_cycles(&krate)?);
    }
    if !cycles.is_empty() {
        bail!(
            "{} import cycle(s):\n{}",
            cycles.len(),
            imports::describe(root, &cycles)
        );
    }
    eprintln!("ktstr: no import cycles");
    Ok(true)
}

fn main() {
    let cli = Cli::parse();
    cli::exit_with(match cli.cmd {
        Cmd::Ktstr(cmd) => cli::run(&cli.global, cmd),
        Cmd::CheckImports => check_imports(),
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Help reads as the command people type.
    #[test]
    fn help_names_cargo_xtask() {
        let mut cmd = Cli::command();
        cmd.build();
        for sub in ["vmtest", "gauntlet", "compare", "setup"] {
            let usage = cmd
                .find_subcommand_mut(sub)
                .unwrap_or_else(|| panic!("{sub} exists"))
                .render_usage()
                .to_string();
            assert!(
                usage.contains(&format!("Usage: cargo xtask {sub}")),
                "{usage}"
            );
        }
    }
}
