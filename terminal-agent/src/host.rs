//! What every terminal of one process shares: one playout clock and one
//! store thread. A real terminal runs one terminal per process; the demo
//! runs 600, and they still cost two threads, not 1,200.
//!
//! - The playout clock is a thread that owns every player's sink and hands
//!   each decoded chunk to its sink when it is due (librespot's player
//!   behind a thread, for many players at once). Cores hand audio over
//!   ahead of time through a bounded channel and never wait for a sink; a
//!   sink that stalls holds up only this thread, never verification or the
//!   runtime.
//! - The store thread writes every terminal's journal to its sled store:
//!   at once what must survive a crash, the rest within 200 ms.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use codec::align::{AlignConfig, Aligner};
use codec::Sink;
use tokio::sync::{mpsc, oneshot};
use transport::clock::TreeClock;

use crate::core::Chunk;
use crate::journal::{Persist, TerminalStore};

/// The playout clock's tick: the longest a due chunk waits for its sink.
const TICK: Duration = Duration::from_millis(5);
/// A sink on its own clock is kept this far ahead (ticks may come late on a
/// busy machine).
const SINK_LEAD_US: i64 = 40_000;
/// Chunks (20 ms each) a player may hold ahead: more than the core's
/// decode look-ahead.
const PLAYER_QUEUE: usize = 64;
/// What need not be on disk at once (forgetting ended records) reaches it within this.
const STORE_FLUSH: Duration = Duration::from_millis(200);

enum PlayerMsg {
    Chunk(Chunk),
    /// Drop queued chunks of generations below this.
    Flush(u64),
    /// Close the sink cleanly (a WAV file gets its header) and leave.
    Stop(oneshot::Sender<()>),
}

/// What a player shares with its terminal without a lock on the audio path.
#[derive(Default)]
struct PlayerShared {
    /// f32 bits.
    gain: AtomicU32,
    samples: AtomicU64,
    /// Bumped whenever the sink starts or stops failing.
    fault_epoch: AtomicU64,
    fault: Mutex<Option<String>>,
}

/// What became of an offer of audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Sent,
    /// Nothing to hand over.
    Empty,
    /// The player is full (its sink is slow or stalled).
    NoRoom,
}

/// A terminal's handle on its player (on the playout clock's thread).
pub struct PlayerHandle {
    tx: mpsc::Sender<PlayerMsg>,
    shared: Arc<PlayerShared>,
}

impl PlayerHandle {
    /// Hands over the chunk `next` makes, if the player has room for it
    /// (`next` is not called otherwise, so nothing is taken and lost).
    pub fn offer(&self, next: impl FnOnce() -> Option<Chunk>) -> Offer {
        let Ok(permit) = self.tx.try_reserve() else {
            return Offer::NoRoom;
        };
        match next() {
            Some(c) => {
                permit.send(PlayerMsg::Chunk(c));
                Offer::Sent
            }
            None => Offer::Empty,
        }
    }

    pub fn flush(&self, gen: u64) {
        // A flush must not be lost behind a full queue of chunks it would
        // drop anyway: it waits for room on the clock thread's side.
        let tx = self.tx.clone();
        if let Err(mpsc::error::TrySendError::Full(m)) = tx.try_send(PlayerMsg::Flush(gen)) {
            tokio::spawn(async move {
                let _ = tx.send(m).await;
            });
        }
    }

    pub fn set_gain(&self, gain: f32) {
        self.shared.gain.store(gain.to_bits(), Ordering::Relaxed);
    }

    /// Reads how much the sink has played, from anywhere.
    pub fn meter(&self) -> PlayerMeter {
        PlayerMeter(self.shared.clone())
    }

    /// Changes whenever the sink starts or stops failing.
    pub fn fault_epoch(&self) -> u64 {
        self.shared.fault_epoch.load(Ordering::Acquire)
    }

    /// The sink's last failure, if it is failing.
    pub fn fault(&self) -> Option<String> {
        self.shared
            .fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Closes the sink cleanly and waits until it is closed.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(PlayerMsg::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// How much a player's sink has played.
#[derive(Clone)]
pub struct PlayerMeter(Arc<PlayerShared>);

impl PlayerMeter {
    /// Samples written to the sink so far.
    pub fn samples_played(&self) -> u64 {
        self.0.samples.load(Ordering::Relaxed)
    }
}

struct Player {
    rx: mpsc::Receiver<PlayerMsg>,
    sink: Box<dyn Sink>,
    /// The terminal's tree time (chunks are due on it).
    clock: Arc<TreeClock>,
    /// For a sink on its own clock (a sound card): the stream in step.
    aligner: Option<Aligner>,
    queue: VecDeque<Chunk>,
    flushed_below: u64,
    shared: Arc<PlayerShared>,
    scratch: Vec<f32>,
    failing: bool,
}

impl Player {
    /// Records a change of the sink's health (only changes take the lock).
    fn set_fault(&mut self, fault: Option<String>) {
        self.failing = fault.is_some();
        *self.shared.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
        self.shared.fault_epoch.fetch_add(1, Ordering::Release);
    }

    /// Takes what arrived; false once the terminal let go of it.
    fn receive(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(PlayerMsg::Chunk(c)) => {
                    if c.gen >= self.flushed_below {
                        match self.aligner.as_mut() {
                            Some(a) => a.push(c.gen, c.play_at_us, c.pcm),
                            None => self.queue.push_back(c),
                        }
                    }
                }
                Ok(PlayerMsg::Flush(gen)) => {
                    self.flushed_below = self.flushed_below.max(gen);
                    self.queue.retain(|c| c.gen >= gen);
                    if let Some(a) = self.aligner.as_mut() {
                        a.retain_from(gen);
                    }
                }
                Ok(PlayerMsg::Stop(done)) => {
                    self.close();
                    let _ = done.send(());
                    return false;
                }
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.close();
                    return false;
                }
            }
        }
    }

    /// Writes what is due: every chunk due by now, or, for a sink on its
    /// own clock, the stream up to a little ahead. Returns how soon it next
    /// has something to do (µs), from the same reading of the clock (this
    /// runs per player per tick).
    fn play(&mut self) -> Option<i64> {
        if self.aligner.is_some() {
            return self.play_aligned();
        }
        let now_us = self.clock.now();
        while self.queue.front().is_some_and(|c| c.play_at_us <= now_us) {
            let Some(c) = self.queue.pop_front() else {
                break;
            };
            let gain = f32::from_bits(self.shared.gain.load(Ordering::Relaxed));
            let pcm: &[f32] = if gain == 1.0 {
                &c.pcm
            } else {
                self.scratch.clear();
                self.scratch.extend(c.pcm.iter().map(|s| s * gain));
                &self.scratch
            };
            let written = pcm.len() as u64;
            let result = self.sink.write_at(c.play_at_us, pcm);
            self.wrote(result, written);
        }
        self.queue.front().map(|c| c.play_at_us - now_us)
    }

    /// The stream in step: the sink says how soon a sample written now is
    /// heard, the aligner writes what belongs there.
    fn play_aligned(&mut self) -> Option<i64> {
        let delay = self.sink.delay_us()?;
        // One read of the estimate for both times (this runs per player
        // per tick).
        let estimate = self.clock.estimate();
        let local = self.clock.local_now();
        let heard = local + delay;
        let heard_at = heard + estimate.offset_at(heard);
        let until = local + estimate.offset_at(local) + SINK_LEAD_US;
        self.scratch.clear();
        let a = self.aligner.as_mut()?;
        a.fill(heard_at, until, &mut self.scratch);
        // Streaming: the sink is kept `SINK_LEAD_US` ahead.
        let due_in = a.next_due().map(|t| t - until);
        if !self.scratch.is_empty() {
            let gain = f32::from_bits(self.shared.gain.load(Ordering::Relaxed));
            if gain != 1.0 {
                self.scratch.iter_mut().for_each(|s| *s *= gain);
            }
            let written = self.scratch.len() as u64;
            let result = self.sink.write(&self.scratch);
            self.wrote(result, written);
        }
        due_in
    }

    /// Counts what the sink took, and notes when it starts or stops failing.
    fn wrote(&mut self, result: Result<(), codec::SinkError>, samples: u64) {
        match result {
            Ok(()) => {
                self.shared.samples.fetch_add(samples, Ordering::Relaxed);
                if self.failing {
                    self.set_fault(None);
                }
            }
            Err(e) => {
                if !self.failing {
                    self.set_fault(Some(e.to_string()));
                }
            }
        }
    }

    fn close(&mut self) {
        self.queue.clear();
        if let Err(e) = self.sink.stop() {
            tracing::warn!("closing the sink: {e}");
        }
    }
}

enum StoreMsg {
    Write(Arc<TerminalStore>, Vec<Persist>),
    /// Flush this store and answer (before it is closed or reopened).
    Sync(Arc<TerminalStore>, oneshot::Sender<()>),
}

/// A terminal's handle on the store thread.
#[derive(Clone)]
pub struct StoreHandle {
    store: Arc<TerminalStore>,
    tx: std_mpsc::Sender<StoreMsg>,
}

impl StoreHandle {
    /// Queues changes; never blocks.
    pub fn write(&self, changes: Vec<Persist>) {
        if !changes.is_empty() {
            let _ = self.tx.send(StoreMsg::Write(self.store.clone(), changes));
        }
    }

    /// Waits until everything queued so far is on disk.
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(StoreMsg::Sync(self.store.clone(), tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// The threads the terminals of this process share. Dropping it lets them
/// end once every terminal has let go (they are not joined: a stalled sink
/// must not hang whoever drops the host).
pub struct Host {
    players: std_mpsc::Sender<Player>,
    stores: std_mpsc::Sender<StoreMsg>,
}

impl Host {
    pub fn new() -> std::io::Result<Self> {
        let (players, new_players) = std_mpsc::channel();
        let (stores, store_rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("playout".into())
            .spawn(move || playout_clock(new_players))?;
        std::thread::Builder::new()
            .name("terminal-store".into())
            .spawn(move || store_thread(store_rx))?;
        Ok(Host { players, stores })
    }

    /// A player for `sink`, driven by this host's playout clock, playing
    /// on `clock` (the terminal's tree time).
    pub fn player(&self, sink: Box<dyn Sink>, clock: Arc<TreeClock>) -> PlayerHandle {
        let (tx, rx) = mpsc::channel(PLAYER_QUEUE);
        let shared = Arc::new(PlayerShared::default());
        shared.gain.store(1.0f32.to_bits(), Ordering::Relaxed);
        let aligner = sink
            .delay_us()
            .map(|_| Aligner::new(sink.sample_rate(), AlignConfig::default()));
        let player = Player {
            rx,
            sink,
            clock,
            aligner,
            queue: VecDeque::new(),
            flushed_below: 0,
            shared: shared.clone(),
            scratch: Vec::new(),
            failing: false,
        };
        // If the clock thread is gone the player is dropped with its sink;
        // the terminal sees its chunks refused.
        let _ = self.players.send(player);
        PlayerHandle { tx, shared }
    }

    /// A handle on the store thread for `store`.
    pub fn store(&self, store: TerminalStore) -> StoreHandle {
        StoreHandle {
            store: Arc::new(store),
            tx: self.stores.clone(),
        }
    }
}

fn playout_clock(new_players: std_mpsc::Receiver<Player>) {
    let mut players: Vec<Player> = Vec::new();
    let mut accepting = true;
    loop {
        while accepting {
            match new_players.try_recv() {
                Ok(p) => players.push(p),
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => accepting = false,
            }
        }
        if !accepting && players.is_empty() {
            return;
        }
        // Sleep to the next due chunk or the next tick, whichever is first.
        let mut next: Option<i64> = None;
        players.retain_mut(|p| {
            let alive = p.receive();
            if alive {
                if let Some(due_in) = p.play() {
                    next = Some(next.map_or(due_in, |n| n.min(due_in)));
                }
            }
            alive
        });
        let until_due = next.map(|t| Duration::from_micros(t.max(0) as u64));
        std::thread::sleep(until_due.map_or(TICK, |d| d.min(TICK)));
    }
}

fn store_thread(rx: std_mpsc::Receiver<StoreMsg>) {
    // Stores with changes not yet flushed, by address.
    let mut dirty: HashMap<usize, Arc<TerminalStore>> = HashMap::new();
    let mut last_flush = Instant::now();
    let flush = |s: &TerminalStore| {
        if let Err(e) = s.flush() {
            tracing::error!("terminal store: flush failed: {e}");
        }
    };
    loop {
        let msg = rx.recv_timeout(STORE_FLUSH);
        match msg {
            Ok(StoreMsg::Write(store, changes)) => {
                let mut urgent = false;
                for p in &changes {
                    urgent |= p.urgent;
                    if let Err(e) = store.apply(&p.op) {
                        tracing::error!("terminal store: write failed: {e}");
                    }
                }
                let key = Arc::as_ptr(&store) as usize;
                if urgent {
                    flush(&store);
                    dirty.remove(&key);
                } else {
                    dirty.insert(key, store);
                }
            }
            Ok(StoreMsg::Sync(store, done)) => {
                flush(&store);
                dirty.remove(&(Arc::as_ptr(&store) as usize));
                // Let go before answering: the caller may close the store
                // and open it again at once (sled locks it while open).
                drop(store);
                let _ = done.send(());
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                for s in dirty.values() {
                    flush(s);
                }
                return;
            }
        }
        if last_flush.elapsed() >= STORE_FLUSH {
            for (_, s) in dirty.drain() {
                flush(&s);
            }
            last_flush = Instant::now();
        }
    }
}
