//! The platform's one configuration type: its TOML file (`platform run
//! --config`) and its command line (`transport::config::load` merges the
//! two).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::accounts::AccountPolicy;
use crate::policy::ReviewPolicy;

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
    /// Console and HTTP API address (none: neither). Plain HTTP only on a
    /// loopback address; any other is served over HTTPS.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// The console's TLS certificate chain (PEM), with `tls_key`. Without
    /// them a non-loopback `http` gets a self-signed certificate made at
    /// first start and kept in the store directory.
    #[arg(long, value_parser = transport::config::path)]
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The console's TLS private key (PEM).
    #[arg(long, value_parser = transport::config::path)]
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Parent platforms in failover order (none at the district).
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    pub parents: Vec<SocketAddr>,
    /// sled directory.
    #[arg(long, default_value = "", value_parser = transport::config::path)]
    pub store: PathBuf,
    /// Largest audio upload, MB.
    #[arg(long, default_value_t = default_max_upload_mb())]
    #[serde(default = "default_max_upload_mb")]
    pub max_upload_mb: u64,
    /// Opus bitrate of broadcasts issued here (16000–32000).
    #[arg(long, default_value_t = default_bitrate())]
    #[serde(default = "default_bitrate")]
    pub bitrate_bps: u32,
    /// Time from signing a broadcast to its first frame's presentation, ms,
    /// until the platform has measured how fast its tree takes one (then
    /// twice the slowest terminal's acknowledged arrival plus 100 ms, never
    /// more than this): long enough to reach and be verified by every
    /// terminal below.
    #[arg(long, default_value_t = default_lead())]
    #[serde(default = "default_lead")]
    pub lead_ms: i64,
    /// How long after its presentation time every terminal plays a live
    /// frame, ms (the jitter buffer of live voice, named in its header so
    /// every terminal plays in step): the links' jitter and one lost
    /// packet's worth, far below recorded audio's 400 ms.
    #[arg(long, default_value_t = default_live_delay())]
    #[serde(default = "default_live_delay")]
    pub live_playout_delay_ms: u16,
    /// Warn (log, metric, API) this many days before any certificate of the
    /// chain expires.
    #[arg(long, default_value_t = default_expiry_warning_days())]
    #[serde(default = "default_expiry_warning_days")]
    pub expiry_warning_days: u64,
    /// How many approvals each class of broadcast needs (the `[review]`
    /// table; file only).
    #[arg(skip)]
    #[serde(default)]
    pub review: ReviewPolicy,
    /// Passwords, lock-out and sessions (the `[accounts]` table; file only).
    #[arg(skip)]
    #[serde(default)]
    pub accounts: AccountPolicy,
    /// Names of the areas (towns, villages) and where they lie on the
    /// console's map (`[[areas]]`; file only).
    #[arg(skip)]
    #[serde(default)]
    pub areas: Vec<crate::console::places::AreaEntry>,
    /// Where terminals stand on the map, and their names (`[[sites]]`;
    /// file only; a terminal without one is drawn beside its village).
    #[arg(skip)]
    #[serde(default)]
    pub sites: Vec<crate::console::places::SiteEntry>,
    /// Limits on connection attempts to the QUIC port (`[admission]`;
    /// file only): links, handshakes in flight, per source, when to ask
    /// for address validation, how long a handshake may take.
    #[arg(skip)]
    #[serde(default)]
    pub admission: transport::admission::AdmissionConfig,
    /// Text to speech (`[tts]`; file only): typed text becomes audio here,
    /// where the voice is installed.
    #[arg(skip)]
    #[serde(default)]
    pub tts: TtsConfig,
    /// Alerts from above (`[gateway]`; file only): the GY/T 384 listener,
    /// this platform's SM2 key, the sources and their policy (R13).
    #[arg(skip)]
    #[serde(default)]
    pub gateway: Option<crate::alerts::GatewayConfig>,
}

/// Which voice speaks typed text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TtsConfig {
    /// The espeak-ng program (a path, or a name on PATH; Debian's
    /// `espeak-ng` package); empty: no text to speech here.
    pub program: String,
    /// Syllables a minute (80 to 450): alerts are read slower than speech.
    pub speed: u32,
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig {
            program: "espeak-ng".into(),
            speed: 150,
        }
    }
}

impl TtsConfig {
    /// The voice, if one is configured and installed (a missing one is
    /// logged once: the platform runs without text to speech).
    pub fn voice(&self) -> Option<std::sync::Arc<dyn tts::Voice>> {
        if self.program.is_empty() {
            return None;
        }
        match tts::EspeakNg::find(std::path::Path::new(&self.program), self.speed) {
            Ok(v) => Some(std::sync::Arc::new(v)),
            Err(e) => {
                tracing::warn!("{e}: typed text cannot be spoken here (apt install espeak-ng)");
                None
            }
        }
    }
}

fn default_max_upload_mb() -> u64 {
    200
}

fn default_expiry_warning_days() -> u64 {
    crate::expiry::DEFAULT_WARNING.as_secs() / 86_400
}

fn default_live_delay() -> u16 {
    150
}
fn default_lead() -> i64 {
    crate::issue::DEFAULT_LEAD_MS
}

fn default_bitrate() -> u32 {
    24_000
}

impl PlatformConfig {
    /// A configuration for the platform `name` with its bundle and store,
    /// listening on `listen`, every other setting at its default.
    pub fn new(name: &str, bundle: PathBuf, listen: SocketAddr, store: PathBuf) -> Self {
        PlatformConfig {
            name: name.into(),
            bundle,
            listen,
            http: None,
            tls_cert: None,
            tls_key: None,
            parents: Vec::new(),
            store,
            max_upload_mb: default_max_upload_mb(),
            bitrate_bps: default_bitrate(),
            lead_ms: default_lead(),
            live_playout_delay_ms: default_live_delay(),
            expiry_warning_days: default_expiry_warning_days(),
            review: ReviewPolicy::default(),
            accounts: AccountPolicy::default(),
            areas: Vec::new(),
            sites: Vec::new(),
            admission: Default::default(),
            tts: TtsConfig::default(),
            gateway: None,
        }
    }

    /// Names the first setting that cannot work.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            "tls_cert, tls_key: give both or neither"
        );
        crate::console::places::Places::from_config(&self.areas, &self.sites)?;
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
            (20..=2_000).contains(&self.live_playout_delay_ms),
            "live_playout_delay_ms: {} is outside 20..=2000",
            self.live_playout_delay_ms
        );
        anyhow::ensure!(
            (0..=60_000).contains(&self.lead_ms),
            "lead_ms: {} is outside 0..=60000",
            self.lead_ms
        );
        anyhow::ensure!(
            (1..=2048).contains(&self.max_upload_mb),
            "max_upload_mb: {} is outside 1..=2048",
            self.max_upload_mb
        );
        self.review.check().map_err(anyhow::Error::msg)?;
        self.accounts.check().map_err(anyhow::Error::msg)?;
        self.admission.check().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            (80..=450).contains(&self.tts.speed),
            "tts.speed: {} is outside 80..=450 syllables a minute",
            self.tts.speed
        );
        if let Some(g) = &self.gateway {
            g.sources()?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Command};
    use std::path::Path;

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
