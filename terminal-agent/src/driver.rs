//! The one task that owns a terminal's core: it hands the core what the
//! link delivers and the time, carries out what the core asks (messages up,
//! audio to the player, changes to the store) and sleeps until the core's
//! next timeout. Nothing else touches the core, so nothing locks it.

use std::sync::Arc;
use std::time::Duration;

use certs::Certificate;
use protocol::{Inventory, Message, RawFrame, Refusal, Subscribe};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use transport::clock::TreeClock;

use crate::core::{ControlVerdict, CoreSnapshot, Output, TerminalCore};
use crate::host::{Offer, PlayerHandle, StoreHandle};

/// What the rest of the terminal tells the core.
pub(crate) enum Input {
    /// A frame from a broadcast stream; the answer says if it was refused.
    Broadcast {
        raw: RawFrame,
        upstream: u64,
        refused: oneshot::Sender<bool>,
    },
    /// A frame from the control stream of the upstream with `peer_chain`.
    Control {
        raw: RawFrame,
        peer_chain: Arc<Vec<Certificate>>,
        verdict: oneshot::Sender<ControlVerdict>,
    },
    /// A refusal made elsewhere (TLS handshake, garbled stream).
    Refusal {
        refusal: Refusal,
        offender: u64,
    },
    Link {
        up: bool,
    },
    /// What to ask a new upstream for, and what programmes are held.
    Subscribe {
        reply: oneshot::Sender<(Subscribe, Inventory)>,
    },
}

/// Inputs handled before the core's timers and outputs get a turn.
const INPUT_BATCH: usize = 32;
/// Snapshots are published at most this often while things change.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(50);
/// How soon to offer audio again to a player that had no room.
const PLAYER_RETRY: Duration = Duration::from_millis(20);

pub(crate) struct Driver {
    pub core: TerminalCore,
    pub inputs: mpsc::Receiver<Input>,
    pub player: PlayerHandle,
    pub store: StoreHandle,
    pub up: mpsc::Sender<Message>,
    pub snapshot: watch::Sender<Arc<CoreSnapshot>>,
    /// The player's fault epoch last told to the core.
    pub fault_epoch: u64,
    /// The tree's time: everything the core is told happens on it.
    pub clock: Arc<TreeClock>,
}

fn instant_at(clock: &TreeClock, tree_us: i64) -> Instant {
    let delta = tree_us - clock.now();
    let now = Instant::now();
    if delta <= 0 {
        now
    } else {
        now + Duration::from_micros(delta as u64)
    }
}

impl Driver {
    /// Runs until every sender of inputs is gone (the link ended) or
    /// `shutdown` resolves; then hands the store its last changes and
    /// closes the sink.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last_snapshot = Instant::now() - SNAPSHOT_EVERY;
        let mut snapshot_due: Option<Instant> = None;
        let mut player_retry: Option<Instant> = None;
        loop {
            self.core.handle_clock(self.clock.estimate());
            let mut wake = self.core.poll_timeout().map(|t| instant_at(&self.clock, t));
            for t in [snapshot_due, player_retry].into_iter().flatten() {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = sleep => self.core.handle_timeout(self.clock.now()),
                input = self.inputs.recv() => {
                    let Some(input) = input else { break };
                    self.handle(input);
                    for _ in 1..INPUT_BATCH {
                        match self.inputs.try_recv() {
                            Ok(i) => self.handle(i),
                            Err(_) => break,
                        }
                    }
                    // Timers that fell due while inputs were handled.
                    let now = self.clock.now();
                    if self.core.poll_timeout().is_some_and(|t| t <= now) {
                        self.core.handle_timeout(now);
                    }
                }
            }
            self.carry_out();
            player_retry = self.feed_player().then(|| Instant::now() + PLAYER_RETRY);
            let now = Instant::now();
            if now >= last_snapshot + SNAPSHOT_EVERY {
                self.publish();
                last_snapshot = now;
                snapshot_due = None;
            } else {
                snapshot_due = Some(last_snapshot + SNAPSHOT_EVERY);
            }
        }
        self.carry_out();
        self.publish();
        self.store.sync().await;
        self.player.stop().await;
    }

    fn handle(&mut self, input: Input) {
        let now = self.clock.now();
        match input {
            Input::Broadcast {
                raw,
                upstream,
                refused,
            } => {
                let r = self.core.handle_broadcast_frame(&raw, upstream, now);
                let _ = refused.send(r);
            }
            Input::Control {
                raw,
                peer_chain,
                verdict,
            } => {
                let v = self.core.handle_control_frame(&raw, &peer_chain, now);
                let _ = verdict.send(v);
            }
            Input::Refusal { refusal, offender } => {
                self.core.handle_refusal(&refusal, offender, now)
            }
            Input::Link { up } => self.core.handle_link(up, now),
            Input::Subscribe { reply } => {
                let _ = reply.send((self.core.subscribe(now), self.core.inventory()));
            }
        }
    }

    /// Messages up, store changes, flushes and gain.
    fn carry_out(&mut self) {
        let mut changes = Vec::new();
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Up(m) => {
                    if self.up.try_send(*m).is_err() {
                        tracing::warn!("queue to the upstream is full: a report was dropped");
                    }
                }
                Output::Persist(p) => changes.push(p),
                Output::Flush { gen } => self.player.flush(gen),
                Output::Gain(g) => self.player.set_gain(g),
            }
        }
        self.store.write(changes);
        let epoch = self.player.fault_epoch();
        if epoch != self.fault_epoch {
            self.fault_epoch = epoch;
            self.core.handle_sink_fault(self.player.fault());
        }
    }

    /// Hands the player what it has room for; true when audio is left over.
    fn feed_player(&mut self) -> bool {
        let now = self.clock.now();
        loop {
            match self.player.offer(|| self.core.poll_chunk(now)) {
                Offer::Sent => {}
                Offer::Empty => return false,
                Offer::NoRoom => return true,
            }
        }
    }

    fn publish(&self) {
        self.snapshot.send_replace(Arc::new(self.core.snapshot()));
    }
}
