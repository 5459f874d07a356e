//! Certificates: who a key belongs to, which tier it is, which areas it may
//! address, and when it is valid. Encoded in the bounded binary format of
//! `encoding`; the signature covers every byte before it.

use std::fmt;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::area::{scope_within, AreaCode, ResourceCode};
use crate::encoding::{DecodeError, Reader, Writer};
use crate::key::{PublicKey, SecretKey, SignContext, Signature};

pub const CERT_VERSION: u8 = 1;
pub const MAX_NAME_BYTES: usize = 128;
pub const MAX_SCOPE_AREAS: usize = 64;
/// Largest possible encoded certificate; decoders refuse anything longer.
pub const MAX_CERT_BYTES: usize =
    1 + 8 + 1 + 2 + MAX_NAME_BYTES + 23 + 2 + 8 * MAX_SCOPE_AREAS + 8 + 8 + 32 + 8 + 64;
pub const CERT_PEM_TAG: &str = "EBS CERTIFICATE";

/// Tiers, from the top. A certificate's tier is strictly below its issuer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Root = 0,
    District = 1,
    Town = 2,
    Village = 3,
    Terminal = 4,
}

impl Tier {
    pub fn from_u8(v: u8) -> Option<Tier> {
        Some(match v {
            0 => Tier::Root,
            1 => Tier::District,
            2 => Tier::Town,
            3 => Tier::Village,
            4 => Tier::Terminal,
            _ => return None,
        })
    }

    /// Tiers that run a playout-control platform and may issue broadcasts.
    pub fn is_platform(self) -> bool {
        matches!(self, Tier::District | Tier::Town | Tier::Village)
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Root => "root",
            Tier::District => "district",
            Tier::Town => "town",
            Tier::Village => "village",
            Tier::Terminal => "terminal",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Tier::Root,
            Tier::District,
            Tier::Town,
            Tier::Village,
            Tier::Terminal,
        ]
        .into_iter()
        .find(|t| t.name() == s)
        .ok_or_else(|| format!("unknown tier {s:?} (root, district, town, village, terminal)"))
    }
}

/// What a certificate says, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBody {
    pub serial: u64,
    pub tier: Tier,
    pub name: String,
    pub resource_code: ResourceCode,
    pub scope: Vec<AreaCode>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    pub public_key: PublicKey,
    /// Serial of the issuing certificate; a root names itself.
    pub issuer_serial: u64,
}

impl CertBody {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        w.u8(CERT_VERSION)
            .u64(self.serial)
            .u8(self.tier as u8)
            .str16(&self.name)
            .raw(self.resource_code.digits())
            .u16(self.scope.len() as u16);
        for a in &self.scope {
            w.u64(a.as_u64());
        }
        w.i64(self.not_before)
            .i64(self.not_after)
            .raw(self.public_key.as_bytes())
            .u64(self.issuer_serial);
        w.into_vec()
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8("certificate version")?;
        if version != CERT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let serial = r.u64("serial")?;
        let tier_byte = r.u8("tier")?;
        let tier = Tier::from_u8(tier_byte)
            .ok_or_else(|| DecodeError::invalid("tier", tier_byte.to_string()))?;
        let name = r.str16(MAX_NAME_BYTES, "name")?.to_string();
        let resource_code = ResourceCode::from_digits(r.array("resource code")?)
            .map_err(|e| DecodeError::invalid("resource code", e.to_string()))?;
        let n = r.count16(MAX_SCOPE_AREAS, "scope")?;
        let mut scope = Vec::with_capacity(n);
        for _ in 0..n {
            scope.push(
                AreaCode::from_u64(r.u64("scope area")?)
                    .map_err(|e| DecodeError::invalid("scope area", e.to_string()))?,
            );
        }
        Ok(CertBody {
            serial,
            tier,
            name,
            resource_code,
            scope,
            not_before: r.i64("not before")?,
            not_after: r.i64("not after")?,
            public_key: PublicKey::from_bytes(r.array("public key")?),
            issuer_serial: r.u64("issuer serial")?,
        })
    }
}

/// A signed certificate, holding the exact bytes it was decoded from.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    body: CertBody,
    signature: Signature,
    encoded: Vec<u8>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Certificate({} {} {:?} serial {:016x})",
            self.body.tier,
            self.body.name,
            self.body.resource_code.as_str(),
            self.body.serial
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IssueError {
    #[error("a {subject} certificate cannot be issued by a {issuer} certificate: the tier must be strictly lower")]
    TierOrder { subject: Tier, issuer: Tier },
    #[error("scope {0} lies outside the issuer's scope")]
    ScopeOutsideIssuer(String),
    #[error("validity must lie inside the issuer's ({issuer_not_before}..{issuer_not_after})")]
    ValidityOutsideIssuer {
        issuer_not_before: i64,
        issuer_not_after: i64,
    },
    #[error("the issuer certificate expired or is not yet valid at {0}")]
    IssuerNotValid(i64),
    #[error("the issuer key does not match the issuer certificate")]
    WrongIssuerKey,
    #[error("a certificate needs between 1 and {MAX_SCOPE_AREAS} scope areas")]
    ScopeSize,
    #[error("the subject name must be 1 to {MAX_NAME_BYTES} bytes")]
    NameLength,
    #[error("not before must be earlier than not after")]
    EmptyValidity,
    #[error("a root certificate can only be self-signed")]
    RootNotSelfSigned,
}

/// What the issuer chooses for a new certificate.
#[derive(Debug, Clone)]
pub struct CertRequest {
    pub tier: Tier,
    pub name: String,
    pub resource_code: ResourceCode,
    pub scope: Vec<AreaCode>,
    pub not_before: i64,
    pub not_after: i64,
    pub public_key: PublicKey,
}

fn random_serial() -> u64 {
    use rand::RngCore;
    // Random 63-bit serials: unique across independent issuers without coordination.
    (rand::rngs::OsRng.next_u64() >> 1).max(1)
}

impl Certificate {
    fn check_request(req: &CertRequest) -> Result<(), IssueError> {
        if req.scope.is_empty() || req.scope.len() > MAX_SCOPE_AREAS {
            return Err(IssueError::ScopeSize);
        }
        if req.name.is_empty() || req.name.len() > MAX_NAME_BYTES {
            return Err(IssueError::NameLength);
        }
        if req.not_before >= req.not_after {
            return Err(IssueError::EmptyValidity);
        }
        Ok(())
    }

    /// Creates the self-signed root.
    pub fn new_root(req: CertRequest, key: &SecretKey) -> Result<Self, IssueError> {
        Self::check_request(&req)?;
        if req.tier != Tier::Root || req.public_key != key.public() {
            return Err(IssueError::RootNotSelfSigned);
        }
        let serial = random_serial();
        Ok(Self::sign(CertBody::from_request(req, serial, serial), key))
    }

    /// Issues a certificate below `issuer`, enforcing the chain rules so that
    /// nothing the verifier would refuse is ever created.
    pub fn issue(
        issuer: &Certificate,
        issuer_key: &SecretKey,
        req: CertRequest,
        now: i64,
    ) -> Result<Self, IssueError> {
        let ib = issuer.body();
        if issuer_key.public() != ib.public_key {
            return Err(IssueError::WrongIssuerKey);
        }
        // The issuer's own validity first: it explains every later failure.
        if now < ib.not_before || now > ib.not_after {
            return Err(IssueError::IssuerNotValid(now));
        }
        Self::check_request(&req)?;
        if req.tier <= ib.tier {
            return Err(IssueError::TierOrder {
                subject: req.tier,
                issuer: ib.tier,
            });
        }
        if let Some(a) = req.scope.iter().find(|a| !scope_within(&[**a], &ib.scope)) {
            return Err(IssueError::ScopeOutsideIssuer(a.to_string()));
        }
        if req.not_before < ib.not_before || req.not_after > ib.not_after {
            return Err(IssueError::ValidityOutsideIssuer {
                issuer_not_before: ib.not_before,
                issuer_not_after: ib.not_after,
            });
        }
        let body = CertBody::from_request(req, random_serial(), ib.serial);
        Ok(Self::sign(body, issuer_key))
    }

    /// Signs any body with `key`, with no rule checked. Anyone holding a key
    /// can do this; the chain verifier is what enforces the rules. Used by
    /// tests and the attack suite to build invalid certificates.
    pub fn sign_body(body: CertBody, key: &SecretKey) -> Self {
        Self::sign(body, key)
    }

    fn sign(body: CertBody, key: &SecretKey) -> Self {
        let tbs = body.encode();
        let signature = key.sign(SignContext::Certificate, &[&tbs]);
        let mut encoded = tbs;
        encoded.extend_from_slice(&signature);
        Certificate {
            body,
            signature,
            encoded,
        }
    }

    pub fn body(&self) -> &CertBody {
        &self.body
    }

    pub fn serial(&self) -> u64 {
        self.body.serial
    }

    pub fn tier(&self) -> Tier {
        self.body.tier
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.body.public_key
    }

    pub fn scope(&self) -> &[AreaCode] {
        &self.body.scope
    }

    pub fn is_valid_at(&self, now: i64) -> bool {
        self.body.not_before <= now && now <= self.body.not_after
    }

    /// The exact encoded bytes (body then signature).
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// SHA-256 of the encoded certificate.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(&self.encoded).into()
    }

    /// True when `issuer`'s key made this certificate's signature.
    pub fn signed_by(&self, issuer: &PublicKey) -> bool {
        let tbs = &self.encoded[..self.encoded.len() - self.signature.len()];
        issuer.verify(SignContext::Certificate, &[tbs], &self.signature)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_CERT_BYTES {
            return Err(DecodeError::TooLong {
                field: "certificate",
                len: bytes.len(),
                max: MAX_CERT_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let body = CertBody::decode(&mut r)?;
        let signature = r.array("certificate signature")?;
        r.finish()?;
        Ok(Certificate {
            body,
            signature,
            encoded: bytes.to_vec(),
        })
    }

    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new(CERT_PEM_TAG, self.encoded.clone()))
    }

    /// Every certificate in a PEM text, in order; other PEM blocks are skipped.
    pub fn all_from_pem(text: &str) -> Result<Vec<Certificate>, DecodeError> {
        let blocks =
            pem::parse_many(text).map_err(|e| DecodeError::invalid("PEM", e.to_string()))?;
        blocks
            .iter()
            .filter(|b| b.tag() == CERT_PEM_TAG)
            .map(|b| Certificate::decode(b.contents()))
            .collect()
    }
}

impl CertBody {
    fn from_request(req: CertRequest, serial: u64, issuer_serial: u64) -> Self {
        CertBody {
            serial,
            tier: req.tier,
            name: req.name,
            resource_code: req.resource_code,
            scope: req.scope,
            not_before: req.not_before,
            not_after: req.not_after,
            public_key: req.public_key,
            issuer_serial,
        }
    }
}
