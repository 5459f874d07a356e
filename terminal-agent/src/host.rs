//! What every terminal of one process shares: one playout clock and one
//! store thread. A real terminal runs one terminal per process; the demo
//! runs 600, and they still cost two threads, not 1,200.
//!
//! - The playout clock is a thread that owns every player's sink and hands
//!   each decoded chunk to its sink when it is due (librespot's player
//!   behind a thread, for many players at once). Cores hand audio over
//!   ahead of time through a bounded channel and never wait for a sink; a
//!   sink that stalls holds up only this thread, never verification or the
//!   runtime. The thread visits a player only when something is due or was
//!   handed over, and sleeps while nothing is (visiting 600 idle players
//!   every tick took a fifth of a core).
//! - The store thread writes every terminal's journal to its sled store:
//!   at once what must survive a crash, the rest within 200 ms.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use codec::align::{AlignConfig, Aligner};
use codec::Sink;
use tokio::sync::{mpsc, oneshot};
use transport::clock::TreeClock;

use crate::core::Chunk;
use crate::journal::{Persist, TerminalStore};

/// The playout clock's tick: the longest a handed-over chunk waits to be
/// seen, and how often a sink on its own clock is topped up.
const TICK: Duration = Duration::from_millis(5);
/// How often every player is visited anyway (to let go of those whose
/// terminal is gone).
const SWEEP: Duration = Duration::from_secs(1);
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
    /// Set when something was handed over and the clock thread not yet
    /// told (so a burst of chunks tells it once).
    mail: AtomicBool,
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

/// What the playout clock's thread is told.
enum Wake {
    New(u64, Box<Player>),
    /// Player `id` has mail.
    Mail(u64),
}

/// Tells the clock thread that a player has mail.
#[derive(Clone)]
struct Nudge {
    id: u64,
    shared: Arc<PlayerShared>,
    wake: std_mpsc::Sender<Wake>,
}

impl Nudge {
    fn nudge(&self) {
        if !self.shared.mail.swap(true, Ordering::SeqCst) {
            let _ = self.wake.send(Wake::Mail(self.id));
        }
    }
}

/// A terminal's handle on its player (on the playout clock's thread).
pub struct PlayerHandle {
    tx: mpsc::Sender<PlayerMsg>,
    shared: Arc<PlayerShared>,
    nudge: Nudge,
}

impl Drop for PlayerHandle {
    /// The thread lets the player go on its next visit (or sweep).
    fn drop(&mut self) {
        self.nudge.nudge();
    }
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
                self.nudge.nudge();
                Offer::Sent
            }
            None => Offer::Empty,
        }
    }

    pub fn flush(&self, gen: u64) {
        // A flush must not be lost behind a full queue of chunks it would
        // drop anyway: it waits for room on the clock thread's side.
        let tx = self.tx.clone();
        match tx.try_send(PlayerMsg::Flush(gen)) {
            Err(mpsc::error::TrySendError::Full(m)) => {
                let nudge = self.nudge.clone();
                tokio::spawn(async move {
                    let _ = tx.send(m).await;
                    nudge.nudge();
                });
            }
            _ => self.nudge.nudge(),
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
            self.nudge.nudge();
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
        // Cleared before the queue is read, so mail that comes after the
        // read is told again.
        self.shared.mail.store(false, Ordering::SeqCst);
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
    players: std_mpsc::Sender<Wake>,
    next_player: AtomicU64,
    visits: Arc<AtomicU64>,
    stores: std_mpsc::Sender<StoreMsg>,
}

impl Host {
    pub fn new() -> std::io::Result<Self> {
        let (players, new_players) = std_mpsc::channel();
        let (stores, store_rx) = std_mpsc::channel();
        let visits = Arc::new(AtomicU64::new(0));
        let counted = visits.clone();
        std::thread::Builder::new()
            .name("playout".into())
            .spawn(move || playout_clock(new_players, &counted))?;
        std::thread::Builder::new()
            .name("terminal-store".into())
            .spawn(move || store_thread(store_rx))?;
        Ok(Host {
            players,
            next_player: AtomicU64::new(0),
            visits,
            stores,
        })
    }

    /// Visits the playout clock made to players so far (what its work
    /// grows with).
    pub fn player_visits(&self) -> u64 {
        self.visits.load(Ordering::Relaxed)
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
        let id = self.next_player.fetch_add(1, Ordering::Relaxed);
        // If the clock thread is gone the player is dropped with its sink;
        // the terminal sees its chunks refused.
        let _ = self.players.send(Wake::New(id, Box::new(player)));
        let nudge = Nudge {
            id,
            shared: shared.clone(),
            wake: self.players.clone(),
        };
        PlayerHandle { tx, shared, nudge }
    }

    /// A handle on the store thread for `store`.
    pub fn store(&self, store: TerminalStore) -> StoreHandle {
        StoreHandle {
            store: Arc::new(store),
            tx: self.stores.clone(),
        }
    }
}

/// The playout clock's thread: visits a player when it has mail, when its
/// next chunk is due, and once a `SWEEP`; sleeps while nothing is.
fn playout_clock(wake: std_mpsc::Receiver<Wake>, visits: &AtomicU64) {
    let mut clock = PlayoutClock {
        players: HashMap::new(),
        due: BinaryHeap::new(),
        next_visit: HashMap::new(),
        visits,
    };
    let mut next_sweep = Instant::now() + SWEEP;
    let mut mail: Vec<u64> = Vec::new();
    // Every handle and the host are gone: what is left is closed cleanly
    // (a WAV file gets its header).
    let mut gone = false;
    while !gone {
        let now = Instant::now();
        // Block while no visit is due (every player with a chunk queued or
        // a sink on its own clock has one); otherwise nap to the next due
        // visit, at most a tick, and read the mail then.
        let mut next = match clock.next_due() {
            None => match wake.recv_timeout(next_sweep.saturating_duration_since(now)) {
                Ok(w) => Ok(w),
                Err(std_mpsc::RecvTimeoutError::Timeout) => Err(std_mpsc::TryRecvError::Empty),
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    Err(std_mpsc::TryRecvError::Disconnected)
                }
            },
            Some(at) => {
                std::thread::sleep(at.min(now + TICK).saturating_duration_since(now));
                wake.try_recv()
            }
        };
        loop {
            match next {
                Ok(Wake::New(id, p)) => {
                    clock.players.insert(id, *p);
                    mail.push(id);
                }
                Ok(Wake::Mail(id)) => mail.push(id),
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => {
                    gone = true;
                    break;
                }
            }
            next = wake.try_recv();
        }
        mail.sort_unstable();
        mail.dedup();
        for id in mail.drain(..) {
            clock.visit(id);
        }
        let now = Instant::now();
        clock.visit_due(now);
        if now >= next_sweep {
            clock.sweep();
            next_sweep = now + SWEEP;
        }
    }
    for p in clock.players.values_mut() {
        p.close();
    }
}

/// The players and when each is next visited.
struct PlayoutClock<'a> {
    players: HashMap<u64, Player>,
    /// (when, player); stale entries (the player was visited sooner and
    /// rescheduled) are skipped.
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    next_visit: HashMap<u64, Instant>,
    visits: &'a AtomicU64,
}

impl PlayoutClock<'_> {
    fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the player's mail, writes what is due, and schedules its next
    /// visit; lets it go once its terminal has.
    fn visit(&mut self, id: u64) {
        let Some(p) = self.players.get_mut(&id) else {
            return;
        };
        self.visits.fetch_add(1, Ordering::Relaxed);
        if !p.receive() {
            self.players.remove(&id);
            self.next_visit.remove(&id);
            return;
        }
        let due_in = p.play().map(|us| Duration::from_micros(us.max(0) as u64));
        // A sink on its own clock is topped up every tick.
        let due_in = if p.aligner.is_some() {
            Some(due_in.map_or(TICK, |d| d.min(TICK)))
        } else {
            due_in
        };
        match due_in {
            Some(d) => {
                let at = Instant::now() + d;
                self.next_visit.insert(id, at);
                self.due.push(Reverse((at, id)));
            }
            None => {
                self.next_visit.remove(&id);
            }
        }
    }

    fn visit_due(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            if self.next_visit.get(&id) == Some(&at) {
                self.visit(id);
            }
        }
    }

    fn sweep(&mut self) {
        let ids: Vec<u64> = self.players.keys().copied().collect();
        for id in ids {
            self.visit(id);
        }
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
        // Nothing unflushed: sleep until there is (an idle terminal wakes
        // for nothing).
        let msg = if dirty.is_empty() {
            rx.recv()
                .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(STORE_FLUSH.saturating_sub(last_flush.elapsed()))
        };
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
                    if dirty.is_empty() {
                        // Written behind: within STORE_FLUSH from now.
                        last_flush = Instant::now();
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What a recorder saw: (play time, written at) per chunk, and whether
    /// it was stopped.
    type Seen = (Vec<(i64, i64)>, bool);

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Seen>>);

    impl Sink for Recorder {
        fn describe(&self) -> String {
            "recorder".into()
        }
        fn sample_rate(&self) -> u32 {
            16_000
        }
        fn write(&mut self, _: &[f32]) -> Result<(), codec::SinkError> {
            Ok(())
        }
        fn write_at(&mut self, play_at_us: i64, _: &[f32]) -> Result<(), codec::SinkError> {
            let written = transport::clock::system_now_us();
            self.0.lock().unwrap().0.push((play_at_us, written));
            Ok(())
        }
        fn stop(&mut self) -> Result<(), codec::SinkError> {
            self.0.lock().unwrap().1 = true;
            Ok(())
        }
    }

    fn chunk(play_at_us: i64) -> Chunk {
        Chunk {
            gen: 0,
            play_at_us,
            broadcast: "43601210000000101010000202612020001".parse().unwrap(),
            pcm: vec![0.0; 320],
            made: crate::core::Made::Decoded,
        }
    }

    fn wait_for(what: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn idle_players_are_not_visited_every_tick() {
        let host = Host::new().unwrap();
        let clock = TreeClock::root();
        let _players: Vec<PlayerHandle> = (0..50)
            .map(|_| host.player(Box::new(codec::NullSink::new(16_000)), clock.clone()))
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let before = host.player_visits();
        std::thread::sleep(Duration::from_millis(400));
        // At most one sweep of the 50 (a tick of 5 ms visiting them all
        // made 4,000).
        let visits = host.player_visits() - before;
        assert!(visits <= 50, "{visits} visits to 50 idle players in 400 ms");
    }

    #[test]
    fn a_chunk_handed_to_an_idle_player_plays_at_its_time() {
        let host = Host::new().unwrap();
        let clock = TreeClock::root();
        let sink = Recorder::default();
        let player = host.player(Box::new(sink.clone()), clock.clone());
        // The thread has nothing due and sleeps.
        std::thread::sleep(Duration::from_millis(100));
        let play_at = clock.now() + 50_000;
        assert_eq!(player.offer(|| Some(chunk(play_at))), Offer::Sent);
        assert!(
            wait_for(|| !sink.0.lock().unwrap().0.is_empty()),
            "never played"
        );
        let (at, written) = sink.0.lock().unwrap().0[0];
        assert_eq!(at, play_at);
        assert!(written >= play_at, "written {} µs early", play_at - written);
    }

    #[test]
    fn a_player_whose_terminal_let_go_is_closed() {
        let host = Host::new().unwrap();
        let sink = Recorder::default();
        let player = host.player(Box::new(sink.clone()), TreeClock::root());
        std::thread::sleep(Duration::from_millis(50));
        drop(player);
        assert!(
            wait_for(|| sink.0.lock().unwrap().1),
            "the sink was never stopped"
        );
    }

    #[test]
    fn dropping_the_host_then_its_players_closes_their_sinks() {
        let host = Host::new().unwrap();
        let sinks: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
        let players: Vec<PlayerHandle> = sinks
            .iter()
            .map(|s| host.player(Box::new(s.clone()), TreeClock::root()))
            .collect();
        drop(host);
        drop(players);
        for s in &sinks {
            assert!(
                wait_for(|| s.0.lock().unwrap().1),
                "a sink was never stopped"
            );
        }
    }
}
