//! Whole districts on one machine, with real QUIC on loopback: the one
//! builder the demo, the integration tests and the benchmark harness use,
//! a typed client of the platform's HTTP API, and the demo itself. Never
//! linked into a program that runs in the field.

pub mod client;
pub mod credentials;
pub mod demo;
pub mod district;
pub mod from_above;
pub use platform::live_client as live;
pub mod node;
pub mod places;
pub mod sm2_ca;

pub use client::ApiClient;
pub use credentials::{Credentials, Person};
pub use district::{LocalDistrict, LocalOptions, LocalTerminal, LocalVillage};

/// A shipped audio sample (`assets/audio/NAME`) of this checkout.
pub fn asset(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/audio")
        .join(name)
}

/// Logs to stderr at `RUST_LOG` (default: warnings), for the testbed's
/// binaries (their stdout carries their results).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
