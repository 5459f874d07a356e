//! The relay benches' rig: a district in this process (the source, with
//! its API), one village platform as its own process (the relay measured,
//! with its CPU and memory read from /proc), and the identities of N
//! terminals for the village. `fanout` and `under_load` both stand on it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use certs::pki::{DistrictPki, Layout};
use certs::{AreaCode, Identity, TrustAnchor};
use protocol::BroadcastId;
use testbed::node::{platform_config, provision, start_platform};

use crate::procstat::CpuWindow;

pub fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

/// A program built beside this one (`target/release/NAME`).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it with `cargo build --release -p platform -p terminal-agent`",
        path.display()
    );
    Ok(path)
}

pub fn wav_seconds(path: &Path) -> anyhow::Result<f64> {
    let r = hound::WavReader::open(path).with_context(|| format!("{}", path.display()))?;
    let spec = r.spec();
    Ok(r.duration() as f64 / spec.sample_rate as f64)
}

/// The speech both benches send: the peers' speech when it exists
/// (`../shared/peers/make_speech.sh`), else the alert sample.
pub fn default_audio() -> PathBuf {
    let peers = PathBuf::from("/tmp/peers/media/speech48k_mono.wav");
    if peers.exists() {
        peers
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/audio/alert-zh.wav")
    }
}

/// A process killed when dropped.
pub struct Child(pub std::process::Child);

impl Child {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends `signal` (e.g. "STOP", "CONT").
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.0.id().to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -{signal} {} failed", self.0.id());
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // A stopped process cannot stop in order; Ctrl-C first (an orderly
        // stop, and a profiler writes its output), then SIGKILL.
        let _ = self.signal("CONT");
        let _ = self.signal("INT");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program` with its output to `log`.
pub fn spawn(program: &Path, args: &[&str], log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log)?;
    // FANOUT_RELAY_WRAP="valgrind --tool=massif ...": the relay under a
    // profiler (where its memory goes).
    let wrap: Vec<String> = match std::env::var("FANOUT_RELAY_WRAP") {
        Ok(w) if program.ends_with("platform") => w.split_whitespace().map(String::from).collect(),
        _ => Vec::new(),
    };
    let mut command = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = std::process::Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => std::process::Command::new(program),
    };
    // FANOUT_RELAY_THREADS=N: the relay's runtime threads (tokio's own
    // variable), to see what cross-thread wake-ups cost.
    if let Ok(n) = std::env::var("FANOUT_RELAY_THREADS") {
        command.env("TOKIO_WORKER_THREADS", n);
    }
    let child = command
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(Child(child))
}

pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_or(0, |a| a.port())
}

/// The harnesses' runtime: two threads, like the machine they measure on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// CPU rate (ms of CPU per s) of `pid` over `secs`.
pub async fn idle_rate(pid: u32, secs: u64) -> f64 {
    let w = CpuWindow::start(pid);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu, wall) = w.read();
    cpu * 1000.0 / wall
}

/// The district, the village process and the terminals' identities.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub now: i64,
    pub pki: DistrictPki,
    pub creds: testbed::Credentials,
    pub district: platform::PlatformHandle,
    pub village: Child,
    pub village_addr: SocketAddr,
    /// The village's API (metrics), on loopback.
    pub village_http: SocketAddr,
    pub area: AreaCode,
    pub anchor: TrustAnchor,
}

impl Rig {
    /// A district and a village for `n` terminals; the village's
    /// configuration is changed by `village` before it starts. Returns
    /// once the village is linked to the district.
    pub async fn start(
        n: usize,
        village: impl FnOnce(&mut platform::PlatformConfig),
    ) -> anyhow::Result<Rig> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_path_buf();
        let now = certs::time::unix_now();
        let t_pki = Instant::now();
        let pki = DistrictPki::generate(
            Layout {
                towns: 1,
                villages: 1,
                terminals: n,
            },
            (now - 3600, now + 86_400),
            now,
        )?;
        eprintln!("rig {n}: PKI in {:.1} s", t_pki.elapsed().as_secs_f64());
        let creds = testbed::Credentials::generate()?;
        let district = start_platform(
            platform_config(&path, "district", vec![]),
            provision(&path, &pki.root, &pki.district, "district", now)?,
            &creds,
            true,
        )
        .await?;
        let village_pki = &pki.towns[0].villages[0];
        provision(&path, &pki.root, &village_pki.identity, "village", now)?;
        let village_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let village_http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut vc = platform_config(&path, "village", vec![district.quic_addr]);
        vc.listen = village_addr;
        vc.http = Some(village_http);
        village(&mut vc);
        {
            // The district's accounts, so its metrics can be read.
            let (accounts, _) = platform::open_offline(&vc)?;
            creds.provision(&accounts)?;
        }
        let village_config = path.join("village.toml");
        std::fs::write(&village_config, toml::to_string(&vc)?)?;
        let village = spawn(
            &sibling("platform")?,
            &["run", "--config", &village_config.display().to_string()],
            &path.join("village.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::UdpSocket::bind(village_addr).is_ok() {
            anyhow::ensure!(Instant::now() < deadline, "the village did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Linked to the district, its clock settled, nothing below.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let anchor = TrustAnchor::new(pki.root.cert().clone())?;
        let area = village_pki.area;
        Ok(Rig {
            dir,
            now,
            pki,
            creds,
            district,
            village,
            village_addr,
            village_http,
            area,
            anchor,
        })
    }

    pub fn pid(&self) -> u32 {
        self.village.pid()
    }

    /// The terminals' identities (copies).
    pub fn identities(&self) -> Vec<Identity> {
        self.pki.towns[0].villages[0]
            .terminals
            .iter()
            .map(certs::pki::copy)
            .collect()
    }

    pub fn api(&self) -> anyhow::Result<testbed::ApiClient> {
        testbed::ApiClient::of(&self.district, &self.creds)
    }

    /// Issues a severity-I emergency for the village from `audio`.
    pub async fn alert(&self, audio: &Path, title: &str) -> anyhow::Result<BroadcastId> {
        self.api()?
            .issue(
                audio,
                &[
                    ("areas", self.area.to_string()),
                    ("class", "emergency".into()),
                    ("severity", "1".into()),
                    ("title", title.into()),
                    ("valid_minutes", "10".into()),
                ],
            )
            .await
    }

    /// The village's /metrics page.
    pub async fn village_metrics(&self) -> anyhow::Result<String> {
        let page = reqwest::Client::new()
            .get(format!("http://{}/metrics", self.village_http))
            .bearer_auth(&self.creds.maintainer.token)
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(page)
    }

    pub async fn shutdown(self) {
        drop(self.village);
        self.district.shutdown().await;
    }
}
