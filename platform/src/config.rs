//! The platform's one configuration type: its TOML file (`platform run
//! --config`) and its command line (`transport::config::load` merges the
//! two).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// Display name, e.g. 经开区应急广播平台.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Provisioning bundle (root, chain, key) written by `certs bundle`;
    /// tier, area and scope come from its certificate.
    #[arg(long, default_value = "", value_parser = transport::config::path)]
    pub bundle: PathBuf,
    /// QUIC address lower platforms and terminals dial.
    #[arg(long, default_value = "0.0.0.0:4433")]
    pub listen: SocketAddr,
    /// HTTP API address (none: no API).
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Parent platforms in failover order (none at the district).
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    pub parents: Vec<SocketAddr>,
    /// sled directory.
    #[arg(long, default_value = "", value_parser = transport::config::path)]
    pub store: PathBuf,
    /// File holding the API bearer token; created (mode 0600) with a random
    /// token on first start.
    #[arg(long, default_value = "", value_parser = transport::config::path)]
    pub api_token_file: PathBuf,
    /// Opus bitrate of broadcasts issued here (16000–32000).
    #[arg(long, default_value_t = default_bitrate())]
    #[serde(default = "default_bitrate")]
    pub bitrate_bps: u32,
    /// Time from accepting a broadcast to its first frame's presentation, ms:
    /// long enough to reach and be verified by every terminal below.
    #[arg(long, default_value_t = default_lead())]
    #[serde(default = "default_lead")]
    pub lead_ms: i64,
    /// Warn (log, metric, API) this many days before any certificate of the
    /// chain expires.
    #[arg(long, default_value_t = default_expiry_warning_days())]
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
    /// A configuration for the platform `name` with its bundle, store and
    /// token files, listening on `listen`, every other setting at its
    /// default.
    pub fn new(
        name: &str,
        bundle: PathBuf,
        listen: SocketAddr,
        store: PathBuf,
        api_token_file: PathBuf,
    ) -> Self {
        PlatformConfig {
            name: name.into(),
            bundle,
            listen,
            http: None,
            parents: Vec::new(),
            store,
            api_token_file,
            bitrate_bps: default_bitrate(),
            lead_ms: default_lead(),
            expiry_warning_days: default_expiry_warning_days(),
        }
    }

    /// Names the first setting that cannot work.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.name.trim().is_empty(),
            "name: the platform has no name"
        );
        anyhow::ensure!(
            !self.store.as_os_str().is_empty(),
            "store: no store directory given"
        );
        anyhow::ensure!(
            (16_000..=32_000).contains(&self.bitrate_bps),
            "bitrate_bps: {} is outside 16000..=32000",
            self.bitrate_bps
        );
        anyhow::ensure!(
            (0..=60_000).contains(&self.lead_ms),
            "lead_ms: {} is outside 0..=60000",
            self.lead_ms
        );
        Ok(())
    }

    pub fn ingest(&self) -> codec::IngestConfig {
        codec::IngestConfig {
            encoder: codec::EncoderConfig {
                bitrate_bps: self.bitrate_bps,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub fn expiry_warning(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.expiry_warning_days.saturating_mul(86_400))
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Command};

    /// The example configurations in docs/config are real ones.
    #[test]
    fn the_documented_examples_load() {
        for name in ["district", "village"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../docs/config")
                .join(format!("{name}.toml"));
            let matches = PlatformConfig::augment_args(Command::new("t")).get_matches_from(["t"]);
            let c: PlatformConfig = transport::config::load(&matches, Some(&path)).unwrap();
            c.check().unwrap();
            assert!(!c.name.is_empty());
            assert_eq!(c.parents.is_empty(), name == "district");
        }
        // A flag on the command line overrides the file.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config/district.toml");
        let matches = PlatformConfig::augment_args(Command::new("t")).get_matches_from([
            "t",
            "--lead-ms",
            "250",
        ]);
        let c: PlatformConfig = transport::config::load(&matches, Some(&path)).unwrap();
        assert_eq!(c.lead_ms, 250);
        let matches = PlatformConfig::augment_args(Command::new("t")).get_matches_from([
            "t",
            "--bitrate-bps",
            "8000",
        ]);
        let c: PlatformConfig = transport::config::load(&matches, Some(&path)).unwrap();
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("bitrate_bps") && e.contains("16000"), "{e}");
    }
}
