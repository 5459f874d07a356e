//! The terminal agent: dials out to its upstream platforms in failover
//! order, verifies every header and segment before anything reaches the
//! sink, arbitrates by priority, plays, and reports signed receipts and
//! status. A library with a thin `main`, so tests and the demo run many
//! terminals in one process.

pub mod config;
pub mod player;
pub mod replay_store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use certs::{Bundle, RevocationList, RevocationState};
use codec::PlayoutConfig;
use protocol::{
    Audience, BroadcastId, EventReporter, HeaderVerdict, Hello, Message, Policy, Receipt,
    ReceiptKind, Refusal, RefusalReason, Status, Subscribe, Verifier,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};
use transport::{guard, FrameStream};

pub use player::PlayRecord;
use player::Player;
use replay_store::SledReplayStore;

pub struct TerminalOptions {
    pub bundle: Bundle,
    /// Upstream platforms in failover order: village, town, district.
    pub upstreams: Vec<SocketAddr>,
    pub sink: Box<dyn codec::Sink>,
    pub store: PathBuf,
    pub heartbeat: Duration,
    pub playout: PlayoutConfig,
}

/// What the terminal has done, for its status and for tests.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub connected_to: Option<SocketAddr>,
    pub records: std::collections::HashMap<BroadcastId, PlayRecord>,
    pub refusals: Vec<(RefusalReason, u64)>,
    pub samples_played: u64,
    pub playing: Option<BroadcastId>,
    pub volume: u8,
    pub muted: bool,
    /// Upstream sessions opened so far (a migration is not a new session).
    pub sessions: u32,
    /// (signer, number) of the revocation lists in force.
    pub revocation_numbers: Vec<(u64, u64)>,
    /// Upstreams dropped for sending what fails verification.
    pub hostile_upstreams: u32,
}

/// Refused header ids remembered so each gets one refusal receipt.
const REFUSED_IDS: usize = 1024;

struct Shared {
    area: certs::AreaCode,
    verifier: Mutex<Verifier<SledReplayStore>>,
    player: Mutex<Player>,
    serial: u64,
    key: certs::SecretKey,
    connected_to: RwLock<Option<SocketAddr>>,
    sessions: std::sync::atomic::AtomicU32,
    hostile: std::sync::atomic::AtomicU32,
    out: mpsc::Sender<Message>,
    reporter: Mutex<EventReporter>,
    refused_ids: Mutex<std::collections::HashSet<BroadcastId>>,
    /// The lists in force, shared by the message and TLS verifiers.
    revocations: Arc<RwLock<RevocationState>>,
}

impl Shared {
    fn player(&self) -> std::sync::MutexGuard<'_, Player> {
        self.player.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn verifier(&self) -> std::sync::MutexGuard<'_, Verifier<SledReplayStore>> {
        self.verifier.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn receipt(
        &self,
        broadcast: Option<BroadcastId>,
        kind: ReceiptKind,
        reason: Option<RefusalReason>,
        detail: u32,
    ) {
        let r = Receipt {
            broadcast,
            terminal_serial: self.serial,
            kind,
            reason,
            at_ms: now_us() / 1000,
            detail,
        };
        let _ = self.out.try_send(Message::Receipt(r.sign(&self.key)));
    }

    /// Reports a refusal (already counted by the verifier): aggregated into
    /// security events; a refused header also gets one refusal receipt.
    fn report(&self, id: Option<BroadcastId>, r: &Refusal, offender: u64, header: bool) {
        debug!("refused: {r}");
        let due = self
            .reporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(r.reason(), id, offender, now_us() / 1000);
        if let Some(e) = due {
            self.send_event(e);
        }
        if let (true, Some(id)) = (header, id) {
            let first = {
                let mut seen = self.refused_ids.lock().unwrap_or_else(|p| p.into_inner());
                if seen.len() >= REFUSED_IDS {
                    seen.clear();
                }
                seen.insert(id)
            };
            if first {
                self.receipt(Some(id), ReceiptKind::Refused, Some(r.reason()), 0);
            }
        }
    }

    /// Counts a refusal made outside the verifier, then reports it.
    fn refuse(&self, id: Option<BroadcastId>, r: &Refusal, offender: u64) {
        self.verifier().count(r);
        self.report(id, r, offender, false);
    }

    fn send_event(&self, e: protocol::SecurityEvent) {
        info!(
            reason = e.reason.name(),
            count = e.count,
            offender = format!("{:016x}", e.offender),
            "security event"
        );
        let _ = self.out.try_send(Message::SecurityEvent(e.sign(&self.key)));
    }

    fn flush_events(&self) {
        let due = self
            .reporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .due(now_us() / 1000);
        for e in due {
            self.send_event(e);
        }
    }

    /// Applies a revocation list to both verifiers, keeps it, and stops
    /// what it revokes. Ok(true) when it was new.
    fn apply_revocation(&self, list: RevocationList, persist: bool) -> Result<bool, Refusal> {
        let signer = list.signer_serial;
        let encoded = list.encode();
        let outcome = self
            .verifier()
            .apply_revocation(list.clone(), now_us() / 1000);
        let outcome = match outcome {
            Ok(o) => o,
            Err(r) => {
                self.report(None, &r, signer, false);
                return Err(r);
            }
        };
        if outcome.applied == certs::Applied::AlreadyCurrent {
            return Ok(false);
        }
        if persist {
            let stored = self.verifier().store().put_revocation(signer, &encoded);
            if let Err(e) = stored {
                tracing::error!("storing a revocation list: {e}");
            }
        }
        for id in &outcome.stopped {
            self.player().cancel(*id);
            self.receipt(Some(*id), ReceiptKind::Cancelled, None, 0);
        }
        info!(
            signer = format!("{signer:016x}"),
            stopped = outcome.stopped.len(),
            "revocation list in force"
        );
        Ok(true)
    }
}

pub fn now_us() -> i64 {
    certs::time::unix_now_ms() * 1000
}

pub struct TerminalHandle {
    pub serial: u64,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    endpoint: quinn::Endpoint,
}

impl TerminalHandle {
    pub fn snapshot(&self) -> Snapshot {
        // Never hold one of the two locks while taking the other.
        let refusals = self.shared.verifier().counts().iter().collect();
        let p = self.shared.player();
        Snapshot {
            connected_to: *self
                .shared
                .connected_to
                .read()
                .unwrap_or_else(|e| e.into_inner()),
            records: p.records.clone(),
            refusals,
            samples_played: p.samples_played,
            playing: p.current(),
            volume: p.volume,
            muted: p.muted,
            sessions: self
                .shared
                .sessions
                .load(std::sync::atomic::Ordering::Relaxed),
            revocation_numbers: self
                .shared
                .revocations
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .numbers()
                .collect(),
            hostile_upstreams: self
                .shared
                .hostile
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Moves to a new local UDP port, as a 4G re-attach gives the terminal a
    /// new address: the QUIC connection migrates, nothing reconnects.
    pub fn rebind(&self) -> std::io::Result<()> {
        let local = self.endpoint.local_addr()?;
        let socket = std::net::UdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
        self.endpoint.rebind(socket)
    }

    /// Stops at once, as a crash or power loss would.
    pub fn kill(&self) {
        for t in &self.tasks {
            t.abort();
        }
        self.endpoint.close(0u32.into(), b"stopped");
    }

    /// Stops at once and waits until every task has let go of the terminal's
    /// state (its store is then closed and may be opened again).
    pub async fn shutdown(self) {
        self.kill();
        for t in &self.tasks {
            while !t.is_finished() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        // Stream tasks end as soon as the closed endpoint fails their reads.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while Arc::strong_count(&self.shared) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.shared.player().stop();
    }

    /// Stops and closes the sink cleanly (WAV header written).
    pub fn stop(self) {
        self.kill();
        self.shared.player().stop();
    }
}

pub async fn start(opts: TerminalOptions) -> anyhow::Result<TerminalHandle> {
    let cert = opts.bundle.identity.cert().clone();
    let bundle_lists = opts.bundle.revocations;
    let area = *cert
        .scope()
        .first()
        .context("terminal certificate has no area")?;
    let store = SledReplayStore::open(&opts.store)
        .with_context(|| format!("opening store {}", opts.store.display()))?;
    // One revocation state for the message verifier and the TLS verifier.
    let revocations = Arc::new(RwLock::new(RevocationState::new()));
    let verifier = Verifier::new(
        opts.bundle.anchor.clone(),
        Audience::Terminal { area },
        Policy::default(),
        store,
    )
    .with_shared_revocations(revocations.clone());
    // An upstream refused in the TLS handshake is a security event; the
    // hook finds the terminal's state once it exists.
    let hook_target: Arc<std::sync::OnceLock<std::sync::Weak<Shared>>> = Arc::default();
    let target = hook_target.clone();
    let on_reject: certs::tls::RejectHook = Arc::new(move |e, leaf| {
        if let Some(s) = target.get().and_then(std::sync::Weak::upgrade) {
            s.refuse(None, &Refusal::from_peer(e), leaf.unwrap_or(0));
        }
    });
    let crypto = transport::NodeCrypto {
        anchor: opts.bundle.anchor.clone(),
        revocations: revocations.clone(),
        on_reject: Some(on_reject),
    };
    let bind: SocketAddr = match opts.upstreams.first() {
        Some(SocketAddr::V6(_)) => "[::]:0".parse()?,
        _ => "0.0.0.0:0".parse()?,
    };
    let endpoint = transport::client_endpoint(&opts.bundle.identity, &crypto, bind)?;
    let (out_tx, out_rx) = mpsc::channel(1024);
    let serial = cert.serial();
    let shared = Arc::new(Shared {
        area,
        verifier: Mutex::new(verifier),
        player: Mutex::new(Player::new(opts.sink, opts.playout)),
        serial,
        key: opts.bundle.identity.key,
        connected_to: RwLock::new(None),
        sessions: Default::default(),
        hostile: Default::default(),
        out: out_tx,
        reporter: Mutex::new(EventReporter::new(
            serial,
            certs::Tier::Terminal,
            EventReporter::DEFAULT_WINDOW_MS,
        )),
        refused_ids: Mutex::default(),
        revocations,
    });
    let _ = hook_target.set(Arc::downgrade(&shared));
    // Lists in force before the restart apply before the first handshake.
    let stored = shared.verifier().store().revocations();
    for body in stored.context("reading stored revocation lists")? {
        match RevocationList::decode(&body) {
            Ok(list) => {
                if let Err(e) = shared.apply_revocation(list, false) {
                    tracing::error!("a stored revocation list no longer applies: {e}");
                }
            }
            Err(e) => tracing::error!("a stored revocation list is unreadable: {e}"),
        }
    }
    // Lists provisioned with the bundle, unless the store has newer ones.
    for list in bundle_lists {
        let held = shared
            .verifier()
            .revocations()
            .numbers()
            .any(|(s, n)| s == list.signer_serial && n >= list.number);
        if !held {
            if let Err(e) = shared.apply_revocation(list, true) {
                tracing::error!("a provisioned revocation list does not apply: {e}");
            }
        }
    }
    let tasks = vec![
        tokio::spawn(audio_clock(shared.clone())),
        tokio::spawn(link(
            endpoint.clone(),
            opts.upstreams,
            shared.clone(),
            out_rx,
            opts.heartbeat,
        )),
    ];
    info!(serial = format!("{serial:016x}"), %area, "terminal started");
    Ok(TerminalHandle {
        serial,
        shared,
        tasks,
        endpoint,
    })
}

/// Plays what is due every 20 ms; twice a second sends aggregated security
/// events; once a minute forgets replay records of broadcasts and commands
/// that have ended (they are refused as expired).
async fn audio_clock(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n = 0u32;
    loop {
        tick.tick().await;
        n = n.wrapping_add(1);
        if n % 3000 == 0 {
            let _ = shared.verifier().prune(now_us() / 1000);
        }
        if n % 25 == 0 {
            shared.flush_events();
        }
        let receipts = shared.player().tick(now_us());
        for (id, kind) in receipts {
            shared.receipt(Some(id), kind, None, 0);
        }
    }
}

/// Why a session with an upstream ended.
enum SessionEnd {
    /// Link lost or closed; try again from the preferred upstream.
    Lost(anyhow::Error),
    /// A preferred upstream answers again.
    Preferred,
    /// The upstream sent too much that failed verification, or its own
    /// certificate was revoked: avoid it for a while.
    Hostile(&'static str),
}

/// Keeps a link to the best reachable upstream that is not quarantined.
async fn link(
    endpoint: quinn::Endpoint,
    upstreams: Vec<SocketAddr>,
    shared: Arc<Shared>,
    mut out: mpsc::Receiver<Message>,
    heartbeat: Duration,
) {
    let mut backoff = Duration::from_millis(100);
    let mut quarantine = guard::Quarantine::default();
    // The upstream whose link was just lost is tried last; the probe brings
    // the terminal back to it once it answers again.
    let mut lost: Option<SocketAddr> = None;
    loop {
        let usable = quarantine.usable(&upstreams, std::time::Instant::now());
        for addr in guard::failover_order(&usable, lost) {
            let Ok(conn) = transport::connect(&endpoint, addr).await else {
                continue;
            };
            let rank = usable.iter().position(|a| *a == addr).unwrap_or(0);
            backoff = Duration::from_millis(100);
            lost = None;
            *shared
                .connected_to
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Some(addr);
            info!(%addr, rank, "connected upstream");
            let end = session(
                &endpoint,
                &conn,
                &usable[..rank],
                &shared,
                &mut out,
                heartbeat,
            )
            .await;
            match end {
                SessionEnd::Lost(e) => {
                    debug!(%addr, "upstream session ended: {e}");
                    lost = Some(addr);
                    backoff = Duration::ZERO;
                }
                SessionEnd::Hostile(why) => {
                    tracing::warn!(%addr, "upstream avoided for {:?}: {why}", guard::QUARANTINE);
                    shared
                        .hostile
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    quarantine.add(addr, std::time::Instant::now());
                    backoff = Duration::ZERO;
                }
                SessionEnd::Preferred => {}
            }
            conn.close(0u32.into(), b"leaving");
            *shared
                .connected_to
                .write()
                .unwrap_or_else(|e| e.into_inner()) = None;
            break; // start again from the preferred upstream
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
    }
}

/// What the stream tasks of one session share with it.
struct LinkState {
    strikes: guard::Strikes,
    /// Serial of the upstream's certificate, for security events.
    peer: u64,
}

impl LinkState {
    fn strike(&self) {
        self.strikes.strike();
    }
}

/// One connection: subscribe, receive broadcasts, send receipts and
/// heartbeats; ends when the link drops, a preferred upstream is back, or
/// this upstream proves hostile.
async fn session(
    endpoint: &quinn::Endpoint,
    conn: &quinn::Connection,
    preferred: &[SocketAddr],
    shared: &Arc<Shared>,
    out: &mut mpsc::Receiver<Message>,
    heartbeat: Duration,
) -> SessionEnd {
    session_loop(endpoint, conn, preferred, shared, out, heartbeat)
        .await
        .unwrap_or_else(SessionEnd::Lost)
}

async fn session_loop(
    endpoint: &quinn::Endpoint,
    conn: &quinn::Connection,
    preferred: &[SocketAddr],
    shared: &Arc<Shared>,
    out: &mut mpsc::Receiver<Message>,
    heartbeat: Duration,
) -> anyhow::Result<SessionEnd> {
    let peer_chain = transport::peer_chain(conn)?;
    let link = Arc::new(LinkState {
        strikes: guard::Strikes::default(),
        peer: peer_chain.last().map_or(0, certs::Certificate::serial),
    });
    let (mut send, recv) = conn.open_bi().await?;
    let mut control = FrameStream::new(recv);
    transport::send(
        &mut send,
        &Message::Hello(Hello {
            tier: certs::Tier::Terminal,
            serial: shared.serial,
            software: software(),
        }),
    )
    .await?;
    // What is half-received resumes; what is complete or cancelled is
    // named with an unreachable sequence, so it is not sent again.
    let resume: Vec<_> = {
        let v = shared.verifier();
        let mut r: Vec<_> = v.active().take(protocol::control::MAX_RESUME).collect();
        let room = protocol::control::MAX_RESUME - r.len();
        r.extend(
            v.closed(now_us() / 1000, room)
                .into_iter()
                .map(|id| (id, u32::MAX)),
        );
        r
    };
    transport::send(&mut send, &Message::Subscribe(Subscribe { resume })).await?;
    let mut beat = tokio::time::interval(heartbeat);
    let preferred_back = Arc::new(tokio::sync::Notify::new());
    let _probe = transport::probe_preferred(endpoint, preferred, &preferred_back);
    let mut seq = 0u32;
    loop {
        tokio::select! {
            stream = conn.accept_uni() => {
                let shared = shared.clone();
                let link = link.clone();
                let stream = stream?;
                tokio::spawn(async move { receive(FrameStream::new(stream), shared, link).await });
            }
            msg = out.recv() => {
                if let Some(m) = msg { transport::send(&mut send, &m).await?; }
            }
            _ = beat.tick() => {
                seq += 1;
                transport::send(&mut send, &Message::Status(status(shared, seq).sign(&shared.key))).await?;
            }
            // Back to the preferred upstream: this one is dropped.
            _ = preferred_back.notified() => return Ok(SessionEnd::Preferred),
            _ = link.strikes.hostile() => {
                return Ok(SessionEnd::Hostile("too many refused messages"));
            }
            frame = control.next() => match frame {
                Ok(Some(raw)) => match raw.message() {
                    Ok(Message::Command(cmd)) => obey(shared, &cmd, &link),
                    Ok(Message::Revocation(list)) => {
                        match shared.apply_revocation(list, true) {
                            Ok(true) if shared.verifier().chain_fails(&peer_chain, now_us() / 1000) => {
                                return Ok(SessionEnd::Hostile("upstream's certificate revoked"));
                            }
                            Ok(_) => {}
                            Err(_) => link.strike(),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        shared.refuse(None, &Refusal::from(e), link.peer);
                        link.strike();
                    }
                },
                Ok(None) => return Ok(SessionEnd::Lost(anyhow::anyhow!("upstream closed the control stream"))),
                Err(e) => {
                    if let Some(d) = e.framing() {
                        shared.refuse(None, &Refusal::Malformed(d.clone()), link.peer);
                        return Ok(SessionEnd::Hostile("garbled control stream"));
                    }
                    return Err(e.into());
                }
            },
            e = conn.closed() => return Err(e.into()),
        }
    }
}

/// A remote command: executed only if this terminal's verifier accepts it.
fn obey(shared: &Shared, cmd: &protocol::SignedCommand, link: &LinkState) {
    let verdict =
        shared
            .verifier()
            .accept_command(cmd, shared.serial, shared.area, now_us() / 1000);
    match verdict {
        Ok(protocol::Action::Volume(v)) => shared.player().volume = v,
        Ok(protocol::Action::Mute(m)) => shared.player().muted = m,
        Ok(other) => info!("command {other:?} accepted; not supported by this terminal yet"),
        Err(r) => {
            let offender = cmd.chain().last().map_or(0, certs::Certificate::serial);
            shared.report(None, &r, offender, false);
            link.strike();
        }
    }
}

fn software() -> String {
    concat!("terminal-agent ", env!("CARGO_PKG_VERSION")).into()
}

fn status(shared: &Shared, seq: u32) -> Status {
    let (volume, muted, playing) = {
        let p = shared.player();
        (p.volume, p.muted, p.current())
    };
    let (refusals, revocation_numbers) = {
        let v = shared.verifier();
        let refusals = v
            .counts()
            .iter()
            .map(|(r, n)| (r, n.min(u32::MAX as u64) as u32))
            .collect();
        let numbers = v
            .revocations()
            .numbers()
            .take(protocol::control::MAX_REVOCATION_NUMBERS)
            .collect();
        (refusals, numbers)
    };
    Status {
        terminal_serial: shared.serial,
        seq,
        sent_at_ms: now_us() / 1000,
        volume,
        muted,
        playing,
        state: if playing.is_some() {
            protocol::control::PlayState::Playing
        } else {
            protocol::control::PlayState::Waiting
        },
        clock_offset_us: 0,
        software: software(),
        faults: Vec::new(),
        revocation_numbers,
        refusals,
    }
}

/// One broadcast stream: every frame verified before the player sees it. A
/// stream that keeps failing verification is stopped.
async fn receive(mut frames: FrameStream, shared: Arc<Shared>, link: Arc<LinkState>) {
    let mut refused = 0u32;
    loop {
        if refused >= guard::STREAM_REFUSALS {
            frames.stop();
            return;
        }
        let raw = match frames.next().await {
            Ok(Some(raw)) => raw,
            Ok(None) => return,
            Err(e) => {
                if let Some(d) = e.framing() {
                    shared.refuse(None, &Refusal::Malformed(d.clone()), link.peer);
                    link.strike();
                }
                frames.stop();
                return;
            }
        };
        let now = now_us();
        match raw.message() {
            Ok(Message::Header(h)) => {
                let verdict = shared.verifier().accept_header(&h, now / 1000);
                match verdict {
                    Ok(HeaderVerdict::New) | Ok(HeaderVerdict::Resumed { .. }) => {
                        if h.header().audio.codec != protocol::Codec::None
                            && !shared.player().has(h.id())
                        {
                            shared.player().add(h.header().clone(), h.signer().tier());
                            shared.receipt(Some(h.id()), ReceiptKind::Verified, None, 0);
                        }
                    }
                    Ok(HeaderVerdict::Cancel { target, .. }) => {
                        shared.player().cancel(target);
                        shared.receipt(Some(target), ReceiptKind::Cancelled, None, 0);
                    }
                    Ok(HeaderVerdict::Closed) => {}
                    Err(r) => {
                        shared.report(Some(h.id()), &r, h.signer().serial(), true);
                        link.strike();
                        refused += 1;
                    }
                }
            }
            Ok(Message::Segment(s)) => {
                let id = s.id;
                // Bind first: the verifier's lock must be released before the
                // player's is taken (snapshot() takes them in the other order).
                let verdict = shared.verifier().accept_segment(&s, now / 1000);
                match verdict {
                    Ok(_) => shared.player().push(s, now),
                    Err(r) => {
                        shared.report(Some(id), &r, link.peer, false);
                        link.strike();
                        refused += 1;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                shared.refuse(None, &Refusal::from(e), link.peer);
                link.strike();
                refused += 1;
            }
        }
    }
}
