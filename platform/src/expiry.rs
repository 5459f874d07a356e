//! Certificate expiry: an expired chain silences a whole platform (and
//! everything it issues), so the platform warns well ahead, in its log, its
//! metrics and its API.

use std::time::Duration;

use certs::Certificate;
use serde::Serialize;

use crate::relay::Relay;

/// The default warning period: time to issue and deploy a new certificate.
pub const DEFAULT_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// One certificate of the platform's chain (root included) and its expiry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertExpiry {
    pub serial: String,
    pub tier: &'static str,
    pub name: String,
    /// Unix seconds.
    pub not_after: i64,
    /// China time, for the console.
    pub not_after_local: String,
    pub seconds_left: i64,
    /// Within the warning period (or already expired).
    pub warning: bool,
}

/// Every certificate this platform's authority rests on, soonest expiry first.
pub fn chain_expiry(relay: &Relay, now: i64, warning: Duration) -> Vec<CertExpiry> {
    let root = relay.anchor().root();
    let mut certs: Vec<&Certificate> = vec![root];
    certs.extend(
        relay
            .identity
            .chain
            .iter()
            .filter(|c| c.serial() != root.serial()),
    );
    let warn_s = warning.as_secs().min(i64::MAX as u64) as i64;
    let mut rows: Vec<CertExpiry> = certs
        .into_iter()
        .map(|c| {
            let b = c.body();
            let left = b.not_after - now;
            CertExpiry {
                serial: format!("{:016x}", c.serial()),
                tier: c.tier().name(),
                name: b.name.clone(),
                not_after: b.not_after,
                not_after_local: certs::time::format_local(b.not_after),
                seconds_left: left,
                warning: left <= warn_s,
            }
        })
        .collect();
    rows.sort_by_key(|r| r.seconds_left);
    rows
}

/// Logs a warning for each certificate within the warning period (called
/// at start and then hourly).
pub fn warn(relay: &Relay, warning: Duration) {
    for c in chain_expiry(relay, certs::time::unix_now(), warning) {
        if c.warning {
            tracing::warn!(
                serial = %c.serial,
                tier = c.tier,
                name = %c.name,
                expires = %c.not_after_local,
                days_left = c.seconds_left / 86_400,
                "certificate expires soon: issue and deploy a new one before then, \
                 or this platform and everything it signs goes silent"
            );
        }
    }
}
