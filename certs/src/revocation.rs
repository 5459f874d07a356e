//! Signed revocation lists and the state of the newest ones a node accepted.
//!
//! A list is signed by the root or by a district. It revokes a certificate
//! only when its signer is the root or an ancestor of that certificate in the
//! chain being checked, so a district can never revoke its own issuer or a
//! neighbour. Each signer's lists carry a number that only grows: an older
//! list never replaces a newer one.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::cert::{Certificate, Tier, MAX_CERT_BYTES};
use crate::chain::{ChainError, TrustAnchor, MAX_CHAIN_LEN};
use crate::encoding::{DecodeError, Reader, Writer};
use crate::identity::Identity;
use crate::key::{SecretKey, SignContext, Signature};

pub const CRL_VERSION: u8 = 1;
pub const MAX_REVOKED: usize = 10_000;
pub const MAX_CRL_BYTES: usize =
    1 + 8 + 8 + 8 + 2 + 8 * MAX_REVOKED + 1 + MAX_CHAIN_LEN * (4 + MAX_CERT_BYTES) + 64;
pub const CRL_PEM_TAG: &str = "EBS REVOCATION LIST";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RevocationError {
    #[error("revocation list signer chain: {0}")]
    Chain(#[from] ChainError),
    #[error("only the root or a district signs revocation lists, not a {0}")]
    SignerTier(Tier),
    #[error("revocation list names signer {named:016x} but is carried with {actual:016x}")]
    SignerMismatch { named: u64, actual: u64 },
    #[error("revocation list signature is invalid")]
    BadSignature,
    #[error("revocation list number {offered} is not newer than the current {current}")]
    Rollback { current: u64, offered: u64 },
    #[error("too many revoked serials (at most {MAX_REVOKED})")]
    TooMany,
    #[error("the previous list was signed by {previous:016x}, not by {signer:016x}")]
    NotSignersList { previous: u64, signer: u64 },
}

impl RevocationError {
    pub fn code(&self) -> &'static str {
        match self {
            RevocationError::Chain(e) => e.code(),
            RevocationError::SignerTier(_) => "crl_signer_tier",
            RevocationError::SignerMismatch { .. } => "crl_signer_mismatch",
            RevocationError::BadSignature => "crl_bad_signature",
            RevocationError::Rollback { .. } => "crl_rollback",
            RevocationError::TooMany => "crl_too_many",
            RevocationError::NotSignersList { .. } => "crl_not_signers_list",
        }
    }
}

/// A signed list of revoked certificate serials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    pub signer_serial: u64,
    pub number: u64,
    /// Unix seconds.
    pub issued_at: i64,
    pub revoked: Vec<u64>,
    /// Chain from under the root to the signer; empty when the root signs.
    pub signer_chain: Vec<Certificate>,
    signature: Signature,
}

impl RevocationList {
    fn encode_tbs(signer_serial: u64, number: u64, issued_at: i64, revoked: &[u64]) -> Vec<u8> {
        let mut w = Writer::with_capacity(32 + 8 * revoked.len());
        w.u8(CRL_VERSION)
            .u64(signer_serial)
            .u64(number)
            .i64(issued_at)
            .u16(revoked.len() as u16);
        for s in revoked {
            w.u64(*s);
        }
        w.into_vec()
    }

    /// Signs a list. `signer_chain` ends with the signer's certificate (empty
    /// for the root, whose serial is then `signer_serial`).
    pub fn sign(
        signer_serial: u64,
        signer_chain: Vec<Certificate>,
        key: &SecretKey,
        number: u64,
        issued_at: i64,
        mut revoked: Vec<u64>,
    ) -> Result<Self, RevocationError> {
        revoked.sort_unstable();
        revoked.dedup();
        if revoked.len() > MAX_REVOKED {
            return Err(RevocationError::TooMany);
        }
        let tbs = Self::encode_tbs(signer_serial, number, issued_at, &revoked);
        let signature = key.sign(SignContext::RevocationList, &[&tbs]);
        Ok(RevocationList {
            signer_serial,
            number,
            issued_at,
            revoked,
            signer_chain,
            signature,
        })
    }

    /// The signer's next list: the serials of its `previous` list plus
    /// `add`, numbered one higher (1 for a first list). The root or a
    /// district signs.
    pub fn next(
        signer: &Identity,
        previous: Option<&RevocationList>,
        add: &[u64],
        issued_at: i64,
    ) -> Result<Self, RevocationError> {
        let cert = signer.cert();
        if !matches!(cert.tier(), Tier::Root | Tier::District) {
            return Err(RevocationError::SignerTier(cert.tier()));
        }
        let mut revoked = add.to_vec();
        let mut number = 1;
        if let Some(prev) = previous {
            if prev.signer_serial != cert.serial() {
                return Err(RevocationError::NotSignersList {
                    previous: prev.signer_serial,
                    signer: cert.serial(),
                });
            }
            revoked.extend_from_slice(&prev.revoked);
            number = prev.number + 1;
        }
        Self::sign(
            cert.serial(),
            signer.chain_below_root(),
            &signer.key,
            number,
            issued_at,
            revoked,
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(&Self::encode_tbs(
            self.signer_serial,
            self.number,
            self.issued_at,
            &self.revoked,
        ));
        w.u8(self.signer_chain.len() as u8);
        for c in &self.signer_chain {
            w.bytes32(c.as_bytes());
        }
        w.raw(&self.signature);
        w.into_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_CRL_BYTES {
            return Err(DecodeError::TooLong {
                field: "revocation list",
                len: bytes.len(),
                max: MAX_CRL_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("revocation list version")?;
        if version != CRL_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let signer_serial = r.u64("signer serial")?;
        let number = r.u64("list number")?;
        let issued_at = r.i64("issued at")?;
        let n = r.count16(MAX_REVOKED, "revoked serials")?;
        let mut revoked = Vec::with_capacity(n);
        for _ in 0..n {
            revoked.push(r.u64("revoked serial")?);
        }
        let chain_len = r.u8("signer chain length")? as usize;
        if chain_len > MAX_CHAIN_LEN {
            return Err(DecodeError::TooLong {
                field: "signer chain",
                len: chain_len,
                max: MAX_CHAIN_LEN,
            });
        }
        let mut signer_chain = Vec::with_capacity(chain_len);
        for _ in 0..chain_len {
            signer_chain.push(Certificate::decode(
                r.bytes32(MAX_CERT_BYTES, "signer certificate")?,
            )?);
        }
        let signature = r.array("revocation list signature")?;
        r.finish()?;
        Ok(RevocationList {
            signer_serial,
            number,
            issued_at,
            revoked,
            signer_chain,
            signature,
        })
    }

    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new(CRL_PEM_TAG, self.encode()))
    }

    pub fn from_pem(text: &str) -> Result<Self, DecodeError> {
        let block = pem::parse(text).map_err(|e| DecodeError::invalid("PEM", e.to_string()))?;
        if block.tag() != CRL_PEM_TAG {
            return Err(DecodeError::invalid(
                "PEM",
                format!("expected {CRL_PEM_TAG}"),
            ));
        }
        Self::decode(block.contents())
    }

    /// Checks the signer and the signature against the trust anchor.
    pub fn verify(
        &self,
        anchor: &TrustAnchor,
        now: i64,
        current: &RevocationState,
    ) -> Result<(), RevocationError> {
        let key = if self.signer_chain.is_empty() {
            let root = anchor.root();
            if root.serial() != self.signer_serial {
                return Err(RevocationError::SignerMismatch {
                    named: self.signer_serial,
                    actual: root.serial(),
                });
            }
            *root.public_key()
        } else {
            let leaf = anchor.verify(&self.signer_chain, now, current)?;
            if leaf.serial() != self.signer_serial {
                return Err(RevocationError::SignerMismatch {
                    named: self.signer_serial,
                    actual: leaf.serial(),
                });
            }
            if leaf.tier() != Tier::District {
                return Err(RevocationError::SignerTier(leaf.tier()));
            }
            *leaf.public_key()
        };
        let tbs = Self::encode_tbs(
            self.signer_serial,
            self.number,
            self.issued_at,
            &self.revoked,
        );
        if !key.verify(SignContext::RevocationList, &[&tbs], &self.signature) {
            return Err(RevocationError::BadSignature);
        }
        Ok(())
    }
}

/// What happened when a list was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The list is newer than what this signer had and now applies.
    Updated,
    /// The very same list was already current (lists are re-pushed often).
    AlreadyCurrent,
}

/// The newest accepted list of each signer.
#[derive(Debug, Clone, Default)]
pub struct RevocationState {
    lists: BTreeMap<u64, RevocationList>,
}

impl RevocationState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies `list` and makes it current for its signer if it is newer.
    pub fn apply(
        &mut self,
        list: RevocationList,
        anchor: &TrustAnchor,
        now: i64,
    ) -> Result<Applied, RevocationError> {
        if let Some(current) = self.lists.get(&list.signer_serial) {
            if current == &list {
                return Ok(Applied::AlreadyCurrent);
            }
            if list.number <= current.number {
                return Err(RevocationError::Rollback {
                    current: current.number,
                    offered: list.number,
                });
            }
        }
        list.verify(anchor, now, self)?;
        self.lists.insert(list.signer_serial, list);
        Ok(Applied::Updated)
    }

    /// True when a list signed by one of `ancestors` (the root first) revokes
    /// `serial`.
    pub fn is_revoked(&self, serial: u64, ancestors: &[u64]) -> bool {
        ancestors.iter().any(|a| {
            self.lists
                .get(a)
                .is_some_and(|l| l.revoked.binary_search(&serial).is_ok())
        })
    }

    /// The current list number of each signer, for status reports.
    pub fn numbers(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.lists.iter().map(|(s, l)| (*s, l.number))
    }

    pub fn lists(&self) -> impl Iterator<Item = &RevocationList> {
        self.lists.values()
    }
}
