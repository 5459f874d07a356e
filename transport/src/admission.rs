//! Who may start a handshake with a platform (S1 under load). Anyone on
//! the network can send a platform's QUIC port an Initial packet, and each
//! accepted one costs a key exchange, a signature and state until the
//! handshake ends. So the accepting end judges every attempt before it
//! costs anything:
//! - past `max_links` (handshaking and linked together) it refuses: the
//!   box has no room, and a refused terminal fails over to another upstream;
//! - past `max_handshakes` in flight it drops the attempt unanswered: a
//!   genuine client sends its Initial again a moment later (QUIC's own
//!   backoff), a flood gets nothing;
//! - an address not yet proven is asked to prove it (a stateless retry)
//!   once more than `retry_above` handshakes are in flight, or once its
//!   source has `max_handshakes_per_source` of them: a spoofed flood then
//!   costs one small packet each and holds no slot;
//! - a proven source with `max_handshakes_per_source` in flight is refused
//!   (many terminals share one carrier NAT address, so the cap is on
//!   handshakes in flight, never on links);
//! - a source whose handshakes failed within the last `FAILURE_MEMORY`
//!   (no certificate, a bad chain) must prove its address, and then gets
//!   at most `failing_source_handshakes_per_s` new handshakes a second, the
//!   rest dropped unanswered: each failed handshake cost a key exchange and
//!   a signature, and a genuine terminal behind the same carrier NAT
//!   address still gets in when it sends its Initial again.
//!
//! Every decision is counted. Sans-IO: the accept loop owns one of these,
//! tells it each attempt and each ending, and does what it says.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a failed handshake marks its source as failing.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(10);
/// Sources remembered as failing at most (a flood from more is bounded by
/// the handshake cap instead).
const FAILING_SOURCES: usize = 65_536;

use serde::{Deserialize, Serialize};

/// Limits on what strangers can make a platform hold (`[admission]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Links (children linked and handshakes in flight) at most.
    pub max_links: usize,
    /// Handshakes in flight at most; attempts beyond are dropped unanswered.
    pub max_handshakes: usize,
    /// Handshakes in flight from one IP address at most.
    pub max_handshakes_per_source: usize,
    /// Above this many handshakes in flight, addresses must be proven
    /// (QUIC retry) before a handshake starts.
    pub retry_above: usize,
    /// A handshake not finished within this is abandoned, ms (half-open
    /// connections hold a slot no longer).
    pub handshake_timeout_ms: u64,
    /// New handshakes a second at most from a source whose handshakes
    /// failed within the last 10 s.
    pub failing_source_handshakes_per_s: u32,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_links: 20_000,
            max_handshakes: 512,
            max_handshakes_per_source: 64,
            retry_above: 64,
            handshake_timeout_ms: 5_000,
            failing_source_handshakes_per_s: 10,
        }
    }
}

impl AdmissionConfig {
    /// Names the first limit that cannot work.
    pub fn check(&self) -> Result<(), String> {
        let field = |name: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("admission.{name}: {v} is outside {lo}..={hi}"))
            }
        };
        field("max_links", self.max_links as u64, 1, 1_000_000)?;
        field("max_handshakes", self.max_handshakes as u64, 1, 100_000)?;
        field(
            "max_handshakes_per_source",
            self.max_handshakes_per_source as u64,
            1,
            self.max_handshakes as u64,
        )?;
        field(
            "retry_above",
            self.retry_above as u64,
            0,
            self.max_handshakes as u64,
        )?;
        field(
            "handshake_timeout_ms",
            self.handshake_timeout_ms,
            500,
            60_000,
        )?;
        field(
            "failing_source_handshakes_per_s",
            u64::from(self.failing_source_handshakes_per_s),
            1,
            10_000,
        )?;
        Ok(())
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

/// What to do with one connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the handshake (its slot is taken: report how it ends).
    Accept,
    /// Ask the client to prove its address first (stateless).
    Retry,
    /// Tell the client no (CONNECTION_REFUSED).
    Refuse,
    /// Say nothing; the client will send its Initial again.
    Drop,
}

/// How an accepted handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The peer proved a valid chain: now a link.
    Linked,
    /// This end refused the peer (no certificate, a bad chain): counted
    /// as failed, and its source is held to the failing-source budget.
    Refused,
    /// The handshake failed otherwise (the client went away, a protocol
    /// error): counted as failed only.
    Failed,
    /// Not finished within `handshake_timeout_ms`.
    TimedOut,
}

/// Counts of every decision and ending, read by the metrics.
#[derive(Debug, Default)]
pub struct AdmissionCounters {
    pub accepted: AtomicU64,
    pub retried: AtomicU64,
    pub refused_full: AtomicU64,
    pub refused_source: AtomicU64,
    pub dropped_busy: AtomicU64,
    pub dropped_failing: AtomicU64,
    pub linked: AtomicU64,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
    /// Gauges: handshakes in flight and links now.
    pub handshaking: AtomicU64,
    pub links: AtomicU64,
}

impl AdmissionCounters {
    /// (outcome label, total) for every counter.
    pub fn totals(&self) -> [(&'static str, u64); 9] {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("accepted", g(&self.accepted)),
            ("retried", g(&self.retried)),
            ("refused_full", g(&self.refused_full)),
            ("refused_source", g(&self.refused_source)),
            ("dropped_busy", g(&self.dropped_busy)),
            ("dropped_failing", g(&self.dropped_failing)),
            ("linked", g(&self.linked)),
            ("failed", g(&self.failed)),
            ("timed_out", g(&self.timed_out)),
        ]
    }

    pub fn get(&self, outcome: &str) -> u64 {
        self.totals()
            .iter()
            .find(|(o, _)| *o == outcome)
            .map_or(0, |(_, n)| *n)
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// A source whose handshakes failed lately: its budget of new ones.
#[derive(Debug, Clone, Copy)]
struct Failing {
    last_failed: Instant,
    tokens: f64,
    refilled: Instant,
}

/// The accept loop's ledger of handshakes and links.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    per_source: HashMap<IpAddr, usize>,
    failing: HashMap<IpAddr, Failing>,
    handshaking: usize,
    links: usize,
    counters: Arc<AdmissionCounters>,
}

impl Admission {
    pub fn new(config: AdmissionConfig, counters: Arc<AdmissionCounters>) -> Self {
        Admission {
            config,
            per_source: HashMap::new(),
            failing: HashMap::new(),
            handshaking: 0,
            links: 0,
            counters,
        }
    }

    /// Judges an attempt from `source` at `now`; `validated` when the
    /// client has proven its address (a retry token).
    pub fn decide(&mut self, source: IpAddr, validated: bool, now: Instant) -> Decision {
        let c = self.counters.clone();
        if self.handshaking + self.links >= self.config.max_links {
            bump(&c.refused_full);
            return Decision::Refuse;
        }
        if self.handshaking >= self.config.max_handshakes {
            bump(&c.dropped_busy);
            return Decision::Drop;
        }
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        let source_busy = from_source >= self.config.max_handshakes_per_source;
        let failing = self
            .failing
            .get(&source)
            .is_some_and(|f| now.saturating_duration_since(f.last_failed) < FAILURE_MEMORY);
        if !validated && (source_busy || failing || self.handshaking >= self.config.retry_above) {
            bump(&c.retried);
            return Decision::Retry;
        }
        if source_busy {
            bump(&c.refused_source);
            return Decision::Refuse;
        }
        if failing && !self.spend_failing_token(source, now) {
            bump(&c.dropped_failing);
            return Decision::Drop;
        }
        bump(&c.accepted);
        *self.per_source.entry(source).or_default() += 1;
        self.handshaking += 1;
        self.publish();
        Decision::Accept
    }

    /// Takes one of a failing source's tokens (refilled at
    /// `failing_source_handshakes_per_s`, at most a second's worth).
    fn spend_failing_token(&mut self, source: IpAddr, now: Instant) -> bool {
        let rate = f64::from(self.config.failing_source_handshakes_per_s);
        let Some(f) = self.failing.get_mut(&source) else {
            return true;
        };
        let elapsed = now.saturating_duration_since(f.refilled).as_secs_f64();
        f.tokens = (f.tokens + elapsed * rate).min(rate);
        f.refilled = now;
        if f.tokens >= 1.0 {
            f.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Marks `source` as failing at `now`.
    fn failed(&mut self, source: IpAddr, now: Instant) {
        if self.failing.len() >= FAILING_SOURCES && !self.failing.contains_key(&source) {
            self.failing
                .retain(|_, f| now.saturating_duration_since(f.last_failed) < FAILURE_MEMORY);
            if self.failing.len() >= FAILING_SOURCES {
                return;
            }
        }
        let rate = f64::from(self.config.failing_source_handshakes_per_s);
        self.failing
            .entry(source)
            .or_insert(Failing {
                last_failed: now,
                tokens: rate,
                refilled: now,
            })
            .last_failed = now;
    }

    /// An accepted handshake from `source` ended at `now`.
    pub fn ended(&mut self, source: IpAddr, ending: Ending, now: Instant) {
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
        self.handshaking = self.handshaking.saturating_sub(1);
        let c = self.counters.clone();
        match ending {
            Ending::Linked => {
                bump(&c.linked);
                self.links += 1;
            }
            Ending::Refused => {
                bump(&c.failed);
                self.failed(source, now);
            }
            Ending::Failed => bump(&c.failed),
            Ending::TimedOut => bump(&c.timed_out),
        }
        self.publish();
    }

    /// A link (one that was `Linked`) closed.
    pub fn closed(&mut self) {
        self.links = self.links.saturating_sub(1);
        self.publish();
    }

    pub fn handshaking(&self) -> usize {
        self.handshaking
    }

    pub fn links(&self) -> usize {
        self.links
    }

    fn publish(&self) {
        let c = &self.counters;
        c.handshaking
            .store(self.handshaking as u64, Ordering::Relaxed);
        c.links.store(self.links as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn admission(config: AdmissionConfig) -> (Admission, Arc<AdmissionCounters>) {
        let counters = Arc::new(AdmissionCounters::default());
        (Admission::new(config, counters.clone()), counters)
    }

    fn small() -> AdmissionConfig {
        AdmissionConfig {
            max_links: 10,
            max_handshakes: 6,
            max_handshakes_per_source: 3,
            retry_above: 2,
            handshake_timeout_ms: 1_000,
            failing_source_handshakes_per_s: 2,
        }
    }

    #[test]
    fn quiet_times_need_no_retry_but_a_busy_endpoint_asks_for_proof() {
        let t0 = Instant::now();
        let (mut a, c) = admission(small());
        assert_eq!(a.decide(ip(1), false, t0), Decision::Accept);
        assert_eq!(a.decide(ip(2), false, t0), Decision::Accept);
        // Two in flight: strangers must now prove their address...
        assert_eq!(a.decide(ip(3), false, t0), Decision::Retry);
        // ...and those that did are let in.
        assert_eq!(a.decide(ip(3), true, t0), Decision::Accept);
        assert_eq!(a.handshaking(), 3);
        a.ended(ip(1), Ending::Linked, t0);
        a.ended(ip(2), Ending::Failed, t0);
        assert_eq!((a.handshaking(), a.links()), (1, 1));
        assert_eq!(a.decide(ip(4), false, t0), Decision::Accept);
        assert_eq!(c.get("accepted"), 4);
        assert_eq!(c.get("retried"), 1);
        assert_eq!(c.get("linked"), 1);
        assert_eq!(c.get("failed"), 1);
        assert_eq!(c.handshaking.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn one_source_cannot_hold_more_than_its_share_of_handshakes() {
        let t0 = Instant::now();
        let (mut a, c) = admission(AdmissionConfig {
            retry_above: 6,
            ..small()
        });
        for _ in 0..3 {
            assert_eq!(a.decide(ip(9), true, t0), Decision::Accept);
        }
        // Spoofing that source's address gets a retry, not a refusal (so a
        // spoofer cannot lock out the terminals behind a carrier NAT)...
        assert_eq!(a.decide(ip(9), false, t0), Decision::Retry);
        // ...a proven fourth is refused; other sources are not affected.
        assert_eq!(a.decide(ip(9), true, t0), Decision::Refuse);
        assert_eq!(a.decide(ip(8), false, t0), Decision::Accept);
        a.ended(ip(9), Ending::TimedOut, t0);
        assert_eq!(a.decide(ip(9), true, t0), Decision::Accept);
        assert_eq!(c.get("refused_source"), 1);
        assert_eq!(c.get("timed_out"), 1);
    }

    #[test]
    fn past_the_handshake_cap_attempts_are_dropped_and_past_the_link_cap_refused() {
        let t0 = Instant::now();
        let (mut a, c) = admission(small());
        for n in 0..6 {
            assert_eq!(a.decide(ip(n), true, t0), Decision::Accept);
        }
        assert_eq!(a.decide(ip(7), true, t0), Decision::Drop);
        assert_eq!(a.decide(ip(7), false, t0), Decision::Drop);
        for n in 0..6 {
            a.ended(ip(n), Ending::Linked, t0);
        }
        for n in 0..4 {
            assert_eq!(a.decide(ip(n), true, t0), Decision::Accept);
        }
        // Six linked and four handshaking: full.
        assert_eq!(a.decide(ip(7), true, t0), Decision::Refuse);
        a.closed();
        assert_eq!(a.decide(ip(7), true, t0), Decision::Accept);
        assert_eq!(c.get("dropped_busy"), 2);
        assert_eq!(c.get("refused_full"), 1);
        assert_eq!(c.links.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn the_ledger_never_leaks_slots() {
        let t0 = Instant::now();
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
        let (mut a, _) = admission(small());
        let mut open: Vec<IpAddr> = Vec::new();
        let mut links = 0usize;
        for _ in 0..10_000 {
            match rng.gen_range(0..4) {
                0 | 1 => {
                    let s = ip(rng.gen_range(0..4));
                    if a.decide(s, rng.gen_bool(0.5), t0) == Decision::Accept {
                        open.push(s);
                    }
                }
                2 if !open.is_empty() => {
                    let s = open.swap_remove(rng.gen_range(0..open.len()));
                    let linked = rng.gen_bool(0.5);
                    a.ended(
                        s,
                        if linked {
                            Ending::Linked
                        } else if rng.gen_bool(0.5) {
                            Ending::Failed
                        } else {
                            Ending::Refused
                        },
                        t0,
                    );
                    links += usize::from(linked);
                }
                3 if links > 0 => {
                    a.closed();
                    links -= 1;
                }
                _ => {}
            }
            assert_eq!(a.handshaking(), open.len());
            assert_eq!(a.links(), links);
            assert!(a.handshaking() <= 6 && a.handshaking() + a.links() <= 10);
        }
    }

    #[test]
    fn a_source_whose_handshakes_failed_gets_only_a_few_more_a_second() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let (mut a, c) = admission(AdmissionConfig {
            retry_above: 6,
            ..small()
        });
        assert_eq!(a.decide(ip(9), false, t0), Decision::Accept);
        // Gone away is not refused: no budget.
        a.ended(ip(9), Ending::Failed, ms(5));
        assert_eq!(a.decide(ip(9), true, ms(6)), Decision::Accept);
        a.ended(ip(9), Ending::Refused, ms(10));
        // Failing: it must prove its address, even in quiet times...
        assert_eq!(a.decide(ip(9), false, ms(20)), Decision::Retry);
        // ...then gets its budget (2 a second), the rest dropped.
        let decisions: Vec<Decision> = (0..5)
            .map(|k| {
                let d = a.decide(ip(9), true, ms(30 + k));
                if d == Decision::Accept {
                    a.ended(ip(9), Ending::Refused, ms(30 + k));
                }
                d
            })
            .collect();
        use Decision::*;
        assert_eq!(decisions, [Accept, Accept, Drop, Drop, Drop]);
        // A neighbour behind another address is not affected.
        assert_eq!(a.decide(ip(8), true, ms(40)), Accept);
        // Half a second later one more; ten seconds after its last failure
        // the source is forgiven.
        assert_eq!(a.decide(ip(9), true, ms(540)), Accept);
        a.ended(ip(9), Ending::Linked, ms(600));
        assert_eq!(a.decide(ip(9), true, ms(600)), Drop);
        assert_eq!(a.decide(ip(9), false, ms(10_100)), Accept);
        assert_eq!(c.get("dropped_failing"), 4);
    }

    #[test]
    fn limits_that_cannot_work_are_named() {
        assert!(AdmissionConfig::default().check().is_ok());
        let e = AdmissionConfig {
            max_handshakes_per_source: 600,
            ..Default::default()
        }
        .check()
        .unwrap_err();
        assert!(e.contains("max_handshakes_per_source"), "{e}");
        let e = AdmissionConfig {
            handshake_timeout_ms: 10,
            ..Default::default()
        }
        .check()
        .unwrap_err();
        assert!(e.contains("handshake_timeout_ms: 10"), "{e}");
    }
}
