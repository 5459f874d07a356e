//! Revocation at a platform: the lists in force (one state shared by the
//! relay's verifier and the node's TLS verifiers) and the feed that takes
//! each new one to the child sessions; and, at the district, signing the
//! next list (its previous serials plus the new ones) with the district key.
//! Lists the offline root signs are uploaded as they are.

use std::sync::{Arc, RwLock};

use certs::{RevocationList, RevocationState, Tier};
use tokio::sync::broadcast;

use crate::now_ms;
use crate::relay::Relay;

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("only the district platform signs revocation lists; this is a {0} platform")]
    NotDistrict(Tier),
    #[error("nothing to revoke")]
    Empty,
    #[error("serial {0:016x} is this platform's own certificate")]
    OwnCertificate(u64),
    #[error(transparent)]
    List(#[from] certs::RevocationError),
    #[error("the list was refused: {0}")]
    Refused(#[from] protocol::Refusal),
}

/// The lists in force and the feed of new ones.
pub struct Revocations {
    state: Arc<RwLock<RevocationState>>,
    feed: broadcast::Sender<RevocationList>,
}

impl Revocations {
    /// Over `state`, the node's one revocation state.
    pub fn new(state: Arc<RwLock<RevocationState>>) -> Self {
        Revocations {
            state,
            feed: broadcast::channel(64).0,
        }
    }

    /// The state itself, for the verifier to share.
    pub fn shared(&self) -> Arc<RwLock<RevocationState>> {
        self.state.clone()
    }

    /// A copy of what is in force (no lock is held while using it).
    pub fn current(&self) -> RevocationState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every list in force, for a child that just connected.
    pub fn lists(&self) -> Vec<RevocationList> {
        self.current().lists().cloned().collect()
    }

    /// (signer, number) of every list in force.
    pub fn numbers(&self) -> Vec<(u64, u64)> {
        self.current().numbers().collect()
    }

    /// New lists as they apply, for child sessions.
    pub fn subscribe(&self) -> broadcast::Receiver<RevocationList> {
        self.feed.subscribe()
    }

    /// Tells the child sessions of a list just applied.
    pub fn announce(&self, list: RevocationList) {
        let _ = self.feed.send(list);
    }
}

/// Signs and applies the district's next list, adding `serials`.
pub fn revoke(relay: &Relay, serials: &[u64]) -> Result<RevocationList, RevokeError> {
    let cert = relay.identity.cert();
    if cert.tier() != Tier::District {
        return Err(RevokeError::NotDistrict(cert.tier()));
    }
    if serials.is_empty() {
        return Err(RevokeError::Empty);
    }
    let own = cert.serial();
    if let Some(s) = serials.iter().find(|s| **s == own) {
        return Err(RevokeError::OwnCertificate(*s));
    }
    let current = relay
        .revocations
        .lists()
        .into_iter()
        .find(|l| l.signer_serial == own);
    let list = RevocationList::next(&relay.identity, current.as_ref(), serials, now_ms() / 1000)?;
    relay.apply_revocation(list.clone(), crate::now_ms())?;
    Ok(list)
}
