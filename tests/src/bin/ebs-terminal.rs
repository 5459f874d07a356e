//! The `terminal-agent` program under a name of this package, so that tests
//! here can run it as a process (`CARGO_BIN_EXE_ebs-terminal`).

fn main() -> anyhow::Result<()> {
    terminal_agent::cli::main()
}
