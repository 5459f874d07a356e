//! The loudspeaker terminal agent.
//!
//! Not implemented yet (issue 4). This binary says so instead of pretending to run.

fn main() -> std::process::ExitCode {
    eprintln!("terminal-agent: not implemented yet (issue 4). Nothing was started.");
    std::process::ExitCode::from(2)
}
