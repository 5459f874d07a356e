//! Whole districts on one machine, with real QUIC on loopback: the one
//! builder the demo, the integration tests and the benchmark harness use,
//! a typed client of the platform's HTTP API, and the demo itself. Never
//! linked into a program that runs in the field.

pub mod client;
pub mod demo;
pub mod district;
pub mod node;

pub use client::ApiClient;
pub use district::{LocalDistrict, LocalOptions, LocalTerminal, LocalVillage};

/// A shipped audio sample (`assets/audio/NAME`) of this checkout.
pub fn asset(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/audio")
        .join(name)
}
