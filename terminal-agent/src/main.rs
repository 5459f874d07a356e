//! `terminal-agent --config terminal.toml [--OPTION VALUE ...]`: see
//! `terminal_agent::cli`.

fn main() -> anyhow::Result<()> {
    terminal_agent::cli::main()
}
