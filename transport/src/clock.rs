//! The tree's clock. Every node plays and stamps in the district's time
//! ("tree time"): the district's own clock, and for every other node its
//! own clock corrected by what it measured of its upstream's tree time.
//!
//! - [`ClockSync`] is the sans-IO estimator: it says when to send a
//!   [`TimeRequest`], takes each [`TimeResponse`] with its receive time and
//!   fits offset and drift to the samples with the smallest round trips
//!   (over cellular links the delay is asymmetric and bursty, so the
//!   quickest exchanges are the truest: a min-RTT filter, not a median).
//! - [`TreeClock`] is what a node reads the time from; the link updates it.
//! - [`follow`] runs the exchange on a connection upward, [`serve`] answers
//!   children. Both use QUIC datagrams: a lost probe is simply lost, and a
//!   probe never waits behind a retransmitted stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use protocol::control::{TimeRequest, TimeResponse};
use protocol::frame::{decode_prefix, FrameKind, FRAME_PREFIX_LEN};
use protocol::Message;
use quinn::Connection;
use tracing::debug;

/// A node's clock as an offset and a rate error from the system clock:
/// the identity for a real node; tests and benchmarks emulate terminals
/// whose clocks are wrong by seconds and tens of ppm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalClock {
    /// Local − system at `since_us`.
    pub offset_us: i64,
    /// Parts per billion the clock runs fast (negative: slow).
    pub drift_ppb: i64,
    /// System time from which the drift runs.
    pub since_us: i64,
}

impl LocalClock {
    /// A clock `offset_us` off the system's from now on, running
    /// `drift_ppb` fast.
    pub fn emulated(offset_us: i64, drift_ppb: i64) -> Self {
        LocalClock {
            offset_us,
            drift_ppb,
            since_us: system_now_us(),
        }
    }

    /// Local time when the system clock reads `system_us`.
    pub fn at(&self, system_us: i64) -> i64 {
        let since = system_us - self.since_us;
        system_us + self.offset_us + (since as i128 * self.drift_ppb as i128 / 1_000_000_000) as i64
    }

    pub fn now(&self) -> i64 {
        self.at(system_now_us())
    }
}

/// Unix µs from the system clock.
pub fn system_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// What a node knows of the tree's time: tree = local + offset at
/// `at_local_us`, changing by `drift_ppb` of the local time elapsed since.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub at_local_us: i64,
    pub offset_us: i64,
    pub drift_ppb: i64,
    /// One standard error of the offset, from the spread of the samples
    /// used and their round trips (an asymmetric path adds up to half its
    /// asymmetry that no measurement over the path can see).
    pub uncertainty_us: i64,
    /// The smallest round trip among the samples.
    pub min_rtt_us: i64,
    pub samples: u32,
    /// False until a first fit (the node plays on its own clock).
    pub synced: bool,
}

impl Estimate {
    pub fn offset_at(&self, local_us: i64) -> i64 {
        let since = (local_us - self.at_local_us) as i128;
        self.offset_us + (since * self.drift_ppb as i128 / 1_000_000_000) as i64
    }
}

/// The time a node reads: its local clock corrected by its estimate of
/// the tree's. Shared by the link that measures it and whoever plays or
/// stamps; the lock is held only to copy an estimate.
#[derive(Debug)]
pub struct TreeClock {
    local: LocalClock,
    root: bool,
    estimate: Mutex<Estimate>,
    /// Bumped when the estimate steps (a first fit, a new upstream): a
    /// child measuring this node starts its samples again.
    epoch: std::sync::atomic::AtomicU32,
}

impl TreeClock {
    /// The district's clock: tree time is its own.
    pub fn root() -> Arc<Self> {
        Arc::new(TreeClock {
            local: LocalClock::default(),
            root: true,
            estimate: Mutex::new(Estimate {
                synced: true,
                ..Estimate::default()
            }),
            epoch: Default::default(),
        })
    }

    /// A node that follows its upstream, with a local clock (the system
    /// clock, or an emulated one).
    pub fn follower(local: LocalClock) -> Arc<Self> {
        Arc::new(TreeClock {
            local,
            root: false,
            estimate: Mutex::default(),
            epoch: Default::default(),
        })
    }

    pub fn is_root(&self) -> bool {
        self.root
    }

    pub fn local(&self) -> &LocalClock {
        &self.local
    }

    pub fn local_now(&self) -> i64 {
        self.local.now()
    }

    pub fn estimate(&self) -> Estimate {
        *self.estimate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tree time at local time `local_us`.
    pub fn tree_at(&self, local_us: i64) -> i64 {
        local_us + self.estimate().offset_at(local_us)
    }

    /// Tree time now.
    pub fn now(&self) -> i64 {
        self.tree_at(self.local_now())
    }

    pub fn epoch(&self) -> u32 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A new estimate; `stepped` when it does not continue the last one.
    pub fn set(&self, e: Estimate, stepped: bool) {
        if self.root {
            return;
        }
        *self.estimate.lock().unwrap_or_else(|p| p.into_inner()) = e;
        if stepped {
            self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// How the estimator samples and fits.
#[derive(Debug, Clone, Copy)]
pub struct SyncConfig {
    /// Probes sent at connect, `burst_gap_us` apart.
    pub burst: u32,
    pub burst_gap_us: i64,
    /// Then one probe this often.
    pub period_us: i64,
    /// Samples kept (the newest).
    pub window: usize,
    /// An answer later than this is dropped (it says nothing useful).
    pub max_rtt_us: i64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            burst: 16,
            burst_gap_us: 40_000,
            period_us: 1_000_000,
            window: 512,
            max_rtt_us: 5_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Local time halfway through the exchange.
    mid_us: i64,
    /// Tree minus local.
    offset_us: i64,
    rtt_us: i64,
}

/// How far a clock's drift is expected to be from zero (the slope's prior).
const PRIOR_PPB: i64 = 50_000;
/// Drift beyond this is no crystal: the samples are wrong.
const MAX_DRIFT_PPB: i64 = 500_000;
/// Requests in flight remembered (answers to others are dropped).
const PENDING: usize = 32;

/// The sans-IO estimator of one link's offset to its upstream.
#[derive(Debug)]
pub struct ClockSync {
    cfg: SyncConfig,
    samples: VecDeque<Sample>,
    pending: VecDeque<i64>,
    next_probe_us: i64,
    burst_left: u32,
    /// The upstream's clock epoch the samples were taken against.
    epoch: Option<u32>,
    fitted: Option<Estimate>,
}

/// Why an answer was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SampleRefused {
    #[error("answers no request in flight")]
    Unasked,
    #[error("round trip {0} µs is negative or too long")]
    RoundTrip(i64),
}

impl ClockSync {
    pub fn new(cfg: SyncConfig) -> Self {
        ClockSync {
            cfg,
            samples: VecDeque::new(),
            pending: VecDeque::new(),
            next_probe_us: i64::MIN,
            burst_left: cfg.burst,
            epoch: None,
            fitted: None,
        }
    }

    /// A new link: a burst of probes, and the samples start again (another
    /// upstream's estimate of the tree's time may differ a little). The
    /// last fit stands until the first new one.
    pub fn restart(&mut self, now_local_us: i64) {
        self.samples.clear();
        self.pending.clear();
        self.burst_left = self.cfg.burst;
        self.next_probe_us = now_local_us;
        self.epoch = None;
    }

    /// When the next probe is due (local µs).
    pub fn next_probe_at(&self) -> i64 {
        self.next_probe_us
    }

    /// A probe to send now, if one is due.
    pub fn poll_request(&mut self, now_local_us: i64) -> Option<TimeRequest> {
        if now_local_us < self.next_probe_us {
            return None;
        }
        let gap = if self.burst_left > 0 {
            self.burst_left -= 1;
            self.cfg.burst_gap_us
        } else {
            self.cfg.period_us
        };
        self.next_probe_us = now_local_us + gap;
        if self.pending.len() >= PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(now_local_us);
        Some(TimeRequest {
            t0_us: now_local_us,
        })
    }

    /// An answer received at local time `t3_us`. Ok(true) when the
    /// estimate changed.
    pub fn handle_response(&mut self, r: &TimeResponse, t3_us: i64) -> Result<bool, SampleRefused> {
        let epoch = r.epoch;
        let Some(i) = self.pending.iter().position(|t| *t == r.t0_us) else {
            return Err(SampleRefused::Unasked);
        };
        self.pending.remove(i);
        let (offset, rtt) = r.offset_and_delay(t3_us);
        if !(0..=self.cfg.max_rtt_us).contains(&rtt) {
            return Err(SampleRefused::RoundTrip(rtt));
        }
        if self.epoch != Some(epoch) {
            // The upstream stepped its own clock: older samples describe a
            // clock that is gone.
            self.samples.clear();
            self.epoch = Some(epoch);
        }
        if self.samples.len() >= self.cfg.window {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            mid_us: r.t0_us + (t3_us - r.t0_us) / 2,
            offset_us: offset,
            rtt_us: rtt,
        });
        let fit = self.fit();
        let changed = fit != self.fitted;
        self.fitted = fit;
        Ok(changed)
    }

    /// The current estimate (None before the first sample).
    pub fn estimate(&self) -> Option<Estimate> {
        self.fitted
    }

    /// Samples held (since the last restart or upstream step).
    pub fn samples(&self) -> usize {
        self.samples.len()
    }

    /// Fits tree − local = a + b·(t − t_ref) to the quickest quarter of the
    /// samples (all of them while there are fewer than 16), each weighted
    /// by how little queueing its round trip shows, then once more without
    /// those more than three spreads off.
    fn fit(&self) -> Option<Estimate> {
        let min_rtt = self.samples.iter().map(|s| s.rtt_us).min()?;
        let mut by_rtt: Vec<Sample> = self.samples.iter().copied().collect();
        by_rtt.sort_by_key(|s| s.rtt_us);
        let keep = if by_rtt.len() < 16 {
            by_rtt.len()
        } else {
            by_rtt.len() / 4
        };
        let mut chosen: Vec<Sample> = by_rtt[..keep].to_vec();
        // A sample whose round trip is e over the quickest may be off by
        // up to e/2: weight 1/(e + c)², c the typical excess of the chosen.
        let mut excesses: Vec<i64> = chosen.iter().map(|s| s.rtt_us - min_rtt).collect();
        excesses.sort_unstable();
        let c = (excesses[excesses.len() / 2] as f64).max(50.0);
        let weight = |s: &Sample| 1.0 / ((s.rtt_us - min_rtt) as f64 + c).powi(2);
        let mut line = Line::fit(&chosen, &weight);
        if chosen.len() >= 8 {
            let spread = line.rms.max(50.0);
            chosen.retain(|s| line.residual(s).abs() <= 3.0 * spread);
            if chosen.len() >= 4 {
                line = Line::fit(&chosen, &weight);
            }
        }
        // Half the round-trip excess over the quickest is how far queueing
        // can have moved a sample; their weighted mean, with the residual
        // spread, over √n is the standard error.
        let n = chosen.len() as f64;
        let wsum: f64 = chosen.iter().map(weight).sum();
        let excess = chosen
            .iter()
            .map(|s| weight(s) * (s.rtt_us - min_rtt) as f64 / 2.0)
            .sum::<f64>()
            / wsum;
        let uncertainty = ((line.rms * line.rms + excess * excess) / n).sqrt() + 1.0;
        Some(Estimate {
            at_local_us: line.t_ref,
            offset_us: line.a.round() as i64,
            drift_ppb: line.b_ppb,
            uncertainty_us: uncertainty.round() as i64,
            min_rtt_us: min_rtt,
            samples: self.samples.len() as u32,
            synced: true,
        })
    }
}

struct Line {
    t_ref: i64,
    a: f64,
    b_ppb: i64,
    rms: f64,
}

impl Line {
    /// Weighted least squares, the slope shrunk towards zero by a prior.
    fn fit(s: &[Sample], weight: &dyn Fn(&Sample) -> f64) -> Line {
        let t_ref = s.iter().map(|x| x.mid_us).max().unwrap_or(0);
        let w: Vec<f64> = s.iter().map(weight).collect();
        let sw: f64 = w.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let xs: Vec<f64> = s.iter().map(|x| (x.mid_us - t_ref) as f64).collect();
        let ys: Vec<f64> = s.iter().map(|x| x.offset_us as f64).collect();
        let mx = xs.iter().zip(&w).map(|(x, w)| x * w).sum::<f64>() / sw;
        let my = ys.iter().zip(&w).map(|(y, w)| y * w).sum::<f64>() / sw;
        let mut sxx = 0.0;
        let mut sxy = 0.0;
        for ((x, y), w) in xs.iter().zip(&ys).zip(&w) {
            sxx += w * (x - mx) * (x - mx);
            sxy += w * (x - mx) * (y - my);
        }
        // The slope is shrunk towards zero by a prior of ±PRIOR_PPB (what
        // crystals do): over a short span the data cannot tell drift from
        // jitter, over a long one they outweigh the prior. The weights are
        // 1/(4σ²) for σ = (e + c)/2 µs, hence the quarter.
        let lambda = 1.0 / (PRIOR_PPB as f64 / 1e9).powi(2) / 4.0;
        let b =
            (sxy / (sxx + lambda)).clamp(-MAX_DRIFT_PPB as f64 / 1e9, MAX_DRIFT_PPB as f64 / 1e9);
        let a = my - b * mx;
        let rms = (xs
            .iter()
            .zip(&ys)
            .zip(&w)
            .map(|((x, y), w)| {
                let r = y - (a + b * x);
                w * r * r
            })
            .sum::<f64>()
            / sw)
            .sqrt();
        Line {
            t_ref,
            a,
            b_ppb: (b * 1e9).round() as i64,
            rms,
        }
    }

    fn residual(&self, s: &Sample) -> f64 {
        s.offset_us as f64 - (self.a + self.b_ppb as f64 / 1e9 * (s.mid_us - self.t_ref) as f64)
    }
}

/// The time protocol's datagrams: a frame each, only these two kinds.
fn datagram(m: &Message) -> Bytes {
    Bytes::from(m.encode())
}

fn parse_datagram(b: &[u8]) -> Option<Message> {
    let prefix: &[u8; FRAME_PREFIX_LEN] = b.get(..FRAME_PREFIX_LEN)?.try_into().ok()?;
    let (kind, len) = decode_prefix(prefix).ok()?;
    if !matches!(kind, FrameKind::TimeRequest | FrameKind::TimeResponse)
        || b.len() != FRAME_PREFIX_LEN + len
    {
        return None;
    }
    Message::decode_body(kind, &b[FRAME_PREFIX_LEN..]).ok()
}

/// Measures the upstream on `conn` and keeps `clock` on its tree time,
/// until the connection ends. The first fit on a connection is a step
/// (children measuring this node start again); the drift known from the
/// last link stands until this one has samples enough to fit its own.
pub async fn follow(conn: Connection, clock: Arc<TreeClock>) {
    if clock.is_root() {
        // The root answers, it never follows.
        conn.closed().await;
        return;
    }
    let mut sync = ClockSync::new(SyncConfig::default());
    let last = clock.estimate();
    if last.synced {
        sync.fitted = Some(last);
    }
    sync.restart(clock.local_now());
    let mut first = true;
    loop {
        let now = clock.local_now();
        if let Some(req) = sync.poll_request(now) {
            if conn
                .send_datagram(datagram(&Message::TimeRequest(req)))
                .is_err()
            {
                // Datagrams are off or the link is gone: nothing to measure.
                conn.closed().await;
                return;
            }
        }
        let wait = (sync.next_probe_at() - clock.local_now()).max(0) as u64;
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_micros(wait)) => {}
            d = conn.read_datagram() => {
                let Ok(d) = d else { return };
                let t3 = clock.local_now();
                let Some(Message::TimeResponse(r)) = parse_datagram(&d) else {
                    debug!("a datagram that is no time response was dropped");
                    continue;
                };
                match sync.handle_response(&r, t3) {
                    Ok(true) => {
                        if let Some(e) = sync.estimate() {
                            clock.set(e, first);
                            first = false;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => debug!("time response dropped: {e}"),
                }
            }
        }
    }
}

/// Most time requests answered per second on one connection; more are
/// dropped (a child cannot make its upstream spin).
pub const MAX_REQUESTS_PER_S: u32 = 50;

/// Answers the time requests of the child on `conn` with `clock`'s tree
/// time, until the connection ends.
pub async fn serve(conn: Connection, clock: Arc<TreeClock>) {
    let mut window_start = tokio::time::Instant::now();
    let mut answered = 0u32;
    while let Ok(d) = conn.read_datagram().await {
        let t1 = clock.now();
        let Some(Message::TimeRequest(req)) = parse_datagram(&d) else {
            debug!("a datagram that is no time request was dropped");
            continue;
        };
        let now = tokio::time::Instant::now();
        if now.duration_since(window_start) >= std::time::Duration::from_secs(1) {
            window_start = now;
            answered = 0;
        }
        if answered >= MAX_REQUESTS_PER_S {
            continue;
        }
        answered += 1;
        let response = TimeResponse {
            t0_us: req.t0_us,
            t1_us: t1,
            t2_us: clock.now(),
            epoch: clock.epoch(),
        };
        if conn
            .send_datagram(datagram(&Message::TimeResponse(response)))
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
