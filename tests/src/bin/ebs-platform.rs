//! The `platform` program under a name of this package, so that tests here
//! can run it as a process (`CARGO_BIN_EXE_ebs-platform`).

fn main() -> anyhow::Result<()> {
    platform::cli::main()
}
