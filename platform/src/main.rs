//! `platform run --config platform.toml [--OPTION VALUE ...]`: see
//! `platform::cli`.

fn main() -> anyhow::Result<()> {
    platform::cli::main()
}
