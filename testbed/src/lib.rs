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
