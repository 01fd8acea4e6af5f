//! `ktstr`: the harness's command line (the same commands `cargo xtask`
//! forwards inside this workspace).

fn main() {
    ktstr_host::cli::main()
}
