//! The TOML configuration of the terminal agent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    /// Provisioning bundle (root, chain, key) written by `certs bundle`;
    /// the terminal's id and area come from its certificate.
    pub bundle: PathBuf,
    /// Upstream platforms in failover order: village, town, district.
    pub upstreams: Vec<SocketAddr>,
    /// `speaker`, `wav:PATH` or `null`.
    #[serde(default = "default_sink")]
    pub sink: String,
    /// sled directory.
    pub store: PathBuf,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Playout delay after presentation time (jitter buffer), ms.
    #[serde(default = "default_delay")]
    pub playout_delay_ms: u64,
}

fn default_sink() -> String {
    "speaker".into()
}
fn default_heartbeat() -> u64 {
    10
}
fn default_delay() -> u64 {
    400
}

impl TerminalConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid terminal configuration", path.display()))
    }
}
