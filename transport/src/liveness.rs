//! Noticing a dead upstream while a broadcast flows. A terminal link keeps
//! a slow keep-alive (`TERMINAL_KEEP_ALIVE`: its relay pays for every
//! packet of thousands of idle links), so its idle timeout cannot tell a
//! dead upstream quickly. While a broadcast stream is open, though, the
//! upstream has more to send: a link that goes quiet then is asked once
//! (a time probe, answered at once by a live upstream) and, if it stays
//! quiet, given up so the terminal fails over. A source that merely
//! pauses (live speech) leaves the link answering. Sans-IO: time and the
//! connection's received-packet count are parameters.

use std::time::{Duration, Instant};

/// Quiet this long with a broadcast open: probe.
pub const PROBE_AFTER: Duration = Duration::from_millis(500);
/// Probes no closer than this.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Quiet this long with a broadcast open, probes unanswered: dead.
pub const DEAD_AFTER: Duration = Duration::from_millis(2_000);

/// More audio is expected on a broadcast stream whose audio in hand runs
/// out within this: a link quiet then is dead, or soon will be to the
/// listener. Long enough for the failover to finish before the audio in
/// hand does: `DEAD_AFTER` of quiet, a new link (a handshake over 4G) and
/// the first segment from the new upstream, with the playout delay and
/// presentation window as slack. A stream holding more (a recorded alert
/// sent far ahead, a broadcast scheduled later) may be quiet for long, so
/// a relay that batches recorded audio keeps every child above this
/// between batches (`platform::broadcast::BATCH_MIN_LEAD_US`).
pub const EXPECT_WITHIN_US: i64 = 3_500_000;

/// What to do about a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Alive,
    /// Send a probe now.
    Probe,
    /// Nothing heard for `DEAD_AFTER` while a broadcast is open.
    Dead,
}

/// One link's watch.
#[derive(Debug)]
pub struct Watch {
    received: u64,
    heard_at: Instant,
    probed_at: Option<Instant>,
    expecting: bool,
}

impl Watch {
    pub fn new(received: u64, now: Instant) -> Self {
        Watch {
            received,
            heard_at: now,
            probed_at: None,
            expecting: false,
        }
    }

    /// `received`: packets received on the link so far; `expecting`: a
    /// broadcast stream is open. While nothing is expected, quiet is
    /// normal (the idle timeout covers it) and restarts the count.
    pub fn check(&mut self, received: u64, expecting: bool, now: Instant) -> Verdict {
        let opened = expecting && !self.expecting;
        self.expecting = expecting;
        if received != self.received || !expecting || opened {
            self.received = received;
            self.heard_at = now;
            self.probed_at = None;
            return Verdict::Alive;
        }
        let quiet = now.saturating_duration_since(self.heard_at);
        if quiet >= DEAD_AFTER {
            return Verdict::Dead;
        }
        let probe_due = self
            .probed_at
            .is_none_or(|at| now.saturating_duration_since(at) >= PROBE_EVERY);
        if quiet >= PROBE_AFTER && probe_due {
            self.probed_at = Some(now);
            return Verdict::Probe;
        }
        Verdict::Alive
    }
}

/// Sends a probe on `conn`: a time request, which a live upstream answers
/// at once (the answer is not a sample; `clock::follow` drops it).
pub fn probe(conn: &quinn::Connection, local_now_us: i64) {
    let request = protocol::Message::TimeRequest(protocol::control::TimeRequest {
        t0_us: local_now_us,
    });
    let _ = conn.send_datagram(bytes::Bytes::from(request.encode()));
}

/// Packets received on `conn` so far.
pub fn received(conn: &quinn::Connection) -> u64 {
    conn.stats().udp_rx.datagrams
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_link_with_a_broadcast_open_is_probed_then_given_up() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut w = Watch::new(10, t0);
        // Heard from: alive.
        assert_eq!(w.check(11, true, ms(400)), Verdict::Alive);
        // Quiet for 500 ms: one probe, then one per 500 ms.
        assert_eq!(w.check(11, true, ms(800)), Verdict::Alive);
        assert_eq!(w.check(11, true, ms(900)), Verdict::Probe);
        assert_eq!(w.check(11, true, ms(1_100)), Verdict::Alive);
        assert_eq!(w.check(11, true, ms(1_400)), Verdict::Probe);
        // An answer: alive again, and the count starts over.
        assert_eq!(w.check(12, true, ms(1_500)), Verdict::Alive);
        assert_eq!(w.check(12, true, ms(3_400)), Verdict::Probe);
        assert_eq!(w.check(12, true, ms(3_500)), Verdict::Dead);
    }

    #[test]
    fn quiet_is_normal_while_nothing_is_expected() {
        let t0 = Instant::now();
        let mut w = Watch::new(0, t0);
        for s in 1..100 {
            assert_eq!(
                w.check(0, false, t0 + Duration::from_secs(s)),
                Verdict::Alive
            );
        }
        // A broadcast opens after a long quiet: the count starts there.
        let open = t0 + Duration::from_secs(100);
        assert_eq!(w.check(0, true, open), Verdict::Alive);
        assert_eq!(
            w.check(0, true, open + Duration::from_millis(499)),
            Verdict::Alive
        );
        assert_eq!(
            w.check(0, true, open + Duration::from_millis(2_000)),
            Verdict::Dead
        );
    }
}
