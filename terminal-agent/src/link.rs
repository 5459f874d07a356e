//! A terminal's session with an upstream (the `transport::uplink` handler):
//! hello and subscribe, then broadcast streams in, control messages in,
//! reports out. Every frame goes to the core through the driver; the link
//! only counts what the core refused against the stream and the link.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::{Hello, Message, Refusal};
use quinn::Connection;
use tokio::sync::{mpsc, oneshot};
use transport::guard::{self, Strikes};
use transport::liveness;
use transport::uplink::{Handler, SessionEnd};
use transport::FrameStream;

use crate::core::ControlVerdict;
use crate::driver::Input;

pub(crate) struct TerminalLink {
    pub serial: u64,
    /// The tree's time, to tell how much audio an open stream holds.
    pub clock: Arc<transport::clock::TreeClock>,
    pub software: String,
    pub inputs: mpsc::Sender<Input>,
    /// Receipts, status and events from the core; they wait here while no
    /// upstream is connected.
    pub up: mpsc::Receiver<Message>,
}

/// Tells the core the link is down however the session ends.
struct DownOnDrop(mpsc::Sender<Input>);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = self.0.try_send(Input::Link { up: false });
    }
}

impl Handler for TerminalLink {
    async fn session(&mut self, conn: &Connection, strikes: &Arc<Strikes>) -> SessionEnd {
        match self.run(conn, strikes).await {
            Ok(end) => end,
            Err(e) => SessionEnd::Lost(e.to_string()),
        }
    }
}

impl TerminalLink {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Input) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.inputs
            .send(make(tx))
            .await
            .map_err(|_| anyhow::anyhow!("the terminal is stopping"))?;
        Ok(rx.await?)
    }

    async fn run(
        &mut self,
        conn: &Connection,
        strikes: &Arc<Strikes>,
    ) -> anyhow::Result<SessionEnd> {
        let peer_chain = Arc::new(transport::peer_chain(conn)?);
        let peer = peer_chain.last().map_or(0, certs::Certificate::serial);
        let (mut send, recv) = conn.open_bi().await?;
        let mut control = FrameStream::new(recv);
        let hello = Hello {
            tier: certs::Tier::Terminal,
            serial: self.serial,
            software: self.software.clone(),
        };
        transport::send(&mut send, &Message::Hello(hello)).await?;
        let (subscribe, inventory) = self.ask(|reply| Input::Subscribe { reply }).await?;
        transport::send(&mut send, &Message::Subscribe(subscribe)).await?;
        // What it holds of the programmes sent ahead: the upstream sends
        // what is missing or newer.
        transport::send(&mut send, &Message::Inventory(inventory)).await?;
        self.inputs.send(Input::Link { up: true }).await?;
        let _down = DownOnDrop(self.inputs.clone());
        // While a broadcast stream is open the upstream has more to send:
        // a link quiet then is probed, and given up if it stays quiet.
        let open = OpenStreams::default();
        let mut watch = liveness::Watch::new(liveness::received(conn), Instant::now());
        let mut ticks = tokio::time::interval(WATCH_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let any_open = open.any();
            tokio::select! {
                stream = conn.accept_uni() => {
                    let frames = FrameStream::new(stream?);
                    let held = open.add();
                    tokio::spawn(receive(frames, self.inputs.clone(), strikes.clone(), peer, held));
                }
                _ = ticks.tick(), if any_open => {
                    let expecting = open.expecting(self.clock.now());
                    match watch.check(liveness::received(conn), expecting, Instant::now()) {
                        liveness::Verdict::Alive => {}
                        liveness::Verdict::Probe => {
                            liveness::probe(conn, transport::clock::system_now_us());
                        }
                        liveness::Verdict::Dead => {
                            return Ok(SessionEnd::Lost(
                                "upstream silent while a broadcast is open".into(),
                            ));
                        }
                    }
                }
                msg = self.up.recv() => match msg {
                    Some(m) => {
                        if matches!(m, Message::Status(_)) {
                            self.clock.probe_along(conn);
                        }
                        transport::send(&mut send, &m).await?
                    }
                    None => return Ok(SessionEnd::Lost("the terminal is stopping".into())),
                },
                frame = control.next() => match frame {
                    Ok(Some(raw)) => {
                        let chain = peer_chain.clone();
                        let verdict = self
                            .ask(|verdict| Input::Control { raw, peer_chain: chain, verdict })
                            .await?;
                        match verdict {
                            ControlVerdict::Done => {}
                            ControlVerdict::Strike => strikes.strike(),
                            ControlVerdict::Hostile(why) => return Ok(SessionEnd::Hostile(why)),
                        }
                    }
                    Ok(None) => {
                        return Ok(SessionEnd::Lost("upstream closed the control stream".into()))
                    }
                    Err(e) => {
                        if let Some(d) = e.framing() {
                            let refusal = Refusal::Malformed(d.clone());
                            let _ = self.inputs.send(Input::Refusal { refusal, offender: peer }).await;
                            return Ok(SessionEnd::Hostile("garbled control stream"));
                        }
                        return Err(e.into());
                    }
                },
                e = conn.closed() => return Ok(SessionEnd::Lost(e.to_string())),
            }
        }
    }
}

/// How often an open broadcast's link is checked for quiet.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Every frame this system encodes is 20 ms (an estimate is enough here).
const FRAME_US: i64 = 20_000;

/// The broadcast streams open on a link: for each, the tree time its
/// audio in hand reaches (`i64::MIN` before its first segment, `i64::MAX`
/// once its last came).
#[derive(Default, Clone)]
struct OpenStreams(Arc<Mutex<HashMap<u64, i64>>>, Arc<AtomicU64>);

impl OpenStreams {
    fn add(&self) -> HeldAudio {
        let key = self.1.fetch_add(1, Ordering::Relaxed);
        lock(&self.0).insert(key, i64::MIN);
        HeldAudio {
            streams: self.clone(),
            key,
        }
    }

    fn any(&self) -> bool {
        !lock(&self.0).is_empty()
    }

    /// A stream's audio runs out soon and more is to come.
    fn expecting(&self, tree_now_us: i64) -> bool {
        lock(&self.0)
            .values()
            .any(|until| *until < tree_now_us + liveness::EXPECT_WITHIN_US)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One open stream's entry, removed when its reader ends.
struct HeldAudio {
    streams: OpenStreams,
    key: u64,
}

impl HeldAudio {
    /// The stream carries a programme sent ahead, not audio to play now:
    /// nothing on it is awaited in time.
    fn ahead(&self) {
        if let Some(held) = lock(&self.streams.0).get_mut(&self.key) {
            *held = i64::MAX;
        }
    }

    /// A segment came (its body unchecked: the core verifies it).
    fn segment(&self, body: &[u8]) {
        if let Ok((_, pts_us, last, frames)) = protocol::Segment::peek(body) {
            let until = if last {
                i64::MAX
            } else {
                pts_us.saturating_add(frames as i64 * FRAME_US)
            };
            if let Some(held) = lock(&self.streams.0).get_mut(&self.key) {
                *held = (*held).max(until);
            }
        }
    }
}

impl Drop for HeldAudio {
    fn drop(&mut self) {
        lock(&self.streams.0).remove(&self.key);
    }
}

/// One broadcast stream: each frame goes to the core, one at a time (a
/// stream never has more than one frame waiting); a stream that keeps
/// failing verification is stopped (`guard::StreamRefusals`).
async fn receive(
    mut frames: FrameStream,
    inputs: mpsc::Sender<Input>,
    strikes: Arc<Strikes>,
    upstream: u64,
    held: HeldAudio,
) {
    let mut refusals = guard::StreamRefusals::default();
    loop {
        let raw = match frames.next().await {
            Ok(Some(raw)) => raw,
            Ok(None) => return,
            Err(e) => {
                if let Some(d) = e.framing() {
                    let refusal = Refusal::Malformed(d.clone());
                    let _ = inputs
                        .send(Input::Refusal {
                            refusal,
                            offender: upstream,
                        })
                        .await;
                    strikes.strike();
                }
                frames.stop();
                return;
            }
        };
        match raw.kind {
            protocol::FrameKind::Segment => held.segment(raw.body()),
            protocol::FrameKind::Programme => held.ahead(),
            _ => {}
        }
        let (tx, rx) = oneshot::channel();
        let input = Input::Broadcast {
            raw,
            upstream,
            refused: tx,
        };
        if inputs.send(input).await.is_err() {
            return;
        }
        let Ok(refused) = rx.await else { return };
        if refused {
            strikes.strike();
        }
        if refusals.note(refused) {
            break;
        }
    }
    frames.stop();
}
