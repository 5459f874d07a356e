//! The terminal agent's one configuration type: its TOML file and its
//! command line (`transport::config::load` merges the two).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    /// Provisioning bundle (root, chain, key) written by `certs bundle`;
    /// the terminal's id and area come from its certificate.
    #[arg(long, default_value = "", value_parser = transport::config::path)]
    pub bundle: PathBuf,
    /// Upstream platforms in failover order: village, town, district.
    #[arg(long = "upstreams", value_delimiter = ',')]
    pub upstreams: Vec<SocketAddr>,
    /// `speaker`, `wav:PATH` or `null`.
    #[arg(long, default_value = "speaker")]
    #[serde(default = "default_sink")]
    pub sink: String,
    /// sled directory.
    #[arg(long, default_value = "", value_parser = transport::config::path)]
    pub store: PathBuf,
    /// Heartbeat (signed status) period while idle, ms (at most 10 s
    /// while playing).
    #[arg(long, default_value_t = TerminalConfig::DEFAULT_HEARTBEAT_MS)]
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// Playout delay after presentation time (jitter buffer), ms.
    #[arg(long, default_value_t = 400)]
    #[serde(default = "default_delay")]
    pub playout_delay_ms: u64,
    /// Live voice: the most this terminal adds to the issuer's playout
    /// delay when its own link brings audio too late to play in step, ms
    /// (it plays a little behind the others rather than lose words, and
    /// catches up when the link recovers). 0: never.
    #[arg(long, default_value_t = 100)]
    #[serde(default = "default_live_adapt")]
    pub live_adapt_max_ms: u64,
    /// Severity I–II emergencies play at no less than this volume (0–100),
    /// whatever the terminal's mute or volume (R21): a standing mute, by
    /// mistake or from a stolen maintainer account, cannot swallow them.
    #[arg(long, default_value_t = 70)]
    #[serde(default = "default_emergency_volume")]
    pub emergency_min_volume: u8,
    /// The most audio of scheduled programmes the terminal keeps, MiB
    /// (in memory and in its store): what its schedule plays from while
    /// the link is down. A full cache drops what plays furthest ahead.
    #[arg(long, default_value_t = 16)]
    #[serde(default = "default_programme_cache")]
    pub programme_cache_mb: u32,
    /// Tests and benchmarks only: run on a clock this far off the system's
    /// (µs) and this many parts per billion fast, to show the terminal
    /// finds the tree's time whatever its own clock says.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    #[serde(default)]
    pub emulated_clock_offset_us: i64,
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    #[serde(default)]
    pub emulated_clock_drift_ppb: i64,
}

fn default_sink() -> String {
    "speaker".into()
}
fn default_heartbeat() -> u64 {
    TerminalConfig::DEFAULT_HEARTBEAT_MS
}
fn default_delay() -> u64 {
    400
}
fn default_live_adapt() -> u64 {
    100
}

fn default_emergency_volume() -> u8 {
    70
}

fn default_programme_cache() -> u32 {
    16
}

impl TerminalConfig {
    /// Heartbeat while idle (`core::PLAYING_HEARTBEAT_US` while playing).
    pub const DEFAULT_HEARTBEAT_MS: u64 = 25_000;

    /// A configuration for `bundle` and `store` dialling `upstreams`, with
    /// every other setting at its default.
    pub fn new(bundle: PathBuf, upstreams: Vec<SocketAddr>, store: PathBuf) -> Self {
        TerminalConfig {
            bundle,
            upstreams,
            sink: default_sink(),
            store,
            heartbeat_ms: default_heartbeat(),
            playout_delay_ms: default_delay(),
            live_adapt_max_ms: default_live_adapt(),
            emergency_min_volume: default_emergency_volume(),
            programme_cache_mb: default_programme_cache(),
            emulated_clock_offset_us: 0,
            emulated_clock_drift_ppb: 0,
        }
    }

    /// Names the first setting that cannot work (the bundle file is
    /// checked when it is read).
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.store.as_os_str().is_empty(),
            "store: no store directory given"
        );
        anyhow::ensure!(
            !self.upstreams.is_empty(),
            "upstreams: no upstream platform given"
        );
        anyhow::ensure!(
            (100..=3_600_000).contains(&self.heartbeat_ms),
            "heartbeat_ms: {} is outside 100..=3600000",
            self.heartbeat_ms
        );
        anyhow::ensure!(
            self.playout_delay_ms <= 10_000,
            "playout_delay_ms: {} is above 10000",
            self.playout_delay_ms
        );
        anyhow::ensure!(
            self.live_adapt_max_ms <= 1_000,
            "live_adapt_max_ms: {} is above 1000 (a second behind the other loudspeakers is an echo, not a buffer)",
            self.live_adapt_max_ms
        );
        anyhow::ensure!(
            (1..=100).contains(&self.emergency_min_volume),
            "emergency_min_volume: {} is outside 1..=100 (0 would let a mute swallow emergencies)",
            self.emergency_min_volume
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.programme_cache_mb),
            "programme_cache_mb: {} is outside 1..=1024",
            self.programme_cache_mb
        );
        anyhow::ensure!(
            self.emulated_clock_offset_us.abs() <= 3_600_000_000,
            "emulated_clock_offset_us: {} is beyond ±3600000000 (an hour)",
            self.emulated_clock_offset_us
        );
        anyhow::ensure!(
            self.emulated_clock_drift_ppb.abs() <= 500_000,
            "emulated_clock_drift_ppb: {} is beyond ±500000 (500 ppm)",
            self.emulated_clock_drift_ppb
        );
        Ok(())
    }

    /// The clock this terminal runs on.
    pub fn local_clock(&self) -> transport::clock::LocalClock {
        transport::clock::LocalClock::emulated(
            self.emulated_clock_offset_us,
            self.emulated_clock_drift_ppb,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Command};

    #[test]
    fn the_documented_example_loads_and_bad_settings_are_named() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config/terminal.toml");
        let matches = TerminalConfig::augment_args(Command::new("t")).get_matches_from(["t"]);
        let c: TerminalConfig = transport::config::load(&matches, Some(&path)).unwrap();
        c.check().unwrap();
        assert_eq!(c.upstreams.len(), 3);
        let matches = TerminalConfig::augment_args(Command::new("t")).get_matches_from([
            "t",
            "--heartbeat-ms",
            "5",
        ]);
        let c: TerminalConfig = transport::config::load(&matches, Some(&path)).unwrap();
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("heartbeat_ms"), "{e}");
        // Without a file, the command line must name what is required.
        let matches = TerminalConfig::augment_args(Command::new("t")).get_matches_from(["t"]);
        let c: TerminalConfig = transport::config::load(&matches, None).unwrap();
        assert!(c.check().unwrap_err().to_string().contains("store"));
        let e = crate::Terminal::load(TerminalConfig {
            store: "s".into(),
            upstreams: vec!["127.0.0.1:1".parse().unwrap()],
            ..c
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("bundle"), "{e}");
    }
}
