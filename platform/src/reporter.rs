//! Reporting up: refusals aggregated into security events (at most two per
//! reason per second, whatever an attacker sends), and the queue of frames
//! for the parent (this platform's events, and the receipts, status and
//! events of the nodes below passed up unchanged).

use std::sync::Mutex;

use bytes::Bytes;
use certs::Tier;
use protocol::{BroadcastId, EventReporter, Refusal, SecurityEvent};
use tokio::sync::mpsc;

pub struct Reporter {
    events: Mutex<EventReporter>,
    /// Frames for the parent, in order; they wait here while no parent is
    /// connected. None at the top of the tree, where nothing goes further
    /// up (a queue nobody reads fills, and says so at every report).
    up: Option<mpsc::Sender<Bytes>>,
}

/// What became of a frame for the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentUp {
    Queued,
    /// This platform is the top of the tree.
    NoParent,
    /// The queue is full (the parent has been unreachable for long).
    Dropped,
}

impl Reporter {
    pub fn new(serial: u64, tier: Tier, up: Option<mpsc::Sender<Bytes>>) -> Self {
        Reporter {
            events: Mutex::new(EventReporter::new(
                serial,
                tier,
                EventReporter::DEFAULT_WINDOW_MS,
            )),
            up,
        }
    }

    fn events(&self) -> std::sync::MutexGuard<'_, EventReporter> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a refusal; the event to send now, if one is due.
    pub fn note(
        &self,
        r: &Refusal,
        broadcast: Option<BroadcastId>,
        offender: u64,
        now_ms: i64,
    ) -> Option<SecurityEvent> {
        tracing::debug!(reason = r.reason().name(), "refused: {r}");
        self.events().note(r.reason(), broadcast, offender, now_ms)
    }

    /// Aggregated events whose window ended.
    pub fn due(&self, now_ms: i64) -> Vec<SecurityEvent> {
        self.events().due(now_ms)
    }

    /// Queues a frame for the parent; a full queue drops it (and says so).
    pub fn send_up(&self, frame: Bytes) -> SentUp {
        let Some(up) = &self.up else {
            return SentUp::NoParent;
        };
        match up.try_send(frame) {
            Ok(()) => SentUp::Queued,
            Err(_) => {
                tracing::warn!("queue to the parent is full: a report was dropped");
                SentUp::Dropped
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_of_the_tree_queues_nothing_up() {
        let top = Reporter::new(1, Tier::District, None);
        for _ in 0..10_000 {
            assert_eq!(top.send_up(Bytes::from_static(b"report")), SentUp::NoParent);
        }
    }

    #[test]
    fn below_the_top_reports_wait_for_the_parent_up_to_the_queue() {
        let (tx, mut rx) = mpsc::channel(2);
        let village = Reporter::new(2, Tier::Village, Some(tx));
        assert_eq!(village.send_up(Bytes::from_static(b"a")), SentUp::Queued);
        assert_eq!(village.send_up(Bytes::from_static(b"b")), SentUp::Queued);
        assert_eq!(village.send_up(Bytes::from_static(b"c")), SentUp::Dropped);
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"a"));
    }
}
