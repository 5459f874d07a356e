//! The tree's clock. Every node plays and stamps in the district's time
//! ("tree time"): the district's own clock, and for every other node its
//! own clock corrected by what it measured of its upstream's tree time.
//!
//! - [`ClockSync`] is the sans-IO estimator: it says when to send a
//!   [`TimeRequest`], takes each [`TimeResponse`] with its receive time and
//!   fits offset and drift between the envelopes of the one-way trips
//!   (over cellular links the delay is asymmetric and bursty, so the
//!   quickest trips are the truest, and each way's quickest trip is far
//!   nearer its minimum than the quickest round trip: not a median, and
//!   not a min-RTT filter).
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
    /// How far off the offset may be: the envelopes' own noise (the gap
    /// from each direction's quickest trip to the next) and how far the
    /// offset moves across the slopes that fit about as well. An
    /// asymmetric path adds up to half its asymmetry, which no measurement
    /// over the path can see.
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
    /// The estimator of the link being followed (`follow`), shared so a
    /// probe can go out with other traffic (`probe_along`); locked only
    /// to poll or feed it, never across I/O. Tagged with the `follow`
    /// that owns it (`follows` numbers them): after a failover the old
    /// link's `follow` may outlive the new one's start by a moment.
    sync: Mutex<Option<(u64, ClockSync)>>,
    follows: std::sync::atomic::AtomicU64,
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
            sync: Mutex::new(None),
            follows: Default::default(),
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
            sync: Mutex::new(None),
            follows: Default::default(),
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

    /// Runs `f` on the shared estimator if `owner`'s (any when None).
    fn with_sync<T>(&self, owner: Option<u64>, f: impl FnOnce(&mut ClockSync) -> T) -> Option<T> {
        let mut slot = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_mut() {
            Some((id, s)) if owner.is_none_or(|o| o == *id) => Some(f(s)),
            _ => None,
        }
    }

    /// The period between the followed link's probes now (None while no
    /// link is followed).
    pub fn probe_period_us(&self) -> Option<i64> {
        self.with_sync(None, |s| s.period_us())
    }

    /// Sends the link's next probe now, on `conn`, as
    /// `ClockSync::poll_request_along` allows: called as other traffic
    /// goes up (a terminal's status), so both leave in one packet and the
    /// upstream's answer acknowledges both. An idle terminal's link then costs its relay one
    /// exchange per heartbeat instead of one per heartbeat and one per
    /// probe.
    pub fn probe_along(&self, conn: &Connection) {
        let now = self.local_now();
        if let Some(Some(req)) = self.with_sync(None, |s| s.poll_request_along(now)) {
            // A link without datagrams is noticed by `follow`.
            let _ = conn.send_datagram(datagram(&Message::TimeRequest(req)));
        }
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
///
/// Probing adapts to what it buys: after the connect burst, a slow path
/// (4G) settles at `settle_period_us` for `settle_us`, then probes every
/// `period_us` (sparse probes there find too few quick trips to hold P4).
/// A quick path (`QUICK_RTT_US`) whose estimate is within `QUIET_US` skips
/// settling, and its period doubles, up to `max_period_us`, with each
/// answer that leaves the uncertainty where it was (neither better nor
/// worse by more than a tenth, or 20 µs) or under half of `QUIET_US`;
/// one that finds it worse, past half of `QUIET_US`, keeps the pace, and
/// each answer past `QUIET_US` halves the period, down to `period_us`. A
/// settled quick link is probed every `max_period_us` (its link needs no
/// keep-alive of its own), and a terminal's heartbeat status carries the
/// probe (`TreeClock::probe_along`).
#[derive(Debug, Clone, Copy)]
pub struct SyncConfig {
    /// Probes sent at connect, `burst_gap_us` apart.
    pub burst: u32,
    pub burst_gap_us: i64,
    /// For `settle_us` after connecting, unless the path is quick and the
    /// estimate within `QUIET_US`, one probe this often (over a jittery
    /// path the envelopes sharpen with the number of samples).
    pub settle_period_us: i64,
    pub settle_us: i64,
    /// The shortest period between probes after that, and the longest.
    pub period_us: i64,
    pub max_period_us: i64,
    /// Samples kept (the newest), and none older than `max_age_us`: a
    /// crystal's drift follows its temperature, so a line is fitted to the
    /// last ten minutes only (the 512 answers of the old fixed pace).
    pub window: usize,
    pub max_age_us: i64,
    /// An answer later than this is dropped (it says nothing useful).
    pub max_rtt_us: i64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            burst: 16,
            burst_gap_us: 40_000,
            settle_period_us: 250_000,
            settle_us: 120_000_000,
            period_us: 1_000_000,
            max_period_us: 25_000_000,
            window: 512,
            max_age_us: 600_000_000,
            max_rtt_us: 5_000_000,
        }
    }
}

/// An uncertainty within this share (or `STEADY_US`) of the last one
/// holds: more probes would not buy a better estimate.
const STEADY_SHARE: f64 = 0.1;
const STEADY_US: i64 = 20;
/// An estimate this good is good enough (P4 asks for terminals within a
/// millisecond of each other): probes slow down from there.
const QUIET_US: i64 = 200;
/// How much later than its period a probe is due after one sent along
/// with other traffic (`ClockSync::poll_request_along`).
pub const ALONG_GRACE_US: i64 = 2_000_000;
/// No probe goes along sooner than this after the last.
pub const ALONG_MIN_GAP_US: i64 = 2_000_000;
/// A path this quick (a LAN, loopback) needs no settling.
const QUICK_RTT_US: i64 = 2_000;

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Local time the request left (t0) and its answer came (t3).
    t0_us: i64,
    t3_us: i64,
    /// t1 − t0: tree − local plus the way up.
    fwd_us: i64,
    /// t2 − t3: tree − local minus the way down.
    bwd_us: i64,
}

impl Sample {
    fn rtt_us(&self) -> i64 {
        self.fwd_us - self.bwd_us
    }
}

/// How far a clock's drift is expected to be from zero (the slope's prior).
const PRIOR_PPB: i64 = 50_000;
/// Drift beyond this is no crystal: the samples are wrong.
const MAX_DRIFT_PPB: i64 = 500_000;
/// What a drift of PRIOR_PPB must buy in band width (µs) to be believed:
/// over a short span the samples cannot tell drift from jitter.
const PRIOR_COST_US: f64 = 300.0;
/// How far from the last fit's slope the next is looked for first, and
/// how near that range's ends a peak is taken to lie beyond them.
const NEAR: f64 = 5e-6;
const EDGE: f64 = 1e-8;
/// Requests in flight remembered (answers to others are dropped).
const PENDING: usize = 32;

/// The sans-IO estimator of one link's offset to its upstream.
#[derive(Debug)]
pub struct ClockSync {
    cfg: SyncConfig,
    samples: VecDeque<Sample>,
    pending: VecDeque<i64>,
    next_probe_us: i64,
    last_probe_us: i64,
    burst_left: u32,
    /// The period between probes now (adapted between the config's bounds).
    period_us: i64,
    /// The best uncertainty since the pace last quickened.
    steady_uncertainty_us: Option<i64>,
    /// Local time of the last restart (a new link).
    connected_us: i64,
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
            last_probe_us: i64::MIN / 2,
            burst_left: cfg.burst,
            period_us: cfg.period_us,
            steady_uncertainty_us: None,
            connected_us: i64::MIN,
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
        self.period_us = self.cfg.period_us;
        self.steady_uncertainty_us = None;
        self.connected_us = now_local_us;
        self.next_probe_us = now_local_us;
        self.epoch = None;
    }

    /// When the next probe is due (local µs).
    pub fn next_probe_at(&self) -> i64 {
        self.next_probe_us
    }

    /// A probe to send now along with other traffic (never during the
    /// connect burst; within `ALONG_MIN_GAP_US` of the last, none, and the
    /// next waits past the next such traffic). The one
    /// after it is due a period and `ALONG_GRACE_US` later, so that the
    /// next traffic at the same period (the next heartbeat) carries it
    /// too, rather than the probe's own timer firing just before: after at
    /// most one extra probe, probes and heartbeats keep step.
    pub fn poll_request_along(&mut self, now_local_us: i64) -> Option<TimeRequest> {
        if self.burst_left > 0 {
            return None;
        }
        if now_local_us - self.last_probe_us < ALONG_MIN_GAP_US {
            // Just probed: the next waits for the traffic after this.
            self.next_probe_us = self
                .next_probe_us
                .max(now_local_us + self.period_us + ALONG_GRACE_US);
            return None;
        }
        self.next_probe_us = now_local_us;
        let req = self.poll_request(now_local_us);
        self.next_probe_us += ALONG_GRACE_US;
        req
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
            self.period_us
        };
        self.next_probe_us = now_local_us + gap;
        self.last_probe_us = now_local_us;
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
        while self
            .samples
            .front()
            .is_some_and(|s| t3_us - s.t3_us > self.cfg.max_age_us)
        {
            self.samples.pop_front();
        }
        debug_assert_eq!(offset, ((r.t1_us - r.t0_us) + (r.t2_us - t3_us)) / 2);
        self.samples.push_back(Sample {
            t0_us: r.t0_us,
            t3_us,
            fwd_us: r.t1_us - r.t0_us,
            bwd_us: r.t2_us - t3_us,
        });
        let mut fit = self.fit();
        if fit.is_some_and(|(_, width)| width < 0.0) {
            // No line leaves every answer outside a band of positive
            // delays: a clock jumped (ours, or the upstream's without a new
            // epoch). What came before describes a clock that is gone.
            let newest = self.samples.pop_back();
            self.samples.clear();
            self.samples.extend(newest);
            fit = self.fit();
        }
        let fit = fit.map(|(e, _)| e);
        let changed = fit != self.fitted;
        self.fitted = fit;
        if self.burst_left == 0 {
            if let Some(e) = fit {
                self.adapt_period(&e, t3_us);
            }
        }
        Ok(changed)
    }

    /// Slower probes while the estimate holds, faster when it worsens.
    fn adapt_period(&mut self, e: &Estimate, now_local_us: i64) {
        let uncertainty_us = e.uncertainty_us;
        // Over a slow path a young fit's uncertainty is too hopeful (a few
        // dozen samples have not found the quick trips yet): it settles at
        // the quick pace whatever it says. A quick path's is to be trusted.
        let quick = e.min_rtt_us <= QUICK_RTT_US;
        if !(quick && uncertainty_us <= QUIET_US)
            && now_local_us - self.connected_us < self.cfg.settle_us
        {
            self.period_us = self.cfg.settle_period_us;
            return;
        }
        if !quick {
            // Over a slow path sparse probes find too few quick trips to
            // hold P4 (the skew bench's 40–200 ms paths went from 0.6 to
            // 1.2–2 ms at p99 when probes slowed): the steady pace.
            self.period_us = self.cfg.period_us;
            return;
        }
        let Some(last) = self.steady_uncertainty_us else {
            self.steady_uncertainty_us = Some(uncertainty_us);
            return;
        };
        // Measured against the best since the pace last quickened, so a
        // slow creep upwards is seen too.
        let slack = ((last as f64 * STEADY_SHARE) as i64).max(STEADY_US);
        let reference = if uncertainty_us > QUIET_US {
            // Not good enough for P4: quicker, down to the steady pace if it
            // stays so (more probes find quicker trips). Halving, not a
            // return to the steady pace at once: on a busy LAN a quick
            // path's estimate crosses QUIET_US now and then, and thousands
            // of idle links each back at one probe a second cost their
            // relay more than their keep-alives.
            self.period_us = (self.period_us / 2).max(self.cfg.period_us);
            uncertainty_us
        } else if uncertainty_us > last + slack && uncertainty_us > QUIET_US / 2 {
            // Worse, but still good enough: the pace holds. (Halving here
            // made a busy relay's idle links flap between one probe a
            // second and one in 25 s: a quick path's uncertainty wanders
            // between 50 and 200 µs when the relay's own scheduling is
            // most of the round trip.)
            uncertainty_us
        } else if uncertainty_us >= last - slack || uncertainty_us <= QUIET_US / 2 {
            self.period_us = (self.period_us * 2).min(self.cfg.max_period_us);
            last.min(uncertainty_us)
        } else {
            // Still improving: keep the pace.
            uncertainty_us
        };
        self.steady_uncertainty_us = Some(reference);
    }

    /// The period between probes now.
    pub fn period_us(&self) -> i64 {
        self.period_us
    }

    /// The current estimate (None before the first sample).
    pub fn estimate(&self) -> Option<Estimate> {
        self.fitted
    }

    /// Samples held (since the last restart or upstream step).
    pub fn samples(&self) -> usize {
        self.samples.len()
    }

    /// Fits tree − local = a + b·(t − t_ref) between the two envelopes
    /// of the samples. Each way's delay is at least its minimum, so every
    /// t1 − t0 lies above the line by at least the way up and every
    /// t2 − t3 below it by at least the way down: the line is the middle of
    /// the widest band with all answers outside it. Each envelope is set by
    /// its direction's quickest trip alone, which over jittery paths is far
    /// nearer the minimum than the quickest round trip (both ways quick at
    /// once) is; delays in either host only push samples outwards.
    /// Also returns the widest band's width (negative: no line fits them
    /// all).
    fn fit(&self) -> Option<(Estimate, f64)> {
        let newest = self.samples.back()?;
        let t_ref = newest.t0_us + (newest.t3_us - newest.t0_us) / 2;
        let span = self
            .samples
            .iter()
            .map(|s| t_ref - s.t0_us)
            .max()
            .unwrap_or(0);
        let band = Band::new(&self.samples, t_ref);
        let max_b = MAX_DRIFT_PPB as f64 / 1e9;
        // The width is concave in the slope (a minimum of lines less a
        // maximum of lines), and so is it less the prior's cost: a golden
        // section search finds its peak. Below a second of span the samples
        // cannot see drift at all.
        let objective = |b: f64| band.width(b) - PRIOR_COST_US * b.abs() / (PRIOR_PPB as f64 / 1e9);
        // Below a second of span the samples cannot see drift: the last
        // fit's stands (it is the local crystal's, whichever upstream or
        // step came since).
        let known_drift = self.fitted.map_or(0.0, |e| e.drift_ppb as f64 / 1e9);
        let b = if span < 1_000_000 {
            known_drift
        } else {
            // The slope moves little from one sample to the next: look near
            // the last one first, everywhere if the peak is not inside.
            let near = self.fitted.map(|e| e.drift_ppb as f64 / 1e9);
            near.and_then(|c| {
                let (lo, hi) = ((c - NEAR).max(-max_b), (c + NEAR).min(max_b));
                let b = golden_max(lo, hi, objective);
                (b - lo > EDGE && hi - b > EDGE).then_some(b)
            })
            .unwrap_or_else(|| golden_max(-max_b, max_b, objective))
        };
        let (_, upper_gap) = band.upper(b);
        let (_, lower_gap) = band.lower(b);
        // The quickest of n trips errs by about the gap to the next one, so
        // every slope whose band is narrower than the widest by no more
        // than those gaps fits the samples as well. The estimate is the
        // middle of those slopes (the peak alone sits at one end of them
        // whenever the band's top is flat), and the offsets they give at
        // t_ref are its uncertainty.
        let slack = upper_gap + lower_gap;
        let peak = band.width(b);
        let mut ends = [b, b];
        for (k, end) in [-max_b, max_b].into_iter().enumerate() {
            let mut inside = b;
            let mut outside = end;
            if band.width(outside) >= peak - slack {
                inside = outside;
            } else {
                for _ in 0..24 {
                    let mid = (inside + outside) / 2.0;
                    if band.width(mid) >= peak - slack {
                        inside = mid;
                    } else {
                        outside = mid;
                    }
                }
            }
            ends[k] = inside;
        }
        // Crystals stay within about twice the prior: a flat band whose
        // slopes reach further says nothing about the far ones.
        let likely = 2.0 * PRIOR_PPB as f64 / 1e9;
        let (lo, hi) = (ends[0].max(-likely), ends[1].min(likely));
        let b = if span < 1_000_000 {
            known_drift
        } else if lo <= hi {
            (lo + hi) / 2.0
        } else {
            b
        };
        let (upper, upper_gap) = band.upper(b);
        let (lower, lower_gap) = band.lower(b);
        let offset = (upper + lower) / 2.0;
        let tilt = ends
            .iter()
            .map(|e| (band.offset(*e) - offset).abs())
            .fold(0.0, f64::max);
        let uncertainty = ((upper_gap * upper_gap + lower_gap * lower_gap) / 4.0 + tilt * tilt)
            .sqrt()
            .max(1.0);
        let estimate = Estimate {
            at_local_us: t_ref,
            offset_us: offset.round() as i64,
            drift_ppb: (b * 1e9).round() as i64,
            uncertainty_us: uncertainty.round() as i64,
            min_rtt_us: self.samples.iter().map(Sample::rtt_us).min()?,
            samples: self.samples.len() as u32,
            synced: true,
        };
        // The prior may have chosen a slope whose band is empty where a
        // steeper one is not: only the widest band at any slope says
        // whether the samples agree.
        let mut width = upper - lower;
        if width < 0.0 {
            width = band.width(golden_max(-max_b, max_b, |b| band.width(b)));
        }
        Some((estimate, width))
    }
}

/// The samples seen through a slope `b` (tree − local drifting by b).
struct Band<'a> {
    samples: &'a VecDeque<Sample>,
    t_ref: i64,
    /// The points that can be the lowest t1 − t0 at some slope (the lower
    /// convex hull), and those that can be the highest t2 − t3 (the upper
    /// one, negated): a search over slopes looks at these few only.
    fwd_hull: Vec<(f64, f64)>,
    bwd_hull: Vec<(f64, f64)>,
}

impl<'a> Band<'a> {
    fn new(samples: &'a VecDeque<Sample>, t_ref: i64) -> Self {
        let fwd = samples
            .iter()
            .map(|s| ((s.t0_us - t_ref) as f64, s.fwd_us as f64));
        let bwd = samples
            .iter()
            .map(|s| ((s.t3_us - t_ref) as f64, -(s.bwd_us as f64)));
        Band {
            samples,
            t_ref,
            fwd_hull: lower_hull(fwd.collect()),
            bwd_hull: lower_hull(bwd.collect()),
        }
    }

    /// The lowest t1 − t0 once the slope is taken out, and how far above
    /// it the next lowest lies.
    fn upper(&self, b: f64) -> (f64, f64) {
        lowest_two(
            self.samples
                .iter()
                .map(|s| s.fwd_us as f64 - b * (s.t0_us - self.t_ref) as f64),
        )
    }

    /// The highest t2 − t3 once the slope is taken out, and how far below
    /// it the next highest lies.
    fn lower(&self, b: f64) -> (f64, f64) {
        let (low, gap) = lowest_two(
            self.samples
                .iter()
                .map(|s| -(s.bwd_us as f64 - b * (s.t3_us - self.t_ref) as f64)),
        );
        (-low, gap)
    }

    /// `upper(b).0` and `lower(b).0`, from the hulls.
    fn edges(&self, b: f64) -> (f64, f64) {
        let low = |hull: &[(f64, f64)], b: f64| {
            hull.iter()
                .map(|(x, y)| y - b * x)
                .fold(f64::INFINITY, f64::min)
        };
        // max(bwd − b·x) = −min(−bwd − (−b)·x)
        (low(&self.fwd_hull, b), -low(&self.bwd_hull, -b))
    }

    fn width(&self, b: f64) -> f64 {
        let (upper, lower) = self.edges(b);
        upper - lower
    }

    /// The middle of the band at t_ref.
    fn offset(&self, b: f64) -> f64 {
        let (upper, lower) = self.edges(b);
        (upper + lower) / 2.0
    }
}

/// The lowest of `values`, and how far above it the next lowest lies (0
/// for fewer than two).
fn lowest_two(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut first = f64::INFINITY;
    let mut second = f64::INFINITY;
    for v in values {
        if v < first {
            second = first;
            first = v;
        } else if v < second {
            second = v;
        }
    }
    (
        first,
        if second.is_finite() {
            second - first
        } else {
            0.0
        },
    )
}

/// The lower convex hull of points (x, y): every point that is the lowest
/// y − b·x for some b.
fn lower_hull(mut points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    points.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.total_cmp(&q.1)));
    let mut hull: Vec<(f64, f64)> = Vec::new();
    for p in points {
        while let [.., o, a] = hull[..] {
            // Drop a when it lies on or above the segment from o to p.
            if (a.0 - o.0) * (p.1 - o.1) - (a.1 - o.1) * (p.0 - o.0) <= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(p);
    }
    hull
}

/// The peak of a concave function on [lo, hi] (to a part in 10⁸ of the
/// interval).
fn golden_max(mut lo: f64, mut hi: f64, f: impl Fn(f64) -> f64) -> f64 {
    const R: f64 = 0.618_033_988_749_894_8;
    let mut x1 = hi - R * (hi - lo);
    let mut x2 = lo + R * (hi - lo);
    let (mut f1, mut f2) = (f(x1), f(x2));
    for _ in 0..40 {
        if f1 < f2 {
            lo = x1;
            x1 = x2;
            f1 = f2;
            x2 = lo + R * (hi - lo);
            f2 = f(x2);
        } else {
            hi = x2;
            x2 = x1;
            f2 = f1;
            x1 = hi - R * (hi - lo);
            f1 = f(x1);
        }
    }
    (lo + hi) / 2.0
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
    let me = clock
        .follows
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    *clock.sync.lock().unwrap_or_else(|p| p.into_inner()) = Some((me, sync));
    let _unshare = Unshare(&clock, me);
    let mut first = true;
    loop {
        let now = clock.local_now();
        let Some(req) = clock.with_sync(Some(me), |s| s.poll_request(now)) else {
            // A newer link follows now.
            return;
        };
        if let Some(req) = req {
            if conn
                .send_datagram(datagram(&Message::TimeRequest(req)))
                .is_err()
            {
                // Datagrams are off or the link is gone: nothing to measure.
                conn.closed().await;
                return;
            }
        }
        let next = clock
            .with_sync(Some(me), |s| s.next_probe_at())
            .unwrap_or(i64::MAX);
        let wait = (next - clock.local_now()).clamp(0, 3_600_000_000) as u64;
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_micros(wait)) => {}
            d = conn.read_datagram() => {
                let Ok(d) = d else { return };
                let t3 = clock.local_now();
                let Some(Message::TimeResponse(r)) = parse_datagram(&d) else {
                    debug!("a datagram that is no time response was dropped");
                    continue;
                };
                match clock.with_sync(Some(me), |s| s.handle_response(&r, t3).map(|changed| (changed, s.estimate()))) {
                    Some(Ok((true, Some(e)))) => {
                        clock.set(e, first);
                        first = false;
                    }
                    Some(Ok(_)) | None => {}
                    Some(Err(e)) => debug!("time response dropped: {e}"),
                }
            }
        }
    }
}

/// Takes a link's estimator out of its clock when `follow` ends.
struct Unshare<'a>(&'a TreeClock, u64);

impl Drop for Unshare<'_> {
    fn drop(&mut self) {
        let mut slot = self.0.sync.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|(id, _)| *id == self.1) {
            *slot = None;
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
