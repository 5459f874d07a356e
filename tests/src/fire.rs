//! Under fire: a district whose village platform and terminals run as the
//! real programs in their own processes (so they can be killed with
//! SIGKILL), every terminal link through an impairment proxy, every
//! terminal recording what it played, and when, to a timeline file. The
//! district and the town run in this process.
//!
//! ```text
//! district ◄── town ◄── village (process)
//!    ▲          ▲          ▲
//!    └─proxy────┴─proxy────┴─proxy ◄── terminal k (process, timeline:PATH)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context;
use certs::pki::{DistrictPki, Layout};
use codec::timeline::Timeline;
use platform::PlatformHandle;
use protocol::BroadcastId;
use terminal_agent::TerminalConfig;
use testbed::node::{platform_config, provision, start_platform};
use testbed::ApiClient;

use crate::impair::{Impairment, Proxy};

/// The programs, as built for the test that uses this
/// (`env!("CARGO_BIN_EXE_ebs-platform")`, `…ebs-terminal`).
#[derive(Debug, Clone)]
pub struct Programs {
    pub platform: PathBuf,
    pub terminal: PathBuf,
}

/// A program running in its own process; killed (SIGKILL) when dropped.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(program: &Path, args: &[&str], log: &Path) -> anyhow::Result<Proc> {
        let log = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("FIRE_LOG").unwrap_or_else(|_| "info".into()),
            )
            // tracing writes to stdout; panics go to stderr.
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Proc { child: Some(child) })
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A port free for UDP (QUIC) on loopback.
pub fn free_port() -> u16 {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a loopback port");
    udp.local_addr().expect("its address").port()
}

/// One terminal process and the links it dials through.
pub struct FireTerminal {
    pub serial: u64,
    /// One proxy per upstream, in the terminal's failover order: village,
    /// town, district.
    pub links: Vec<Proxy>,
    config: PathBuf,
    dir: PathBuf,
    proc: Option<Proc>,
    starts: usize,
}

impl FireTerminal {
    pub fn start(&mut self, programs: &Programs) -> anyhow::Result<()> {
        let log = self.dir.join(format!("run-{}.log", self.starts));
        self.starts += 1;
        let config = self.config.display().to_string();
        let sink = format!("timeline:{}", self.timeline_file(self.starts - 1).display());
        self.proc = Some(Proc::spawn(
            &programs.terminal,
            &["--config", &config, "--sink", &sink],
            &log,
        )?);
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    pub fn running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::running)
    }

    /// Every link down (the terminal's own 4G link is gone).
    pub fn cut(&self) {
        self.links.iter().for_each(Proxy::cut);
    }

    pub fn restore(&self) {
        self.links.iter().for_each(Proxy::restore);
    }

    /// Every link impaired alike.
    pub fn impair(&self, up: Impairment, down: Impairment) {
        self.links.iter().for_each(|l| l.set(up, down));
    }

    /// What it has played so far, over all its runs.
    pub fn timeline(&self) -> Timeline {
        Timeline::join((0..self.starts).map(|i| self.run_timeline(i)))
    }

    /// What run `i` (0 = the first start) played.
    pub fn run_timeline(&self, i: usize) -> Timeline {
        Timeline::read(&self.timeline_file(i)).unwrap_or(Timeline {
            rate: 16_000,
            records: Vec::new(),
        })
    }

    /// Each run records to its own file: a run killed mid-write leaves a
    /// torn record only at the end of its own.
    fn timeline_file(&self, run: usize) -> PathBuf {
        self.dir.join(format!("played-{run}.tl"))
    }

    /// The terminal's logs so far, for a failure message.
    pub fn logs(&self) -> String {
        (0..self.starts)
            .map(|i| std::fs::read_to_string(self.dir.join(format!("run-{i}.log"))))
            .filter_map(Result::ok)
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }
}

pub struct Fire {
    pub dir: tempfile::TempDir,
    pub programs: Programs,
    pub district: PlatformHandle,
    pub town: PlatformHandle,
    pub village_addr: SocketAddr,
    pub village_area: certs::AreaCode,
    pub terminals: Vec<FireTerminal>,
    pub api: ApiClient,
    /// The district's accounts (a live speaker needs a token).
    pub creds: testbed::Credentials,
    village: Option<Proc>,
    village_config: PathBuf,
    village_starts: usize,
}

/// Status goes up every this often.
pub const HEARTBEAT_MS: u64 = 500;

impl Fire {
    /// A district with one town and one village of `terminals` terminals;
    /// the village and the terminals are started; `seed` seeds every proxy.
    pub async fn start(programs: Programs, terminals: usize, seed: u64) -> anyhow::Result<Fire> {
        Fire::start_with(programs, terminals, seed, |_| {}).await
    }

    /// As `start`, with the village's configuration changed by `village`
    /// before it starts.
    pub async fn start_with(
        programs: Programs,
        terminals: usize,
        seed: u64,
        village: impl FnOnce(&mut platform::PlatformConfig),
    ) -> anyhow::Result<Fire> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_path_buf();
        let now = certs::time::unix_now();
        let layout = Layout {
            towns: 1,
            villages: 1,
            terminals,
        };
        let pki = DistrictPki::generate(layout, (now - 3600, now + 86_400), now)?;
        let creds = testbed::Credentials::generate()?;
        let district = start_platform(
            platform_config(&path, "district", vec![]),
            provision(&path, &pki.root, &pki.district, "district", now)?,
            &creds,
            true,
        )
        .await?;
        let town = start_platform(
            platform_config(&path, "town", vec![district.quic_addr]),
            provision(&path, &pki.root, &pki.towns[0].identity, "town", now)?,
            &creds,
            false,
        )
        .await?;
        let village_pki = &pki.towns[0].villages[0];
        provision(&path, &pki.root, &village_pki.identity, "village", now)?;
        let village_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut vc = platform_config(&path, "village", vec![town.quic_addr, district.quic_addr]);
        vc.listen = village_addr;
        village(&mut vc);
        // The same accounts as the district's (its API, when a test gives it
        // an address, answers the same tokens).
        {
            let (accounts, _) = platform::open_offline(&vc)?;
            creds.provision(&accounts)?;
        }
        let village_config = path.join("village.toml");
        std::fs::write(&village_config, toml::to_string(&vc)?)?;

        let mut fire_terminals = Vec::new();
        for (k, id) in village_pki.terminals.iter().enumerate() {
            let name = format!("terminal-{k}");
            let tdir = path.join(&name);
            std::fs::create_dir_all(&tdir)?;
            provision(&path, &pki.root, id, &name, now)?;
            let mut links = Vec::new();
            for (i, upstream) in [village_addr, town.quic_addr, district.quic_addr]
                .into_iter()
                .enumerate()
            {
                let s = seed.wrapping_mul(31).wrapping_add((k * 3 + i) as u64);
                links.push(Proxy::start(upstream, Impairment::NONE, Impairment::NONE, s).await?);
            }
            let mut config = TerminalConfig::new(
                path.join(format!("{name}.bundle")),
                links.iter().map(Proxy::addr).collect(),
                tdir.join("store"),
            );
            config.sink = "null".into();
            config.heartbeat_ms = HEARTBEAT_MS;
            let config_path = tdir.join("terminal.toml");
            std::fs::write(&config_path, toml::to_string(&config)?)?;
            fire_terminals.push(FireTerminal {
                serial: id.cert().serial(),
                links,
                config: config_path,
                dir: tdir,
                proc: None,
                starts: 0,
            });
        }
        let api = ApiClient::of(&district, &creds)?;
        let mut fire = Fire {
            dir,
            programs,
            district,
            town,
            village_addr,
            village_area: village_pki.area,
            terminals: fire_terminals,
            api,
            creds,
            village: None,
            village_config,
            village_starts: 0,
        };
        fire.start_village()?;
        Ok(fire)
    }

    pub fn start_village(&mut self) -> anyhow::Result<()> {
        let log = self
            .dir
            .path()
            .join(format!("village-{}.log", self.village_starts));
        self.village_starts += 1;
        let config = self.village_config.display().to_string();
        self.village = Some(Proc::spawn(
            &self.programs.platform,
            &["run", "--config", &config],
            &log,
        )?);
        // Up once its QUIC port is taken: terminals started before would
        // settle on the town.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::UdpSocket::bind(self.village_addr).is_ok() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the village platform did not start (see {})",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn kill_village(&mut self) {
        if let Some(mut p) = self.village.take() {
            p.kill9();
        }
    }

    pub fn start_terminal(&mut self, k: usize) -> anyhow::Result<()> {
        let programs = self.programs.clone();
        self.terminals[k].start(&programs)
    }

    /// Starts every terminal and waits until the district hears from each.
    pub async fn start_all(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let since = platform::now_ms();
        for k in 0..self.terminals.len() {
            self.start_terminal(k)?;
        }
        for k in 0..self.terminals.len() {
            anyhow::ensure!(
                self.wait_heard(k, since, timeout).await,
                "terminal {k} was not heard of within {timeout:?}:\n{}",
                self.terminals[k].logs()
            );
        }
        Ok(())
    }

    /// Waits until the district has a status of terminal `k` sent after
    /// `since_ms`.
    pub async fn wait_heard(&self, k: usize, since_ms: i64, timeout: Duration) -> bool {
        let serial = format!("{:016x}", self.terminals[k].serial);
        crate::eventually(timeout, || {
            self.district
                .relay
                .book()
                .terminals(platform::now_ms(), i64::MAX)
                .iter()
                .any(|t| t.serial == serial && t.last_seen_ms > since_ms)
        })
        .await
    }

    /// Issues a severity-I emergency for the village from `audio`.
    pub async fn alert(&self, audio: &Path, title: &str) -> anyhow::Result<BroadcastId> {
        self.issue(audio, "emergency", 1, title).await
    }

    /// Issues a broadcast of `class` and `severity` for the village.
    pub async fn issue(
        &self,
        audio: &Path,
        class: &str,
        severity: u8,
        title: &str,
    ) -> anyhow::Result<BroadcastId> {
        self.api
            .issue(
                audio,
                &[
                    ("areas", self.village_area.to_string()),
                    ("class", class.into()),
                    ("severity", severity.to_string()),
                    ("title", title.into()),
                    ("valid_minutes", "10".into()),
                ],
            )
            .await
    }
}

/// How much of `other` plays the same audio at the same moments as
/// `reference` (terminals in step): (records that match, records
/// compared). Records are compared where both played at the same time;
/// near-silence matches near-silence.
pub fn in_step(reference: &Timeline, other: &Timeline) -> (usize, usize) {
    let by_time: std::collections::HashMap<i64, &Vec<i16>> =
        reference.records.iter().map(|(t, p)| (*t, p)).collect();
    let mut matched = 0;
    let mut compared = 0;
    for (t, pcm) in &other.records {
        let Some(r) = by_time.get(t) else { continue };
        compared += 1;
        if same_audio(r, pcm) {
            matched += 1;
        }
    }
    (matched, compared)
}

/// Where `other` did not play what `reference` played (nothing there, or
/// other audio: silence, concealment), within `[from_us, to_us)`: runs of
/// missed records as (start µs, length µs). A terminal that fills a gap
/// with silence has a gap all the same.
pub fn missed(reference: &Timeline, other: &Timeline, from_us: i64, to_us: i64) -> Vec<(i64, i64)> {
    let by_time: std::collections::HashMap<i64, &Vec<i16>> =
        other.records.iter().map(|(t, p)| (*t, p)).collect();
    let mut wanted: Vec<&(i64, Vec<i16>)> = reference
        .records
        .iter()
        .filter(|(t, _)| (from_us..to_us).contains(t))
        .collect();
    wanted.sort_by_key(|(t, _)| *t);
    let mut runs: Vec<(i64, i64)> = Vec::new();
    let mut open: Option<(i64, i64)> = None;
    for (t, pcm) in wanted {
        let len = pcm.len() as i64 * 1_000_000 / reference.rate.max(1) as i64;
        let heard = by_time.get(t).is_some_and(|o| same_audio(pcm, o));
        match (heard, open) {
            (false, None) => open = Some((*t, len)),
            (false, Some((start, _))) => open = Some((start, t + len - start)),
            (true, Some(run)) => {
                runs.push(run);
                open = None;
            }
            (true, None) => {}
        }
    }
    runs.extend(open);
    runs
}

fn same_audio(a: &[i16], b: &[i16]) -> bool {
    let energy = |x: &[i16]| x.iter().map(|s| (*s as f64).powi(2)).sum::<f64>();
    let (ea, eb) = (energy(a), energy(b));
    let quiet = 100.0f64.powi(2) * a.len() as f64; // below ~ -50 dBFS
    if ea < quiet && eb < quiet {
        return true;
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    dot / (ea * eb).sqrt().max(1.0) > 0.8
}
