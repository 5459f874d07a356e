//! The TOML configuration of `platform run`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// Display name, e.g. 经开区应急广播平台.
    pub name: String,
    /// Provisioning bundle (root, chain, key) written by `certs bundle`;
    /// tier, area and scope come from its certificate.
    pub bundle: PathBuf,
    /// QUIC address lower platforms and terminals dial.
    pub listen: SocketAddr,
    /// HTTP API address.
    pub http: Option<SocketAddr>,
    /// Parent platforms in failover order (none at the district).
    #[serde(default)]
    pub parents: Vec<SocketAddr>,
    /// sled directory.
    pub store: PathBuf,
    /// File holding the API bearer token; created (mode 0600) with a random
    /// token on first start.
    pub api_token_file: PathBuf,
    /// Opus bitrate of broadcasts issued here (16000–32000).
    #[serde(default = "default_bitrate")]
    pub bitrate_bps: u32,
    /// Time from accepting a broadcast to its first frame's presentation, ms:
    /// long enough to reach and be verified by every terminal below.
    #[serde(default = "default_lead")]
    pub lead_ms: i64,
    /// Warn (log, metric, API) this many days before any certificate of the
    /// chain expires.
    #[serde(default = "default_expiry_warning_days")]
    pub expiry_warning_days: u64,
}

fn default_expiry_warning_days() -> u64 {
    crate::expiry::DEFAULT_WARNING.as_secs() / 86_400
}

fn default_lead() -> i64 {
    crate::issue::DEFAULT_LEAD_MS
}

fn default_bitrate() -> u32 {
    24_000
}

impl PlatformConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid platform configuration", path.display()))
    }
}

/// Reads the API token, creating a random one (mode 0600) if there is none.
pub fn api_token(path: &Path) -> anyhow::Result<String> {
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_string();
        anyhow::ensure!(
            t.len() >= 32,
            "{} holds a token shorter than 32 characters",
            path.display()
        );
        return Ok(t);
    }
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    Ok(token)
}
