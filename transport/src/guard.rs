//! Defence against a hostile upstream (a compromised relay, S2): refusals
//! are counted per link, and an upstream that keeps sending what fails
//! verification is dropped and avoided for a while, so a flood costs a
//! bounded number of signature checks and the node (terminal or platform)
//! fails over to an honest platform. An honest relay verifies before
//! forwarding and never comes near the limit.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Refused frames on one stream before the stream is stopped.
pub const STREAM_REFUSALS: u32 = 8;
/// Refusals from one upstream within `WINDOW` that make it hostile.
pub const LINK_REFUSALS: usize = 32;
pub const WINDOW: Duration = Duration::from_secs(10);
/// How long a hostile upstream is avoided (then tried again, last).
pub const QUARANTINE: Duration = Duration::from_secs(120);

/// Refusal times of one link.
#[derive(Debug, Default)]
pub struct LinkGuard {
    times: VecDeque<Instant>,
}

impl LinkGuard {
    /// Records a refusal; true when the link has become hostile.
    pub fn strike(&mut self, now: Instant) -> bool {
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.times.len() >= LINK_REFUSALS
    }
}

/// The order to dial `usable` upstreams in: as configured, except that the
/// one whose link was just lost goes last (a dead platform costs a whole
/// handshake timeout, and the others may be up).
pub fn failover_order(usable: &[SocketAddr], lost: Option<SocketAddr>) -> Vec<SocketAddr> {
    usable
        .iter()
        .copied()
        .filter(|a| Some(*a) != lost)
        .chain(lost.filter(|l| usable.contains(l)))
        .collect()
}

/// A link's guard shared by its session and its stream tasks: any of them
/// strikes, the session waits on `hostile()`.
#[derive(Debug, Default)]
pub struct Strikes {
    guard: std::sync::Mutex<LinkGuard>,
    hostile: tokio::sync::Notify,
}

impl Strikes {
    /// Counts a refusal against the link; wakes the session when the link
    /// has turned hostile.
    pub fn strike(&self) {
        let hostile = self
            .guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .strike(Instant::now());
        if hostile {
            self.hostile.notify_one();
        }
    }

    /// Resolves once the link has turned hostile.
    pub async fn hostile(&self) {
        self.hostile.notified().await
    }
}

/// Upstreams currently avoided.
#[derive(Debug, Default)]
pub struct Quarantine {
    until: HashMap<SocketAddr, Instant>,
}

impl Quarantine {
    pub fn add(&mut self, addr: SocketAddr, now: Instant) {
        self.until.insert(addr, now + QUARANTINE);
    }

    pub fn contains(&mut self, addr: &SocketAddr, now: Instant) -> bool {
        self.until.retain(|_, t| *t > now);
        self.until.contains_key(addr)
    }

    /// Of `addrs`, the one whose quarantine ends first (or that is not
    /// avoided at all).
    pub fn oldest(&self, addrs: &[SocketAddr]) -> Option<SocketAddr> {
        addrs
            .iter()
            .copied()
            .min_by_key(|a| self.until.get(a).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_turns_hostile_only_on_a_burst() {
        let mut g = LinkGuard::default();
        let t0 = Instant::now();
        // One refusal a second for a minute: an honest link's noise.
        for s in 0..60 {
            assert!(!g.strike(t0 + Duration::from_secs(s)));
        }
        let t1 = t0 + Duration::from_secs(100);
        let hostile = (0..LINK_REFUSALS).map(|i| g.strike(t1 + Duration::from_millis(i as u64)));
        assert_eq!(hostile.filter(|h| *h).count(), 1);
    }

    #[test]
    fn the_lost_upstream_is_tried_last() {
        let a: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        assert_eq!(failover_order(&a, None), a);
        assert_eq!(failover_order(&a, Some(a[0])), vec![a[1], a[2], a[0]]);
        // A lost upstream that is no longer usable (quarantined) stays out.
        assert_eq!(failover_order(&a[1..], Some(a[0])), a[1..].to_vec());
    }

    #[test]
    fn quarantine_expires() {
        let mut q = Quarantine::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let t0 = Instant::now();
        q.add(a, t0);
        assert!(q.contains(&a, t0 + Duration::from_secs(1)));
        assert!(!q.contains(&a, t0 + QUARANTINE + Duration::from_secs(1)));
    }
}

/// A receiver's count of one broadcast stream's refusals: each strikes the
/// link once; after `STREAM_REFUSALS` the stream is stopped. A stream is
/// read on past a refused header (a forged header may be put ahead of the
/// genuine one); the verifier counts the segments that follow a refused
/// header once, with it (`Verifier::header_refused`).
#[derive(Debug, Default)]
pub struct StreamRefusals {
    refused: u32,
}

impl StreamRefusals {
    /// Notes one frame's verdict; true when the stream must be stopped.
    pub fn note(&mut self, refused: bool) -> bool {
        self.refused += refused as u32;
        self.refused >= STREAM_REFUSALS
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[test]
    fn a_stream_is_stopped_after_its_refusals() {
        let mut s = StreamRefusals::default();
        assert!(!s.note(false));
        for _ in 1..STREAM_REFUSALS {
            assert!(!s.note(true));
        }
        assert!(s.note(true));
    }
}
