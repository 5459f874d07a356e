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
    /// connected.
    up: mpsc::Sender<Bytes>,
}

impl Reporter {
    pub fn new(serial: u64, tier: Tier, up: mpsc::Sender<Bytes>) -> Self {
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
    pub fn send_up(&self, frame: Bytes) {
        if self.up.try_send(frame).is_err() {
            tracing::warn!("queue to the parent is full: a report was dropped");
        }
    }
}
