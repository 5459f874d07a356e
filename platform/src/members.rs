//! The nodes below a platform whose reports can be checked: each child
//! platform announces (kind 25, `Member`) every node under it, so every tier
//! up to the district holds the key of every node whose receipts, status
//! and events it receives, and a compromised relay can drop reports but
//! never forge them.

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;
use certs::{Certificate, PublicKey};
use protocol::Message;

struct Entry {
    key: PublicKey,
    chain: Vec<Certificate>,
    /// The announcement, to pass on to a new parent.
    frame: Bytes,
}

#[derive(Default)]
pub struct Members {
    map: RwLock<HashMap<u64, Entry>>,
}

impl Members {
    /// Keeps the node whose verified chain (below the root) is `chain` and
    /// whose leaf is `leaf`. Returns its announcement when it is new (to be
    /// passed up).
    pub fn add(&self, chain: Vec<Certificate>, leaf: &Certificate) -> Option<Bytes> {
        let frame = Bytes::from(
            Message::Member(protocol::Member {
                chain: chain.clone(),
            })
            .encode(),
        );
        let entry = Entry {
            key: *leaf.public_key(),
            chain,
            frame: frame.clone(),
        };
        let fresh = self
            .map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(leaf.serial(), entry)
            .is_none();
        fresh.then_some(frame)
    }

    /// The key of a node below, if it was announced.
    pub fn key(&self, serial: u64) -> Option<PublicKey> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&serial)
            .map(|m| m.key)
    }

    /// The terminals below: (serial, area) from each one's certificate.
    pub fn terminals(&self) -> Vec<(u64, certs::AreaCode)> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(serial, m)| {
                let leaf = m.chain.last()?;
                (leaf.tier() == certs::Tier::Terminal)
                    .then(|| leaf.scope().first().map(|a| (*serial, *a)))
                    .flatten()
            })
            .collect()
    }

    /// Every announcement, for a newly connected parent.
    pub fn frames(&self) -> Vec<Bytes> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|m| m.frame.clone())
            .collect()
    }

    /// Forgets the nodes whose chain `valid` no longer accepts (revoked).
    pub fn retain(&self, valid: impl Fn(&[Certificate]) -> bool) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, m| valid(&m.chain));
    }
}
