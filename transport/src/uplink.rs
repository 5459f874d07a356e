//! The link upward, one implementation for terminals and platforms: dial
//! the configured upstreams in failover order, avoid one that proved
//! hostile, come back to a preferred one when a background probe finds it
//! answering again, back off while none answers. What happens on a session
//! is the [`Handler`]'s business.
//!
//! The dialling policy is [`DialPlan`], which takes the time as a parameter
//! and is tested without sockets.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use crate::guard::{self, Quarantine, Strikes};

/// Why a session ended (other than the uplink's own reasons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The link went away or broke; try again from the preferred upstream.
    Lost(String),
    /// The upstream sent what fails verification, or was revoked: avoid it.
    Hostile(&'static str),
}

/// What a node does on a session with its upstream.
pub trait Handler: Send {
    /// Runs one session on `conn` until it ends. Refusals strike
    /// `strikes`; the uplink itself ends the session (dropping this future
    /// and closing the connection) when the link turns hostile or a
    /// preferred upstream answers again.
    fn session(
        &mut self,
        conn: &Connection,
        strikes: &Arc<Strikes>,
    ) -> impl Future<Output = SessionEnd> + Send;
}

/// What the uplink is doing, for status and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UplinkState {
    pub connected_to: Option<SocketAddr>,
    /// Sessions opened so far (a migration is not a new session).
    pub sessions: u32,
    /// Upstreams left for being hostile.
    pub hostile: u32,
}

/// First wait before a hostile upstream is tried again when every
/// upstream is being avoided; doubles up to `guard::QUARANTINE`.
pub const HOSTILE_RETRY: Duration = Duration::from_secs(10);

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// Dial these, in order, until one answers.
    Dial(Vec<SocketAddr>),
    /// Nothing to dial before this much time has passed.
    Wait(Duration),
}

/// The dialling policy: order, quarantine, backoff. Sans-IO.
#[derive(Debug)]
pub struct DialPlan {
    upstreams: Vec<SocketAddr>,
    quarantine: Quarantine,
    /// The upstream whose link was just lost: dialled last.
    lost: Option<SocketAddr>,
    backoff: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    /// Consecutive hostile sessions while every upstream was avoided.
    hostile_retries: u32,
    /// When every upstream is avoided, not before this.
    retry_at: Option<Instant>,
    /// Spreads the waits after failed rounds: thousands of terminals that
    /// lost their links together must not redial in lockstep.
    jitter: rand::rngs::StdRng,
}

impl DialPlan {
    pub fn new(upstreams: Vec<SocketAddr>, min_backoff: Duration, max_backoff: Duration) -> Self {
        Self::seeded(upstreams, min_backoff, max_backoff, rand::random())
    }

    /// As `new`, with the jitter's seed given (tests).
    pub fn seeded(
        upstreams: Vec<SocketAddr>,
        min_backoff: Duration,
        max_backoff: Duration,
        seed: u64,
    ) -> Self {
        use rand::SeedableRng;
        DialPlan {
            upstreams,
            quarantine: Quarantine::default(),
            lost: None,
            backoff: Duration::ZERO,
            min_backoff,
            max_backoff,
            hostile_retries: 0,
            retry_at: None,
            jitter: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The upstreams to dial now. Avoided ones are left out; when every one
    /// is avoided, the one avoided longest is tried again, but only after a
    /// wait that grows with each hostile session (a bad link beats no link,
    /// since its cost is bounded per window; redialling it at once would
    /// not be avoiding it).
    pub fn next_round(&mut self, now: Instant) -> Round {
        let usable: Vec<SocketAddr> = self
            .upstreams
            .iter()
            .copied()
            .filter(|a| !self.quarantine.contains(a, now))
            .collect();
        if !usable.is_empty() {
            self.retry_at = None;
            return Round::Dial(guard::failover_order(&usable, self.lost));
        }
        match self.retry_at {
            Some(at) if at > now => Round::Wait(at - now),
            Some(_) => {
                self.retry_at = None;
                Round::Dial(
                    self.quarantine
                        .oldest(&self.upstreams)
                        .into_iter()
                        .collect(),
                )
            }
            None => {
                let wait = HOSTILE_RETRY
                    .saturating_mul(1 << self.hostile_retries.saturating_sub(1).min(4))
                    .min(guard::QUARANTINE);
                self.retry_at = Some(now + wait);
                Round::Wait(wait)
            }
        }
    }

    /// Position of `addr` among the configured upstreams (0 is preferred).
    pub fn rank(&self, addr: SocketAddr) -> usize {
        self.upstreams.iter().position(|a| *a == addr).unwrap_or(0)
    }

    /// Upstreams ranked above `addr` that are not avoided: probed while
    /// connected to `addr`.
    pub fn preferred_over(&mut self, addr: SocketAddr, now: Instant) -> Vec<SocketAddr> {
        let rank = self.rank(addr);
        self.upstreams[..rank]
            .iter()
            .copied()
            .filter(|a| !self.quarantine.contains(a, now))
            .collect()
    }

    pub fn connected(&mut self, _addr: SocketAddr) {
        self.lost = None;
        self.backoff = Duration::ZERO;
    }

    /// A session on `addr` ended. Returns how long to wait before the next
    /// round.
    pub fn ended(&mut self, addr: SocketAddr, end: &SessionEnd, now: Instant) -> Duration {
        match end {
            SessionEnd::Lost(_) => {
                self.lost = Some(addr);
                self.hostile_retries = 0;
            }
            SessionEnd::Hostile(_) => {
                let all_avoided_before = self
                    .upstreams
                    .iter()
                    .filter(|a| **a != addr)
                    .all(|a| self.quarantine.contains(a, now));
                self.quarantine.add(addr, now);
                if all_avoided_before {
                    self.hostile_retries += 1;
                }
            }
        }
        Duration::ZERO
    }

    /// No upstream of the round answered: how long to wait (the backoff,
    /// doubling up to its limit, less a random part of up to half).
    pub fn round_failed(&mut self) -> Duration {
        use rand::Rng;
        self.backoff = (self.backoff * 2).clamp(self.min_backoff, self.max_backoff);
        self.backoff.mul_f64(self.jitter.gen_range(0.5..=1.0))
    }
}

/// Keeps `handler` linked to the best reachable upstream until `shutdown`
/// resolves, and `clock` on the upstream's tree time while linked. The
/// state is published on `state`.
pub async fn run<H: Handler>(
    endpoint: Endpoint,
    upstreams: Vec<SocketAddr>,
    mut handler: H,
    clock: Arc<crate::clock::TreeClock>,
    state: watch::Sender<UplinkState>,
    min_backoff: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut plan = DialPlan::new(upstreams, min_backoff, Duration::from_secs(5));
    tokio::pin!(shutdown);
    loop {
        let round = plan.next_round(Instant::now());
        let wait = match round {
            Round::Wait(w) => {
                info!("every upstream is being avoided; the oldest is tried again in {w:?}");
                w
            }
            Round::Dial(order) => {
                let mut wait = None;
                for addr in order {
                    let conn = tokio::select! {
                        c = crate::connect(&endpoint, addr) => c,
                        _ = &mut shutdown => return,
                    };
                    let conn = match conn {
                        Ok(c) => c,
                        Err(e) => {
                            debug!(%addr, "cannot reach upstream: {e}");
                            continue;
                        }
                    };
                    plan.connected(addr);
                    state.send_modify(|s| {
                        s.connected_to = Some(addr);
                        s.sessions += 1;
                    });
                    info!(%addr, rank = plan.rank(addr), "connected upstream");
                    let strikes = Arc::new(Strikes::default());
                    let back = Arc::new(Notify::new());
                    let _clock = crate::AbortOnDrop::new(tokio::spawn(crate::clock::follow(
                        conn.clone(),
                        clock.clone(),
                    )));
                    let _probe = crate::probe_preferred(
                        &endpoint,
                        &plan.preferred_over(addr, Instant::now()),
                        &back,
                    );
                    let end = tokio::select! {
                        end = handler.session(&conn, &strikes) => Some(end),
                        _ = strikes.hostile() => Some(SessionEnd::Hostile("too many refused messages")),
                        _ = back.notified() => None,
                        _ = &mut shutdown => {
                            conn.close(0u32.into(), b"shutdown");
                            state.send_modify(|s| s.connected_to = None);
                            return;
                        }
                    };
                    state.send_modify(|s| s.connected_to = None);
                    wait = Some(match end {
                        None => {
                            info!(%addr, "a preferred upstream is back");
                            conn.close(0u32.into(), b"preferred");
                            Duration::ZERO
                        }
                        Some(end) => {
                            match &end {
                                SessionEnd::Hostile(why) => {
                                    warn!(%addr, "upstream avoided for {:?}: {why}", guard::QUARANTINE);
                                    state.send_modify(|s| s.hostile += 1);
                                    conn.close(3u32.into(), b"hostile");
                                }
                                SessionEnd::Lost(why) => {
                                    debug!(%addr, "upstream session ended: {why}");
                                    conn.close(0u32.into(), b"leaving");
                                }
                            }
                            plan.ended(addr, &end, Instant::now())
                        }
                    });
                    break; // start again from the preferred upstream
                }
                wait.unwrap_or_else(|| plan.round_failed())
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (1..=n)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    #[test]
    fn a_single_upstream_that_proved_hostile_is_not_redialled_at_once() {
        let a = addrs(1);
        let t0 = Instant::now();
        let mut plan = DialPlan::new(
            a.clone(),
            Duration::from_millis(100),
            Duration::from_secs(5),
        );
        assert_eq!(plan.next_round(t0), Round::Dial(a.clone()));
        plan.connected(a[0]);
        plan.ended(a[0], &SessionEnd::Hostile("flood"), t0);
        // 15 ms later: still avoided, and said so.
        let t1 = t0 + Duration::from_millis(15);
        assert_eq!(plan.next_round(t1), Round::Wait(HOSTILE_RETRY));
        assert_eq!(
            plan.next_round(t1 + Duration::from_secs(1)),
            Round::Wait(HOSTILE_RETRY - Duration::from_secs(1))
        );
        // After the wait, it is tried again (a bad link beats none).
        let t2 = t1 + HOSTILE_RETRY;
        assert_eq!(plan.next_round(t2), Round::Dial(a.clone()));
        // Hostile again: the next wait is longer.
        plan.connected(a[0]);
        plan.ended(a[0], &SessionEnd::Hostile("flood"), t2);
        assert_eq!(plan.next_round(t2), Round::Wait(HOSTILE_RETRY * 2));
        // Once the quarantine is over it is an ordinary upstream again.
        let t3 = t2 + guard::QUARANTINE + Duration::from_secs(1);
        assert_eq!(plan.next_round(t3), Round::Dial(a));
    }

    #[test]
    fn a_hostile_upstream_is_skipped_while_others_answer() {
        let a = addrs(3);
        let t0 = Instant::now();
        let mut plan = DialPlan::new(
            a.clone(),
            Duration::from_millis(100),
            Duration::from_secs(5),
        );
        plan.connected(a[0]);
        plan.ended(a[0], &SessionEnd::Hostile("flood"), t0);
        assert_eq!(plan.next_round(t0), Round::Dial(vec![a[1], a[2]]));
        plan.connected(a[1]);
        // The preferred one is not probed while avoided.
        assert!(plan.preferred_over(a[1], t0).is_empty());
        plan.ended(a[1], &SessionEnd::Lost("closed".into()), t0);
        // The one just lost goes last.
        assert_eq!(plan.next_round(t0), Round::Dial(vec![a[2], a[1]]));
        let later = t0 + guard::QUARANTINE + Duration::from_secs(1);
        assert_eq!(plan.preferred_over(a[1], later), vec![a[0]]);
    }

    #[test]
    fn failed_rounds_back_off_up_to_the_limit() {
        let ms = Duration::from_millis;
        let mut plan = DialPlan::new(addrs(2), ms(100), Duration::from_secs(5));
        let waits: Vec<Duration> = (0..8).map(|_| plan.round_failed()).collect();
        let within = |d: Duration, full: Duration| d >= full / 2 && d <= full;
        assert!(within(waits[0], ms(100)), "{waits:?}");
        assert!(within(waits[1], ms(200)), "{waits:?}");
        assert!(within(*waits.last().unwrap(), ms(5_000)), "{waits:?}");
        plan.connected(addrs(2)[0]);
        assert!(within(plan.round_failed(), ms(100)));
    }

    #[test]
    fn terminals_that_failed_together_do_not_redial_in_lockstep() {
        // A thousand terminals whose rounds all failed at once, four times:
        // their fifth dials (3.75 s later without jitter) spread over
        // seconds.
        let mut waits: Vec<Duration> = (0..1_000u64)
            .map(|seed| {
                let mut plan = DialPlan::seeded(
                    addrs(1),
                    Duration::from_millis(500),
                    Duration::from_secs(5),
                    seed,
                );
                (0..4).map(|_| plan.round_failed()).sum()
            })
            .collect();
        waits.sort();
        let spread = waits[989] - waits[10];
        assert!(
            spread > Duration::from_secs(1),
            "{:?}..{:?}",
            waits[10],
            waits[989]
        );
    }
}
