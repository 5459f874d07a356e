//! A seeded UDP impairment proxy (netem is not available here: see
//! decisions.md). It sits between a terminal and each of its upstreams and
//! impairs both directions: random loss, Gilbert–Elliott bursts, delay and
//! jitter (which reorders), explicit reordering, duplication, outages on
//! command, and a change of source port (a 4G NAT rebinding). The same seed
//! gives the same decisions for the same packet sequence.
//!
//! ```text
//! terminal ──► proxy.addr() ──► upstream        (one socket per direction
//!          ◄──               ◄──                 and per client address)
//! ```

use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How one direction of the path misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Independent random loss, 0..=1.
    pub loss: f64,
    /// Gilbert–Elliott bursts: chance per packet of entering the bad state,
    /// of leaving it, and the loss while in it (0 disables).
    pub burst_enter: f64,
    pub burst_leave: f64,
    pub burst_loss: f64,
    /// One-way delay, and a uniform jitter added to it (0..jitter).
    pub delay: Duration,
    pub jitter: Duration,
    /// Chance a packet is held back an extra `reorder_by`.
    pub reorder: f64,
    pub reorder_by: Duration,
    /// Chance a packet is sent twice.
    pub duplicate: f64,
}

impl Impairment {
    pub const NONE: Impairment = Impairment {
        loss: 0.0,
        burst_enter: 0.0,
        burst_leave: 1.0,
        burst_loss: 0.0,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        reorder: 0.0,
        reorder_by: Duration::ZERO,
        duplicate: 0.0,
    };

    /// A 4G link on a bad day: `rtt` split over both directions with a
    /// fifth of it as jitter, `loss` random loss.
    pub fn cellular(rtt: Duration, loss: f64) -> Impairment {
        Impairment {
            loss,
            delay: rtt / 2,
            jitter: rtt / 10,
            ..Impairment::NONE
        }
    }
}

/// Counts of what the proxy did, both directions together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub forwarded: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub rebinds: u64,
}

struct Shared {
    up: Mutex<Impairment>,
    down: Mutex<Impairment>,
    /// Everything is dropped while set.
    outage: AtomicBool,
    /// Bumped by `rebind`: clients get a fresh upstream-facing socket.
    port_epoch: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    rebinds: AtomicU64,
    stop: Notify,
}

/// A running proxy in front of one upstream; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a loopback port and forwards to `upstream`, impairing
    /// the way up (client → upstream) and down with the same `seed`.
    pub async fn start(
        upstream: SocketAddr,
        up: Impairment,
        down: Impairment,
        seed: u64,
    ) -> std::io::Result<Proxy> {
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = listen.local_addr()?;
        let shared = Arc::new(Shared {
            up: Mutex::new(up),
            down: Mutex::new(down),
            outage: AtomicBool::new(false),
            port_epoch: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            rebinds: AtomicU64::new(0),
            stop: Notify::new(),
        });
        let task = tokio::spawn(run(listen, upstream, shared.clone(), seed));
        Ok(Proxy { addr, shared, task })
    }

    /// Where the client sends (instead of the upstream).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, up: Impairment, down: Impairment) {
        *self.shared.up.lock().unwrap_or_else(|p| p.into_inner()) = up;
        *self.shared.down.lock().unwrap_or_else(|p| p.into_inner()) = down;
    }

    /// Drops everything in both directions until `restore`.
    pub fn cut(&self) {
        self.shared.outage.store(true, Ordering::Release);
    }

    pub fn restore(&self) {
        self.shared.outage.store(false, Ordering::Release);
    }

    /// An outage of `length`, from now.
    pub async fn outage(&self, length: Duration) {
        self.cut();
        tokio::time::sleep(length).await;
        self.restore();
    }

    /// The upstream sees the client's packets from a new source port from
    /// now on (the client's address does not change).
    pub fn rebind(&self) {
        self.shared.port_epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            forwarded: s.forwarded.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            duplicated: s.duplicated.load(Ordering::Relaxed),
            rebinds: s.rebinds.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.notify_waiters();
        self.task.abort();
    }
}

/// A packet waiting for its send time.
struct Pending {
    at: Instant,
    order: u64,
    to: SocketAddr,
    /// None: from the client, goes up through the client's socket.
    via: Option<Arc<UdpSocket>>,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    // A min-heap on (time, arrival order).
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.order).cmp(&(self.at, self.order))
    }
}

/// One direction's random state: its own stream from the seed.
struct Direction {
    rng: ChaCha8Rng,
    bad: bool,
}

impl Direction {
    fn new(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Direction { rng, bad: false }
    }

    /// The send times of one packet: none (lost), one, or two (duplicated).
    fn fate(&mut self, imp: &Impairment, now: Instant) -> Vec<Instant> {
        if imp.burst_loss > 0.0 {
            let flip = if self.bad {
                imp.burst_leave
            } else {
                imp.burst_enter
            };
            if self.rng.gen_bool(flip.clamp(0.0, 1.0)) {
                self.bad = !self.bad;
            }
        }
        let lost = self.rng.gen_bool(imp.loss.clamp(0.0, 1.0))
            || (self.bad && self.rng.gen_bool(imp.burst_loss.clamp(0.0, 1.0)));
        if lost {
            return Vec::new();
        }
        let copies = if self.rng.gen_bool(imp.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let mut d = imp.delay;
                if !imp.jitter.is_zero() {
                    d += imp.jitter.mul_f64(self.rng.gen_range(0.0..1.0));
                }
                if self.rng.gen_bool(imp.reorder.clamp(0.0, 1.0)) {
                    d += imp.reorder_by;
                }
                now + d
            })
            .collect()
    }
}

/// A client's upstream-facing socket and the epoch it was made in.
struct ClientSide {
    socket: Arc<UdpSocket>,
    epoch: u64,
}

async fn run(listen: Arc<UdpSocket>, upstream: SocketAddr, shared: Arc<Shared>, seed: u64) {
    let mut up_dir = Direction::new(seed, 1);
    let mut down_dir = Direction::new(seed, 2);
    let mut clients: HashMap<SocketAddr, ClientSide> = HashMap::new();
    let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
    let mut order = 0u64;
    // Packets coming back from the upstream, tagged with the client.
    let (back_tx, mut back_rx) = tokio::sync::mpsc::unbounded_channel::<(SocketAddr, Vec<u8>)>();
    let mut readers = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let next_at = heap.peek().map(|p| p.at);
        tokio::select! {
            r = listen.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let epoch = shared.port_epoch.load(Ordering::Acquire);
                let stale = clients.get(&from).is_none_or(|c| c.epoch != epoch);
                if stale {
                    let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else { continue };
                    let socket = Arc::new(socket);
                    if clients.contains_key(&from) {
                        shared.rebinds.fetch_add(1, Ordering::Relaxed);
                    }
                    let reader = socket.clone();
                    let tx = back_tx.clone();
                    readers.spawn(async move {
                        let mut b = vec![0u8; 65_536];
                        while let Ok((n, _)) = reader.recv_from(&mut b).await {
                            if tx.send((from, b[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                    });
                    clients.insert(from, ClientSide { socket, epoch });
                }
                let imp = *shared.up.lock().unwrap_or_else(|p| p.into_inner());
                let via = clients.get(&from).map(|c| c.socket.clone());
                schedule(&shared, &mut up_dir, &imp, &mut heap, &mut order, upstream, via, &buf[..n]);
            }
            Some((client, bytes)) = back_rx.recv() => {
                let imp = *shared.down.lock().unwrap_or_else(|p| p.into_inner());
                schedule(&shared, &mut down_dir, &imp, &mut heap, &mut order, client, None, &bytes);
            }
            _ = async { tokio::time::sleep_until(next_at.unwrap_or_else(Instant::now)).await }, if next_at.is_some() => {
                let now = Instant::now();
                while heap.peek().is_some_and(|p| p.at <= now) {
                    let Some(p) = heap.pop() else { break };
                    let sock = p.via.as_deref().unwrap_or(&listen);
                    let _ = sock.send_to(&p.bytes, p.to).await;
                }
            }
            _ = shared.stop.notified() => break,
        }
    }
    readers.abort_all();
}

#[allow(clippy::too_many_arguments)]
fn schedule(
    shared: &Shared,
    dir: &mut Direction,
    imp: &Impairment,
    heap: &mut BinaryHeap<Pending>,
    order: &mut u64,
    to: SocketAddr,
    via: Option<Arc<UdpSocket>>,
    bytes: &[u8],
) {
    // The random decision is drawn even in an outage, so that an outage
    // does not shift the fate of every later packet.
    let times = dir.fate(imp, Instant::now());
    if shared.outage.load(Ordering::Acquire) || times.is_empty() {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if times.len() > 1 {
        shared.duplicated.fetch_add(1, Ordering::Relaxed);
    }
    for at in times {
        *order += 1;
        shared.forwarded.fetch_add(1, Ordering::Relaxed);
        heap.push(Pending {
            at,
            order: *order,
            to,
            via: via.clone(),
            bytes: bytes.to_vec(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        let t = tokio::spawn(async move {
            let mut b = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut b).await {
                // Echo the payload and the port it came from.
                let mut out = b[..n].to_vec();
                out.extend_from_slice(&from.port().to_be_bytes());
                let _ = s.send_to(&out, from).await;
            }
        });
        (addr, t)
    }

    /// Sends `n` numbered packets and collects the echoes until none came
    /// for `wait` (read while sending: a socket buffer holds ~256).
    async fn exchange(proxy: &Proxy, n: u32, wait: Duration) -> Vec<(u32, u16)> {
        let c = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let reader = c.clone();
        let collect = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut b = [0u8; 64];
            while let Ok(Ok((len, _))) = tokio::time::timeout(wait, reader.recv_from(&mut b)).await
            {
                if len == 6 {
                    let i = u32::from_be_bytes(b[..4].try_into().unwrap());
                    got.push((i, u16::from_be_bytes([b[4], b[5]])));
                }
            }
            got
        });
        for i in 0..n {
            c.send_to(&i.to_be_bytes(), proxy.addr()).await.unwrap();
            if i % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        collect.await.unwrap()
    }

    #[tokio::test]
    async fn the_proxy_loses_delays_duplicates_cuts_and_rebinds_as_told() {
        let (upstream, _echo) = echo().await;
        let clean = Proxy::start(upstream, Impairment::NONE, Impairment::NONE, 1)
            .await
            .unwrap();
        let got = exchange(&clean, 200, Duration::from_millis(300)).await;
        assert_eq!(got.len(), 200, "a clean path passes everything");
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "and in order");

        // 30 % loss each way: about half of the round trips survive.
        let lossy = Impairment {
            loss: 0.3,
            ..Impairment::NONE
        };
        let p = Proxy::start(upstream, lossy, lossy, 7).await.unwrap();
        let got = exchange(&p, 1000, Duration::from_millis(300)).await;
        assert!(
            (400..600).contains(&got.len()),
            "{} of 1000, {:?}",
            got.len(),
            p.stats()
        );

        // Jitter reorders; duplication doubles some.
        let shaky = Impairment {
            jitter: Duration::from_millis(30),
            duplicate: 0.2,
            ..Impairment::NONE
        };
        let p = Proxy::start(upstream, shaky, Impairment::NONE, 3)
            .await
            .unwrap();
        let got = exchange(&p, 300, Duration::from_millis(300)).await;
        assert!(got.len() > 330, "duplicates arrive: {}", got.len());
        assert!(got.windows(2).any(|w| w[0].0 > w[1].0), "reordered");

        // An outage drops everything; a rebind changes the source port.
        let before = exchange(&clean, 1, Duration::from_millis(200)).await;
        clean.cut();
        assert!(exchange(&clean, 10, Duration::from_millis(200))
            .await
            .is_empty());
        clean.restore();
        clean.rebind();
        let after = exchange(&clean, 1, Duration::from_millis(200)).await;
        assert_eq!(after.len(), 1);
        assert_ne!(before[0].1, after[0].1, "a new source port upstream");
    }

    #[test]
    fn the_same_seed_gives_the_same_fates() {
        let imp = Impairment {
            loss: 0.1,
            burst_enter: 0.05,
            burst_leave: 0.3,
            burst_loss: 0.8,
            jitter: Duration::from_millis(10),
            ..Impairment::NONE
        };
        let now = Instant::now();
        let run = |seed| {
            let mut d = Direction::new(seed, 1);
            (0..500)
                .map(|_| d.fate(&imp, now).len())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
        let lost = run(9).iter().filter(|n| **n == 0).count();
        assert!(lost > 50, "bursts add to the random loss: {lost}");
    }
}
