//! The fan-out load client: many thin terminals in one process, so a
//! relay can be measured at thousands of terminals on a 2-core machine
//! (a real `terminal-agent` decodes and plays, ~0.7 % of a core each).
//!
//! A thin terminal is a terminal on the wire: its own identity from the
//! district's PKI, its own UDP socket and QUIC connection, dialled and
//! redialled by `transport::uplink::run` as a real terminal is, with the
//! same clock following. It sends Hello and Subscribe (with what it already
//! has, on a reconnect), reads every byte of every broadcast stream, sends
//! signed status at the heartbeat and signed receipts (Verified at its
//! first segment, Started at its start time, Finished at its end), and
//! records when each segment arrived. One in `verify_every` runs the full
//! `protocol::Verifier` on all it receives (all of them would need more
//! cores than the relay it measures); the rest only parse frames.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use certs::{AreaCode, Identity, RevocationState, TrustAnchor};
use protocol::control::PlayState;
use protocol::{
    Audience, AudioCounters, BroadcastId, Hello, MemoryReplayStore, Message, Policy, Receipt,
    ReceiptKind, Status, Subscribe, Verifier,
};
use quinn::Connection;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use transport::clock::TreeClock;
use transport::guard::Strikes;
use transport::uplink::{Handler, SessionEnd, UplinkState};
use transport::FrameStream;

/// What the whole load client saw.
#[derive(Debug, Default)]
pub struct LoadCounters {
    pub connected: std::sync::atomic::AtomicUsize,
    pub sessions: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
    pub segments: std::sync::atomic::AtomicU64,
    pub verified: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
    pub receipts: std::sync::atomic::AtomicU64,
    pub statuses: std::sync::atomic::AtomicU64,
}

/// When one terminal received each segment (µs on the load client's
/// monotonic clock).
#[derive(Debug, Default)]
struct Arrivals(Vec<(BroadcastId, u32, i64)>);

/// Per-segment arrival spread across terminals.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Spread {
    pub segments: usize,
    /// Terminals that received every segment of the broadcast.
    pub complete_terminals: usize,
    /// Terminals that received its last segment (a terminal that joined
    /// late gets the rest from where the broadcast is, not what has
    /// already played).
    pub to_the_end: usize,
    /// First to last terminal receiving a segment, ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// A running load client.
pub struct LoadClient {
    pub counters: Arc<LoadCounters>,
    arrivals: Vec<Arc<Mutex<Arrivals>>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    epoch: tokio::time::Instant,
    clocks: Vec<Arc<TreeClock>>,
}

/// The thin terminals' clocks at one moment: their estimates'
/// uncertainty and their probe periods, µs, p50 and p99 (over the synced
/// ones).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ClockSummary {
    pub synced: usize,
    pub uncertainty_p50_us: i64,
    pub uncertainty_p99_us: i64,
    pub probe_period_p50_us: i64,
    pub probe_period_p99_us: i64,
}

/// How the thin terminals behave.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub upstreams: Vec<SocketAddr>,
    /// Status while idle; while playing, every
    /// `terminal_agent::core::PLAYING_HEARTBEAT_US` at least, as a real
    /// terminal.
    pub heartbeat: Duration,
    /// One terminal in this many verifies everything (0: none).
    pub verify_every: usize,
    /// Terminals sharing one source address (127.1.x.y), as many do
    /// behind a carrier's NAT; 0: all on 127.0.0.1.
    pub per_address: usize,
}

impl LoadClient {
    /// Starts one thin terminal per identity (each dials at once).
    pub fn start(
        identities: Vec<Identity>,
        anchor: TrustAnchor,
        opts: LoadOptions,
    ) -> anyhow::Result<LoadClient> {
        let counters = Arc::new(LoadCounters::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let epoch = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        let mut arrivals = Vec::new();
        let mut clocks = Vec::new();
        for (k, identity) in identities.into_iter().enumerate() {
            let crypto = transport::NodeCrypto {
                anchor: anchor.clone(),
                revocations: Arc::new(RwLock::new(RevocationState::new())),
                on_reject: None,
            };
            let source = match opts.per_address {
                0 => std::net::Ipv4Addr::LOCALHOST,
                per => {
                    let g = (k / per) as u16;
                    std::net::Ipv4Addr::new(127, 1, (g >> 8) as u8, g as u8)
                }
            };
            let socket = transport::bind_udp((source, 0).into())?;
            let endpoint = transport::client_endpoint(&identity, &crypto, socket)?;
            let area = identity
                .cert()
                .scope()
                .first()
                .copied()
                .unwrap_or(AreaCode::NATION);
            let verify = opts.verify_every > 0 && k % opts.verify_every == 0;
            let verifier = verify.then(|| {
                Verifier::new(
                    anchor.clone(),
                    Audience::Terminal { area },
                    Policy::default(),
                    MemoryReplayStore::default(),
                )
            });
            let record = Arc::new(Mutex::new(Arrivals::default()));
            arrivals.push(record.clone());
            let clock = TreeClock::follower(transport::clock::LocalClock::default());
            clocks.push(clock.clone());
            let thin = ThinTerminal {
                identity: Arc::new(identity),
                clock: clock.clone(),
                verifier: verifier.map(|v| Arc::new(Mutex::new(v))),
                record,
                counters: counters.clone(),
                heartbeat: opts.heartbeat,
                have: Arc::new(Mutex::new(HashMap::new())),
                playing_until_us: Arc::new(AtomicI64::new(i64::MIN)),
                status_seq: 0,
                revocation_numbers: Vec::new(),
                epoch,
            };
            let (state, _) = watch::channel(UplinkState::default());
            let mut stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(transport::uplink::run(
                endpoint,
                opts.upstreams.clone(),
                thin,
                clock,
                state,
                Duration::from_millis(100),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )));
        }
        Ok(LoadClient {
            counters,
            arrivals,
            shutdown,
            tasks,
            epoch,
            clocks,
        })
    }

    /// Where the terminals' clocks stand now.
    pub fn clocks(&self) -> ClockSummary {
        let mut uncertainty = Vec::new();
        let mut periods = Vec::new();
        for c in &self.clocks {
            let e = c.estimate();
            if e.synced {
                uncertainty.push(e.uncertainty_us);
            }
            periods.extend(c.probe_period_us());
        }
        uncertainty.sort_unstable();
        periods.sort_unstable();
        let at = |v: &[i64], q: f64| {
            v.get(((v.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        ClockSummary {
            synced: uncertainty.len(),
            uncertainty_p50_us: at(&uncertainty, 0.5),
            uncertainty_p99_us: at(&uncertainty, 0.99),
            probe_period_p50_us: at(&periods, 0.5),
            probe_period_p99_us: at(&periods, 0.99),
        }
    }

    pub fn connected(&self) -> usize {
        self.counters
            .connected
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` terminals are connected or `timeout` passes; the
    /// number connected.
    pub async fn wait_connected(&self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.connected() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.connected()
    }

    /// Microseconds since the client started (the arrivals' clock).
    pub fn now_us(&self) -> i64 {
        self.epoch.elapsed().as_micros() as i64
    }

    /// How spread out the arrival of `id`'s segments was across terminals.
    pub fn spread(&self, id: BroadcastId) -> Spread {
        let mut by_seq: HashMap<u32, (i64, i64)> = HashMap::new();
        let mut per_terminal = Vec::new();
        let mut got_last = Vec::new();
        for a in &self.arrivals {
            let a = a.lock().unwrap_or_else(|p| p.into_inner());
            let mut n = 0usize;
            for (b, seq, t) in &a.0 {
                if *b != id {
                    continue;
                }
                n += 1;
                let e = by_seq.entry(*seq).or_insert((*t, *t));
                e.0 = e.0.min(*t);
                e.1 = e.1.max(*t);
            }
            per_terminal.push(n);
            got_last.push(
                a.0.iter()
                    .filter(|(b, _, _)| *b == id)
                    .map(|(_, q, _)| *q)
                    .max(),
            );
        }
        let last = got_last.iter().flatten().max().copied();
        let to_the_end = got_last
            .iter()
            .filter(|q| q.is_some() && **q == last)
            .count();
        let segments = by_seq.len();
        let mut spreads: Vec<f64> = by_seq
            .values()
            .map(|(lo, hi)| (hi - lo) as f64 / 1000.0)
            .collect();
        spreads.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if spreads.is_empty() {
                return 0.0;
            }
            let i = ((spreads.len() as f64 - 1.0) * q).round() as usize;
            (spreads[i] * 10.0).round() / 10.0
        };
        Spread {
            segments,
            complete_terminals: per_terminal
                .iter()
                .filter(|n| **n >= segments && segments > 0)
                .count(),
            to_the_end,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }

    /// When each terminal first received a segment of `id` at or after
    /// `since_us` (the arrivals' clock); None for one that did not.
    pub fn first_arrivals(&self, id: BroadcastId, since_us: i64) -> Vec<Option<i64>> {
        self.arrivals
            .iter()
            .map(|a| {
                let a = a.lock().unwrap_or_else(|p| p.into_inner());
                a.0.iter()
                    .filter(|(b, _, t)| *b == id && *t >= since_us)
                    .map(|(_, _, t)| *t)
                    .min()
            })
            .collect()
    }

    /// Stops every thin terminal (each closes its connection).
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

struct ThinTerminal {
    identity: Arc<Identity>,
    clock: Arc<TreeClock>,
    verifier: Option<Arc<Mutex<Verifier<MemoryReplayStore>>>>,
    record: Arc<Mutex<Arrivals>>,
    counters: Arc<LoadCounters>,
    heartbeat: Duration,
    /// Next sequence wanted of each broadcast (the resume list).
    have: Arc<Mutex<HashMap<BroadcastId, u32>>>,
    /// Tree time the audio in hand plays until.
    playing_until_us: Arc<AtomicI64>,
    status_seq: u32,
    /// (signer, number) of the revocation lists received.
    revocation_numbers: Vec<(u64, u64)>,
    epoch: tokio::time::Instant,
}

/// Counts a connected terminal while the session lasts.
struct Connected(Arc<LoadCounters>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0
            .connected
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Handler for ThinTerminal {
    async fn session(&mut self, conn: &Connection, _strikes: &Arc<Strikes>) -> SessionEnd {
        match self.run(conn).await {
            Ok(end) => end,
            Err(e) => SessionEnd::Lost(e.to_string()),
        }
    }
}

impl ThinTerminal {
    fn serial(&self) -> u64 {
        self.identity.cert().serial()
    }

    async fn run(&mut self, conn: &Connection) -> anyhow::Result<SessionEnd> {
        use std::sync::atomic::Ordering::Relaxed;
        let (mut send, recv) = conn.open_bi().await?;
        let mut control = FrameStream::new(recv);
        let hello = Hello {
            tier: certs::Tier::Terminal,
            serial: self.serial(),
            software: "ebs-load 1".into(),
        };
        transport::send(&mut send, &Message::Hello(hello)).await?;
        let resume = lock(&self.have).iter().map(|(b, s)| (*b, *s)).collect();
        transport::send(&mut send, &Message::Subscribe(Subscribe { resume })).await?;
        self.counters.connected.fetch_add(1, Relaxed);
        self.counters.sessions.fetch_add(1, Relaxed);
        let _connected = Connected(self.counters.clone());
        let (up_tx, mut up_rx) = mpsc::channel::<Message>(64);
        let playing_every =
            Duration::from_micros(terminal_agent::core::PLAYING_HEARTBEAT_US as u64)
                .min(self.heartbeat);
        let mut last_status: Option<tokio::time::Instant> = None;
        let mut streams = tokio::task::JoinSet::new();
        loop {
            // As a terminal's core: a status on linking, then one a
            // heartbeat, and at least one every `playing_every` while
            // something plays.
            let playing = self.playing_until_us.load(Relaxed) > self.clock.now();
            let status_due = last_status.map_or_else(tokio::time::Instant::now, |at| {
                at + if playing {
                    playing_every
                } else {
                    self.heartbeat
                }
            });
            tokio::select! {
                stream = conn.accept_uni() => {
                    let reader = StreamReader {
                        identity: self.identity.clone(),
                        clock: self.clock.clone(),
                        verifier: self.verifier.clone(),
                        record: self.record.clone(),
                        counters: self.counters.clone(),
                        have: self.have.clone(),
                        playing_until_us: self.playing_until_us.clone(),
                        up: up_tx.clone(),
                        epoch: self.epoch,
                    };
                    streams.spawn(reader.read(FrameStream::new(stream?)));
                }
                _ = tokio::time::sleep_until(status_due) => {
                    last_status = Some(tokio::time::Instant::now());
                    self.status_seq += 1;
                    let status = self.status();
                    self.clock.probe_along(conn);
                    transport::send(&mut send, &Message::Status(status.sign(&self.identity.key))).await?;
                    self.counters.statuses.fetch_add(1, Relaxed);
                }
                Some(m) = up_rx.recv() => {
                    transport::send(&mut send, &m).await?;
                    self.counters.receipts.fetch_add(1, Relaxed);
                }
                frame = control.next() => match frame {
                    // A revocation list is held (and named in the next
                    // status, as a terminal does: a status naming none
                    // makes the relay send every list again); commands
                    // are read, not acted on.
                    Ok(Some(raw)) => {
                        if let Ok(Message::Revocation(list)) = raw.message() {
                            hold_list(&mut self.revocation_numbers, list.signer_serial, list.number);
                        }
                    }
                    Ok(None) => return Ok(SessionEnd::Lost("control stream closed".into())),
                    Err(e) => return Ok(SessionEnd::Lost(e.to_string())),
                },
                Some(_) = streams.join_next(), if !streams.is_empty() => {}
                e = conn.closed() => return Ok(SessionEnd::Lost(e.to_string())),
            }
        }
    }

    fn status(&self) -> Status {
        let e = self.clock.estimate();
        Status {
            terminal_serial: self.serial(),
            seq: self.status_seq,
            sent_at_ms: self.clock.now() / 1000,
            volume: 80,
            muted: false,
            playing: None,
            state: PlayState::Waiting,
            clock_offset_us: e.offset_us,
            clock_uncertainty_us: if e.synced { 500 } else { u32::MAX },
            software: "ebs-load 1".into(),
            faults: Vec::new(),
            revocation_numbers: self.revocation_numbers.clone(),
            refusals: Vec::new(),
            audio: AudioCounters::default(),
            cache: Default::default(),
        }
    }
}

/// The newest list of each signer.
fn hold_list(held: &mut Vec<(u64, u64)>, signer: u64, number: u64) {
    match held.iter_mut().find(|(s, _)| *s == signer) {
        Some(h) => h.1 = h.1.max(number),
        None => held.push((signer, number)),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads one broadcast stream to its end.
#[derive(Clone)]
struct StreamReader {
    identity: Arc<Identity>,
    clock: Arc<TreeClock>,
    verifier: Option<Arc<Mutex<Verifier<MemoryReplayStore>>>>,
    record: Arc<Mutex<Arrivals>>,
    counters: Arc<LoadCounters>,
    have: Arc<Mutex<HashMap<BroadcastId, u32>>>,
    playing_until_us: Arc<AtomicI64>,
    up: mpsc::Sender<Message>,
    epoch: tokio::time::Instant,
}

impl StreamReader {
    async fn read(self, mut frames: FrameStream) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut first = true;
        while let Ok(Some(raw)) = frames.next().await {
            let arrived = self.epoch.elapsed().as_micros() as i64;
            self.counters
                .bytes
                .fetch_add(raw.bytes.len() as u64, Relaxed);
            let now_ms = self.clock.now() / 1000;
            let message = match raw.message() {
                Ok(m) => m,
                Err(_) => {
                    self.counters.refused.fetch_add(1, Relaxed);
                    return;
                }
            };
            match message {
                Message::Header(h) => {
                    if let Some(v) = &self.verifier {
                        if lock(v).accept_header(&h, now_ms).is_err() {
                            self.counters.refused.fetch_add(1, Relaxed);
                            return;
                        }
                    }
                }
                Message::Segment(s) => {
                    if let Some(v) = &self.verifier {
                        if lock(v).accept_segment(&s, now_ms).is_err() {
                            self.counters.refused.fetch_add(1, Relaxed);
                            return;
                        }
                        self.counters.verified.fetch_add(1, Relaxed);
                    }
                    self.counters.segments.fetch_add(1, Relaxed);
                    lock(&self.record).0.push((s.id, s.seq, arrived));
                    lock(&self.have).insert(s.id, s.seq + 1);
                    let until = s.pts_us + s.frames.len() as i64 * 20_000;
                    self.playing_until_us.fetch_max(until, Relaxed);
                    if first {
                        first = false;
                        self.receipt(s.id, ReceiptKind::Verified, now_ms).await;
                        self.later(s.id, ReceiptKind::Started, s.pts_us);
                    }
                    if s.last {
                        let end = s.pts_us + s.frames.len() as i64 * 20_000;
                        self.later(s.id, ReceiptKind::Finished, end);
                        // Nothing more of it is wanted after a reconnect.
                        lock(&self.have).insert(s.id, u32::MAX);
                    }
                }
                _ => {}
            }
        }
    }

    async fn receipt(&self, id: BroadcastId, kind: ReceiptKind, at_ms: i64) {
        let r = Receipt {
            broadcast: Some(id),
            terminal_serial: self.identity.cert().serial(),
            kind,
            reason: None,
            at_ms,
            detail: 0,
        };
        let _ = self
            .up
            .send(Message::Receipt(r.sign(&self.identity.key)))
            .await;
    }

    /// Sends a receipt once the tree's time reaches `at_us`.
    fn later(&self, id: BroadcastId, kind: ReceiptKind, at_us: i64) {
        let wait = (at_us - self.clock.now()).max(0) as u64;
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(wait)).await;
            me.receipt(id, kind, at_us / 1000).await;
        });
    }
}
