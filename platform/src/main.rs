//! The playout-control platform (district, town or village).
//!
//! Not implemented yet: the relay, the HTTP API and the `demo` command are
//! issue 4. This binary says so instead of pretending to run.

fn main() -> std::process::ExitCode {
    eprintln!(
        "platform: not implemented yet (issue 4: relay, HTTP API, demo). Nothing was started."
    );
    std::process::ExitCode::from(2)
}
