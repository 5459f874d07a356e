//! Revocation issued at the district: the district's API signs a new list
//! (its previous serials plus the new ones) with the district key. Lists the
//! offline root signs are uploaded as they are.

use certs::{RevocationList, Tier};

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
        .revocation_lists()
        .into_iter()
        .find(|l| l.signer_serial == own);
    let list = RevocationList::next(&relay.identity, current.as_ref(), serials, now_ms() / 1000)?;
    relay.apply_revocation(list.clone(), crate::now_ms())?;
    Ok(list)
}
