//! The attack range: a small real district on loopback with a compromised
//! relay in the middle, and the checks every attack ends with.
//!
//! ```text
//!                       district (API)
//!          ┌──────────────┼───────────────┬────────────┐
//!        town 1         town 2      rogue "town 1" (stolen key)
//!     ┌─────┴─────┐        │            │     │     │
//!  village A  village B    │     village A  a1    b1        (first choice)
//!     │          │         c1            │
//!     a2         b1 (fallback)           a2's platform's first parent
//! ```
//!
//! Terminals a1 and b1 dial the rogue first; village A's platform takes it as
//! its first parent, so a2 gets whatever passes village A's relay; c1 is in
//! town 2, out of the rogue's reach. Every terminal falls back to honest
//! platforms. A genuine district alert plays while each attack runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certs::pki::{DistrictPki, Layout};
use certs::{AreaCode, Bundle, Identity, TrustAnchor};
use platform::{PlatformConfig, PlatformHandle};
use protocol::{BroadcastId, RefusalReason};
use terminal_agent::{Host, Terminal, TerminalConfig, TerminalHandle};
pub use testbed::node::copy;

use crate::adversary::RogueRelay;

/// Positions in `Range::terminals`.
pub const A1: usize = 0;
pub const B1: usize = 1;
pub const C1: usize = 2;
pub const A2: usize = 3;
/// Identity indexes, in the order the PKI generates them (village A's
/// terminals, then B's, then C's): a1, a2, spare A, b1, spare B, c1, c1'.
const IDENTITY_OF: [usize; 4] = [0, 3, 5, 1];
/// Identity indexes of spare terminals (not started) in villages A and B.
pub const SPARE_A: usize = 2;
pub const SPARE_B: usize = 4;

pub const HEARTBEAT: Duration = Duration::from_millis(500);

pub fn bundle(root: &Identity, id: &Identity) -> Bundle {
    Bundle::new(root.cert().clone(), copy(id), certs::time::unix_now()).expect("bundle")
}

pub struct RangeTerminal {
    pub name: &'static str,
    pub area: AreaCode,
    pub serial: u64,
    pub config: TerminalConfig,
    pub samples: Arc<Mutex<Vec<f32>>>,
    identity: usize,
    handle: Option<TerminalHandle>,
    /// What it played before a restart (the player's records are in memory).
    history: std::collections::HashMap<BroadcastId, terminal_agent::PlayRecord>,
}

impl RangeTerminal {
    pub fn handle(&self) -> &TerminalHandle {
        self.handle.as_ref().expect("terminal running")
    }

    /// Play records since the range started, across restarts.
    pub fn records(&self) -> std::collections::HashMap<BroadcastId, terminal_agent::PlayRecord> {
        let mut all = self.history.clone();
        all.extend(self.handle().snapshot().records);
        all
    }

    pub fn samples(&self) -> Vec<f32> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn refused(&self, reason: RefusalReason) -> u64 {
        self.handle()
            .snapshot()
            .refusals
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

pub struct Range {
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
    pub pki: DistrictPki,
    pub anchor: TrustAnchor,
    /// The test accounts of every platform here.
    pub creds: testbed::Credentials,
    pub district: PlatformHandle,
    pub town1: PlatformHandle,
    pub town2: PlatformHandle,
    pub village_a: PlatformHandle,
    pub village_b: PlatformHandle,
    pub rogue: RogueRelay,
    pub terminals: Vec<RangeTerminal>,
    terminal_ids: Vec<Identity>,
    /// The playout clock and store thread of the range's terminals.
    host: Host,
}

/// The genuine alert running during an attack.
pub struct Genuine {
    pub id: BroadcastId,
    pub reference: Vec<f32>,
}

/// The configuration of platform `name` of a test range in `dir`.
pub fn platform_config(dir: &Path, name: &str, parents: Vec<SocketAddr>) -> PlatformConfig {
    let mut c = testbed::node::platform_config(dir, name, parents);
    c.http = Some(([127, 0, 0, 1], 0).into());
    // Each attack's genuine alert is the range's first broadcast, so its
    // lead is the configured guess, not one measured: here a debug build
    // of five platforms, beside another range, on two busy cores. With the
    // production 250 ms, CI once saw every terminal miss the alert's first
    // 0.5 s, most likely as late (the attacks are about what plays, not
    // how soon; `Played::late` now says).
    c.lead_ms = 1_000;
    c
}

/// Starts platform `name` (with an API) provisioned in memory.
pub async fn start_platform(
    dir: &Path,
    name: &str,
    bundle: Bundle,
    parents: Vec<SocketAddr>,
    creds: &testbed::Credentials,
) -> anyhow::Result<PlatformHandle> {
    testbed::node::start_platform(platform_config(dir, name, parents), bundle, creds, true).await
}

impl Range {
    pub async fn start() -> Range {
        // RUST_LOG=debug shows what every node did (for a failing attack).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_path_buf();
        let now = certs::time::unix_now();
        let pki = DistrictPki::generate(
            Layout {
                towns: 2,
                villages: 3,
                terminals: 7,
            },
            (now - 3600, now + 365 * 86_400),
            now,
        )
        .expect("pki");
        let anchor = TrustAnchor::new(pki.root.cert().clone()).expect("anchor");
        let creds = testbed::Credentials::generate().expect("credentials");
        let start = |name: &'static str, id: &Identity, parents: Vec<SocketAddr>| {
            let (path, creds, b) = (path.clone(), creds.clone(), bundle(&pki.root, id));
            async move { start_platform(&path, name, b, parents, &creds).await }
        };
        let district = start("district", &pki.district, vec![])
            .await
            .expect("district");
        let d = district.quic_addr;
        let town1 = start("town1", &pki.towns[0].identity, vec![d])
            .await
            .expect("town1");
        let town2 = start("town2", &pki.towns[1].identity, vec![d])
            .await
            .expect("town2");
        let rogue = RogueRelay::start(&pki.towns[0].identity, anchor.clone(), Some(d))
            .await
            .expect("rogue relay");
        let village_a = start(
            "village-a",
            &pki.towns[0].villages[0].identity,
            vec![rogue.addr, town1.quic_addr, d],
        )
        .await
        .expect("village a");
        let village_b = start(
            "village-b",
            &pki.towns[0].villages[1].identity,
            vec![town1.quic_addr, d],
        )
        .await
        .expect("village b");
        let terminal_ids: Vec<Identity> = pki.terminals().map(|(_, t)| copy(t)).collect();
        let mut range = Range {
            _dir: dir,
            dir: path,
            anchor,
            creds,
            terminals: Vec::new(),
            terminal_ids,
            district,
            town1,
            town2,
            village_a,
            village_b,
            rogue,
            pki,
            host: Host::new().expect("host threads"),
        };
        let (r, va, vb, t1, t2) = (
            range.rogue.addr,
            range.village_a.quic_addr,
            range.village_b.quic_addr,
            range.town1.quic_addr,
            range.town2.quic_addr,
        );
        range
            .add_terminal("a1", IDENTITY_OF[A1], vec![r, va, t1, d])
            .await;
        range
            .add_terminal("b1", IDENTITY_OF[B1], vec![r, vb, t1, d])
            .await;
        range.add_terminal("c1", IDENTITY_OF[C1], vec![t2, d]).await;
        range
            .add_terminal("a2", IDENTITY_OF[A2], vec![va, t1, d])
            .await;
        range.wait_ready().await;
        range
    }

    /// Starts terminal identity `identity` dialling `upstreams`.
    pub async fn add_terminal(
        &mut self,
        name: &'static str,
        identity: usize,
        upstreams: Vec<SocketAddr>,
    ) -> usize {
        self.add_provisioned_terminal(name, identity, upstreams, Vec::new())
            .await
    }

    /// Starts a terminal provisioned with the revocation lists `lists`.
    pub async fn add_provisioned_terminal(
        &mut self,
        name: &'static str,
        identity: usize,
        upstreams: Vec<SocketAddr>,
        lists: Vec<certs::RevocationList>,
    ) -> usize {
        let id = &self.terminal_ids[identity];
        let bundle = bundle(&self.pki.root, id)
            .with_revocations(lists, certs::time::unix_now())
            .expect("provisioned lists apply");
        let dir = self.dir.join("terminals").join(name);
        std::fs::create_dir_all(&dir).expect("terminal dir");
        let path = dir.join("terminal.bundle");
        bundle.write_file(&path).expect("bundle written");
        let mut config = TerminalConfig::new(path, upstreams, dir.join("store"));
        config.heartbeat_ms = HEARTBEAT.as_millis() as u64;
        let sink = codec::MemorySink::new(16_000);
        let samples = sink.samples();
        let handle = Terminal::new(config.clone(), bundle)
            .expect("terminal configuration")
            .with_sink(Box::new(sink))
            .start(&self.host, None)
            .await
            .expect("terminal starts");
        self.terminals.push(RangeTerminal {
            name,
            area: id.cert().scope()[0],
            serial: id.cert().serial(),
            config,
            samples,
            identity,
            handle: Some(handle),
            history: Default::default(),
        });
        self.terminals.len() - 1
    }

    /// Restarts terminal `i` on the same bundle file and store (a power
    /// cut); its sink is kept, so everything it ever played stays in one
    /// buffer.
    pub async fn restart_terminal(&mut self, i: usize) {
        let t = &mut self.terminals[i];
        if let Some(h) = t.handle.take() {
            t.history.extend(h.snapshot().records);
            h.shutdown().await;
        }
        let samples = t.samples.clone();
        let handle = Terminal::load(t.config.clone())
            .expect("terminal configuration")
            .with_sink(Box::new(SharedSink(samples)))
            .start(&self.host, None)
            .await
            .expect("terminal restarts");
        t.handle = Some(handle);
    }

    /// Every terminal connected (a1 and b1 to the rogue) and the rogue
    /// feeding village A.
    pub async fn wait_ready(&self) {
        let ok = crate::eventually(Duration::from_secs(20), || {
            self.terminals
                .iter()
                .all(|t| t.handle().snapshot().connected_to == t.config.upstreams.first().copied())
                && self.rogue.children() >= 3
        })
        .await;
        let state: Vec<_> = self
            .terminals
            .iter()
            .map(|t| {
                (
                    t.name,
                    t.handle().snapshot().connected_to,
                    t.config.upstreams.first().copied(),
                )
            })
            .collect();
        assert!(
            ok,
            "the range did not come up: {state:?}, rogue has {} children",
            self.rogue.children()
        );
    }

    pub fn api(&self) -> String {
        self.client().base().to_string()
    }

    /// The district's API, as the range's test accounts.
    pub fn client(&self) -> testbed::ApiClient {
        testbed::ApiClient::of(&self.district, &self.creds).expect("district API")
    }

    pub fn county(&self) -> AreaCode {
        self.district.relay.scope[0]
    }

    /// A generated terminal identity by identity index (e.g. `SPARE_B`).
    pub fn terminal_identity(&self, i: usize) -> &Identity {
        &self.terminal_ids[i]
    }

    /// The identity of the running terminal at position `pos`.
    pub fn identity_of(&self, pos: usize) -> &Identity {
        &self.terminal_ids[self.terminals[pos].identity]
    }

    /// Issues a genuine district-wide emergency from a `seconds` clip.
    pub async fn genuine_alert(&self, seconds: f32) -> Genuine {
        let clip = self.dir.join(format!("genuine-{}.wav", rand_suffix()));
        crate::clip("alert-zh.wav", seconds, &clip);
        let id = self
            .client()
            .issue(
                &clip,
                &[
                    ("areas", self.county().to_string()),
                    ("class", "emergency".into()),
                    ("severity", "1".into()),
                    ("title", "防汛紧急转移".into()),
                ],
            )
            .await
            .expect("genuine alert issued");
        Genuine {
            id,
            reference: crate::normalised(&clip),
        }
    }

    /// Waits until every terminal has finished `id`.
    pub async fn wait_finished(&self, id: BroadcastId, timeout: Duration) -> bool {
        crate::eventually(timeout, || {
            self.terminals
                .iter()
                .all(|t| t.records().get(&id).is_some_and(|r| r.finished))
        })
        .await
    }

    /// The district's security events (its API).
    pub async fn security_events(&self) -> serde_json::Value {
        self.client()
            .get("/api/security-events")
            .await
            .expect("security events API")
    }

    /// Waits until the district's API shows at least one event of `reason`;
    /// returns the total it shows.
    pub async fn district_sees(&self, reason: RefusalReason) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let n = self.security_events().await["totals"][reason.name()]
                .as_u64()
                .unwrap_or(0);
            if n > 0 || tokio::time::Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Refusals of `reason` counted by every platform and terminal.
    pub fn counted(&self, reason: RefusalReason) -> Counted {
        let platforms = [
            ("district", &self.district),
            ("town1", &self.town1),
            ("town2", &self.town2),
            ("village-a", &self.village_a),
            ("village-b", &self.village_b),
        ];
        Counted {
            platforms: platforms
                .iter()
                .map(|(n, p)| (*n, p.relay.refusals().get(reason)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            terminals: self
                .terminals
                .iter()
                .map(|t| (t.name, t.refused(reason)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    /// What every sink received: the genuine alert in full on every
    /// terminal, and nothing of `attack_ids` anywhere.
    pub fn played(&self, genuine: &Genuine, attack_ids: &[BroadcastId]) -> Vec<Played> {
        let attack = crate::forge::attack_pcm();
        self.terminals
            .iter()
            .map(|t| {
                let records = t.records();
                let samples = t.samples();
                let record = records.get(&genuine.id).cloned().unwrap_or_default();
                Played {
                    terminal: t.name,
                    samples: samples.len(),
                    genuine_finished: record.finished,
                    genuine_frames: record.total_frames,
                    concealed: record.frames_concealed,
                    late: record.frames_late,
                    played: record.frames_played,
                    first_sample_ms: record.first_sample_ms,
                    cancelled: record.cancelled,
                    genuine_correlation: crate::correlation(&genuine.reference, &samples, 4000),
                    attack_correlation: crate::correlation(&attack, &samples, 4000),
                    attack_records: attack_ids
                        .iter()
                        .filter(|id| records.contains_key(id))
                        .count(),
                    other_records: records.keys().filter(|id| **id != genuine.id).count(),
                }
            })
            .collect()
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A sink writing into an existing buffer (a restarted terminal keeps its
/// predecessor's recording).
struct SharedSink(Arc<Mutex<Vec<f32>>>);

impl codec::Sink for SharedSink {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn sample_rate(&self) -> u32 {
        16_000
    }
    fn write(&mut self, pcm: &[f32]) -> Result<(), codec::sink::SinkError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(pcm);
        Ok(())
    }
    fn stop(&mut self) -> Result<(), codec::sink::SinkError> {
        Ok(())
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Counted {
    pub platforms: Vec<(&'static str, u64)>,
    pub terminals: Vec<(&'static str, u64)>,
}

impl Counted {
    pub fn total(&self) -> u64 {
        self.platforms.iter().map(|(_, n)| n).sum::<u64>()
            + self.terminals.iter().map(|(_, n)| n).sum::<u64>()
    }
}

/// What one terminal's sink received.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Played {
    pub terminal: &'static str,
    pub samples: usize,
    pub genuine_finished: bool,
    pub genuine_frames: u64,
    pub concealed: u64,
    /// Frames of the genuine alert dropped because they came too late to
    /// play (past the presentation window).
    pub late: u64,
    /// Frames decoded and handed to the sink.
    pub played: u64,
    /// Unix ms of its first sample (with `late`, what a short sink lost).
    pub first_sample_ms: Option<i64>,
    pub cancelled: bool,
    pub genuine_correlation: f64,
    pub attack_correlation: f64,
    /// Attack broadcasts the player ever knew of (a verified header).
    pub attack_records: usize,
    /// Any broadcast other than the genuine alert the player knew of.
    pub other_records: usize,
}

impl Played {
    /// The sink holds the genuine alert, whole, and nothing else: no other
    /// broadcast reached the player, the audio is the genuine audio and
    /// not the attack's, and no more samples than the alert (plus its
    /// playout slack) were written.
    pub fn only_genuine(&self) -> bool {
        let max = (self.genuine_frames as usize + 50) * 320;
        self.genuine_finished
            && self.attack_records == 0
            && self.other_records == 0
            && self.samples <= max
            && self.genuine_correlation > 0.9
            && self.attack_correlation < 0.3
    }
}
