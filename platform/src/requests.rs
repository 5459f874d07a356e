//! The links' side of publish requests (PROTOCOL.md 6.9): requests from
//! direct children go to the workflow's desk, outcomes for them come back
//! to their sessions; the outbox of this platform's own requests is sent
//! at each connection to a parent of the tier directly above (never to a
//! failover parent further up: one request, one platform that may approve
//! it) and whenever it changes; outcomes from the parent go to the
//! workflow. The review itself lives in `workflow`.

/// The tier that approves requests of a platform of `tier`.
pub fn approving_tier(tier: certs::Tier) -> Option<certs::Tier> {
    match tier {
        certs::Tier::Village => Some(certs::Tier::Town),
        certs::Tier::Town => Some(certs::Tier::District),
        _ => None,
    }
}

use std::sync::Mutex;

use bytes::Bytes;
use protocol::{SignedOutcome, SignedRequest};
use tokio::sync::{broadcast, mpsc};

/// A request from a direct child, checked against its TLS identity.
#[derive(Debug)]
pub struct Incoming {
    pub child_serial: u64,
    pub child_name: String,
    pub request: SignedRequest,
}

/// An outcome from the parent this platform is connected to.
#[derive(Debug)]
pub struct FromParent {
    pub parent_serial: u64,
    pub outcome: SignedOutcome,
}

/// Requests waiting for the desk; beyond this a child's request waits for
/// its next connection.
const QUEUE: usize = 64;

pub struct RequestDesk {
    incoming: mpsc::Sender<Incoming>,
    incoming_rx: Mutex<Option<mpsc::Receiver<Incoming>>>,
    from_parent: mpsc::Sender<FromParent>,
    from_parent_rx: Mutex<Option<mpsc::Receiver<FromParent>>>,
    /// Outcome frames for children: (requester serial, frame).
    outcomes: broadcast::Sender<(u64, Bytes)>,
    /// The outbox changed: the parent link sends it again.
    outbox_changed: tokio::sync::Notify,
}

impl Default for RequestDesk {
    fn default() -> Self {
        let (incoming, rx) = mpsc::channel(QUEUE);
        let (from_parent, prx) = mpsc::channel(QUEUE);
        RequestDesk {
            incoming,
            incoming_rx: Mutex::new(Some(rx)),
            from_parent,
            from_parent_rx: Mutex::new(Some(prx)),
            outcomes: broadcast::channel(256).0,
            outbox_changed: tokio::sync::Notify::new(),
        }
    }
}

impl RequestDesk {
    /// Hands a child's request to the desk; false when the desk is full.
    pub fn submit(&self, r: Incoming) -> bool {
        self.incoming.try_send(r).is_ok()
    }

    /// Hands the parent's outcome to the desk.
    pub fn answered(&self, o: FromParent) -> bool {
        self.from_parent.try_send(o).is_ok()
    }

    /// The desk's inputs, taken once by whoever runs the desk.
    pub fn take_inputs(&self) -> Option<(mpsc::Receiver<Incoming>, mpsc::Receiver<FromParent>)> {
        let a = self
            .incoming_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let b = self
            .from_parent_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        Some((a, b))
    }

    /// Sends an outcome frame to the session of child `serial`, if connected.
    pub fn answer(&self, serial: u64, frame: Bytes) {
        let _ = self.outcomes.send((serial, frame));
    }

    /// Tells the parent link to send the outbox again.
    pub fn outbox_changed(&self) {
        self.outbox_changed.notify_one();
    }

    /// Resolves when the outbox changed.
    pub async fn outbox_waiting(&self) {
        self.outbox_changed.notified().await
    }

    /// Outcomes for children, for child sessions.
    pub fn outcomes(&self) -> broadcast::Receiver<(u64, Bytes)> {
        self.outcomes.subscribe()
    }
}
