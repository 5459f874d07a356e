//! Chain validation: from the provisioned root down to a leaf certificate.

use thiserror::Error;

use crate::area::scope_within;
use crate::cert::{Certificate, Tier};
use crate::revocation::RevocationState;

/// Longest chain below the root: district, town, village, terminal.
pub const MAX_CHAIN_LEN: usize = 4;

/// Why a chain is refused. Each failure has its own variant so refusals can
/// be counted by reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChainError {
    #[error("the chain is empty")]
    Empty,
    #[error("the chain has {0} certificates, at most {MAX_CHAIN_LEN} are allowed below the root")]
    TooLong(usize),
    #[error("the provisioned root is not a self-signed root certificate")]
    BadRoot,
    #[error("the chain starts at a root that is not the provisioned one")]
    UntrustedRoot,
    #[error("certificate {serial:016x} names issuer {issuer:016x}, expected {expected:016x}")]
    UnknownIssuer {
        serial: u64,
        issuer: u64,
        expected: u64,
    },
    #[error("certificate {0:016x} has an invalid issuer signature")]
    BadSignature(u64),
    #[error("certificate {serial:016x} is tier {tier}, not below its issuer's tier {issuer_tier}")]
    TierOrder {
        serial: u64,
        tier: Tier,
        issuer_tier: Tier,
    },
    #[error("certificate {0:016x} claims a scope outside its issuer's")]
    ScopeEscalation(u64),
    #[error("certificate {0:016x} claims validity outside its issuer's")]
    ValidityOutsideIssuer(u64),
    #[error("certificate {serial:016x} expired at {not_after}")]
    Expired { serial: u64, not_after: i64 },
    #[error("certificate {serial:016x} is not valid before {not_before}")]
    NotYetValid { serial: u64, not_before: i64 },
    #[error("certificate {0:016x} is revoked")]
    Revoked(u64),
}

impl ChainError {
    /// A short stable name, for metrics and receipts.
    pub fn code(&self) -> &'static str {
        match self {
            ChainError::Empty => "chain_empty",
            ChainError::TooLong(_) => "chain_too_long",
            ChainError::BadRoot => "bad_root",
            ChainError::UntrustedRoot => "untrusted_root",
            ChainError::UnknownIssuer { .. } => "unknown_issuer",
            ChainError::BadSignature(_) => "cert_bad_signature",
            ChainError::TierOrder { .. } => "tier_order",
            ChainError::ScopeEscalation(_) => "scope_escalation",
            ChainError::ValidityOutsideIssuer(_) => "validity_outside_issuer",
            ChainError::Expired { .. } => "cert_expired",
            ChainError::NotYetValid { .. } => "cert_not_yet_valid",
            ChainError::Revoked(_) => "cert_revoked",
        }
    }
}

/// The root a node was provisioned with: the only thing it trusts a priori.
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    root: Certificate,
}

impl TrustAnchor {
    pub fn new(root: Certificate) -> Result<Self, ChainError> {
        let b = root.body();
        if b.tier != Tier::Root || b.issuer_serial != b.serial || !root.signed_by(&b.public_key) {
            return Err(ChainError::BadRoot);
        }
        Ok(TrustAnchor { root })
    }

    pub fn root(&self) -> &Certificate {
        &self.root
    }

    /// Validates `chain` (ordered from the certificate under the root down to
    /// the leaf; a leading copy of the provisioned root is allowed) at `now`
    /// (unix seconds) and returns the leaf.
    pub fn verify<'c>(
        &self,
        chain: &'c [Certificate],
        now: i64,
        revocations: &RevocationState,
    ) -> Result<&'c Certificate, ChainError> {
        let chain = match chain.first() {
            Some(first) if first.tier() == Tier::Root => {
                if first.as_bytes() != self.root.as_bytes() {
                    return Err(ChainError::UntrustedRoot);
                }
                &chain[1..]
            }
            _ => chain,
        };
        let leaf = chain.last().ok_or(ChainError::Empty)?;
        if chain.len() > MAX_CHAIN_LEN {
            return Err(ChainError::TooLong(chain.len()));
        }
        check_valid_at(&self.root, now)?;
        let mut ancestors = vec![self.root.serial()];
        let mut issuer = &self.root;
        for cert in chain {
            check_link(cert, issuer)?;
            check_valid_at(cert, now)?;
            if revocations.is_revoked(cert.serial(), &ancestors) {
                return Err(ChainError::Revoked(cert.serial()));
            }
            ancestors.push(cert.serial());
            issuer = cert;
        }
        Ok(leaf)
    }
}

fn check_link(cert: &Certificate, issuer: &Certificate) -> Result<(), ChainError> {
    let (b, ib) = (cert.body(), issuer.body());
    let serial = b.serial;
    if b.issuer_serial != ib.serial {
        return Err(ChainError::UnknownIssuer {
            serial,
            issuer: b.issuer_serial,
            expected: ib.serial,
        });
    }
    if !cert.signed_by(&ib.public_key) {
        return Err(ChainError::BadSignature(serial));
    }
    if b.tier <= ib.tier {
        return Err(ChainError::TierOrder {
            serial,
            tier: b.tier,
            issuer_tier: ib.tier,
        });
    }
    if !scope_within(&b.scope, &ib.scope) {
        return Err(ChainError::ScopeEscalation(serial));
    }
    if b.not_before < ib.not_before || b.not_after > ib.not_after {
        return Err(ChainError::ValidityOutsideIssuer(serial));
    }
    Ok(())
}

fn check_valid_at(cert: &Certificate, now: i64) -> Result<(), ChainError> {
    let b = cert.body();
    if now < b.not_before {
        return Err(ChainError::NotYetValid {
            serial: b.serial,
            not_before: b.not_before,
        });
    }
    if now > b.not_after {
        return Err(ChainError::Expired {
            serial: b.serial,
            not_after: b.not_after,
        });
    }
    Ok(())
}
