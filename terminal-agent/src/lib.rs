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
use certs::{Bundle, RevocationState};
use codec::PlayoutConfig;
use protocol::{
    Audience, BroadcastId, HeaderVerdict, Hello, Message, Policy, Receipt, ReceiptKind, Refusal,
    RefusalReason, Status, Subscribe, Verifier,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};
use transport::FrameStream;

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
}

struct Shared {
    area: certs::AreaCode,
    verifier: Mutex<Verifier<SledReplayStore>>,
    player: Mutex<Player>,
    serial: u64,
    key: certs::SecretKey,
    connected_to: RwLock<Option<SocketAddr>>,
    sessions: std::sync::atomic::AtomicU32,
    out: mpsc::Sender<Message>,
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
    let area = *cert
        .scope()
        .first()
        .context("terminal certificate has no area")?;
    let store = SledReplayStore::open(&opts.store)
        .with_context(|| format!("opening store {}", opts.store.display()))?;
    let verifier = Verifier::new(
        opts.bundle.anchor.clone(),
        Audience::Terminal { area },
        Policy::default(),
        store,
    );
    let crypto = transport::NodeCrypto {
        anchor: opts.bundle.anchor.clone(),
        revocations: Arc::new(RwLock::new(RevocationState::new())),
    };
    let bind: SocketAddr = match opts.upstreams.first() {
        Some(SocketAddr::V6(_)) => "[::]:0".parse()?,
        _ => "0.0.0.0:0".parse()?,
    };
    let endpoint = transport::client_endpoint(&opts.bundle.identity, &crypto, bind)?;
    let (out_tx, out_rx) = mpsc::channel(1024);
    let serial = cert.serial();
    let key_seed = opts.bundle.identity.key;
    let shared = Arc::new(Shared {
        area,
        verifier: Mutex::new(verifier),
        player: Mutex::new(Player::new(opts.sink, opts.playout)),
        serial,
        key: key_seed,
        connected_to: RwLock::new(None),
        sessions: Default::default(),
        out: out_tx,
    });
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

/// Plays what is due every 20 ms; once a minute forgets replay records of
/// broadcasts and commands that have ended (they are refused as expired).
async fn audio_clock(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n = 0u32;
    loop {
        tick.tick().await;
        n = n.wrapping_add(1);
        if n % 3000 == 0 {
            let _ = protocol::ReplayStore::prune(shared.verifier().store_mut(), now_us() / 1000);
        }
        let receipts = shared.player().tick(now_us());
        for (id, kind) in receipts {
            shared.receipt(Some(id), kind, None, 0);
        }
    }
}

/// Keeps a link to the best reachable upstream.
async fn link(
    endpoint: quinn::Endpoint,
    upstreams: Vec<SocketAddr>,
    shared: Arc<Shared>,
    mut out: mpsc::Receiver<Message>,
    heartbeat: Duration,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        for (rank, addr) in upstreams.iter().enumerate() {
            let Ok(conn) = transport::connect(&endpoint, *addr).await else {
                continue;
            };
            backoff = Duration::from_millis(100);
            *shared
                .connected_to
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Some(*addr);
            info!(%addr, rank, "connected upstream");
            let reason = session(
                &endpoint,
                &conn,
                &upstreams[..rank],
                &shared,
                &mut out,
                heartbeat,
            )
            .await;
            debug!(%addr, "upstream session ended: {reason:?}");
            conn.close(0u32.into(), b"leaving");
            *shared
                .connected_to
                .write()
                .unwrap_or_else(|e| e.into_inner()) = None;
            break; // always start again from the preferred upstream
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection: subscribe, receive broadcasts, send receipts and
/// heartbeats; ends when the link drops or a preferred upstream is back.
async fn session(
    endpoint: &quinn::Endpoint,
    conn: &quinn::Connection,
    preferred: &[SocketAddr],
    shared: &Arc<Shared>,
    out: &mut mpsc::Receiver<Message>,
    heartbeat: Duration,
) -> anyhow::Result<()> {
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
    let resume: Vec<_> = shared
        .verifier()
        .active()
        .take(protocol::control::MAX_RESUME)
        .collect();
    transport::send(&mut send, &Message::Subscribe(Subscribe { resume })).await?;
    let mut beat = tokio::time::interval(heartbeat);
    let mut probe = tokio::time::interval(Duration::from_secs(3));
    probe.tick().await;
    let mut seq = 0u32;
    loop {
        tokio::select! {
            stream = conn.accept_uni() => {
                let shared = shared.clone();
                let stream = stream?;
                tokio::spawn(async move { receive(FrameStream::new(stream), shared).await });
            }
            msg = out.recv() => {
                if let Some(m) = msg { transport::send(&mut send, &m).await?; }
            }
            _ = beat.tick() => {
                seq += 1;
                transport::send(&mut send, &Message::Status(status(shared, seq).sign(&shared.key))).await?;
            }
            _ = probe.tick(), if !preferred.is_empty() => {
                for addr in preferred {
                    if let Ok(better) = transport::connect(endpoint, *addr).await {
                        // Back to the preferred upstream: this one is dropped.
                        better.close(0u32.into(), b"probe");
                        return Ok(());
                    }
                }
            }
            frame = control.next() => match frame? {
                Some(raw) => match raw.message() {
                    Ok(Message::Command(cmd)) => obey(shared, &cmd),
                    Ok(_) => {}
                    Err(e) => refuse(shared, None, &Refusal::from(e)),
                },
                None => return Ok(()),
            },
            e = conn.closed() => return Err(e.into()),
        }
    }
}

/// A remote command: executed only if this terminal's verifier accepts it.
fn obey(shared: &Shared, cmd: &protocol::SignedCommand) {
    let verdict =
        shared
            .verifier()
            .accept_command(cmd, shared.serial, shared.area, now_us() / 1000);
    match verdict {
        Ok(protocol::Action::Volume(v)) => shared.player().volume = v,
        Ok(protocol::Action::Mute(m)) => shared.player().muted = m,
        Ok(other) => info!("command {other:?} accepted; not supported by this terminal yet"),
        Err(r) => refuse(shared, None, &r),
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
    let refusals = shared
        .verifier()
        .counts()
        .iter()
        .map(|(r, n)| (r, n.min(u32::MAX as u64) as u32))
        .collect();
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
        revocation_numbers: Vec::new(),
        refusals,
    }
}

/// One broadcast stream: every frame verified before the player sees it.
async fn receive(mut frames: FrameStream, shared: Arc<Shared>) {
    loop {
        let raw = match frames.next().await {
            Ok(Some(raw)) => raw,
            Ok(None) => return,
            Err(e) => {
                refuse(
                    &shared,
                    None,
                    &Refusal::Malformed(certs::encoding::DecodeError::invalid(
                        "stream",
                        e.to_string(),
                    )),
                );
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
                    Err(r) => refuse(&shared, Some(h.id()), &r),
                }
            }
            Ok(Message::Segment(s)) => {
                let id = s.id;
                // Bind first: the verifier's lock must be released before the
                // player's is taken (snapshot() takes them in the other order).
                let verdict = shared.verifier().accept_segment(&s, now / 1000);
                match verdict {
                    Ok(_) => shared.player().push(s, now),
                    Err(r) => refuse(&shared, Some(id), &r),
                }
            }
            Ok(_) => {}
            Err(e) => {
                let r = Refusal::from(e);
                shared.verifier().count(&r);
                refuse(&shared, None, &r);
            }
        }
    }
}

fn refuse(shared: &Shared, id: Option<BroadcastId>, r: &Refusal) {
    debug!("refused: {r}");
    shared.receipt(id, ReceiptKind::Refused, Some(r.reason()), 0);
}
