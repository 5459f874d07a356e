//! A node's identity (its key and certificate chain) and the provisioning
//! bundle a terminal or platform is installed with.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use thiserror::Error;
use zeroize::Zeroizing;

use crate::area::{AreaCode, ResourceCode};
use crate::cert::{CertRequest, Certificate, IssueError, Tier, CERT_PEM_TAG};
use crate::chain::{ChainError, TrustAnchor};
use crate::encoding::DecodeError;
use crate::key::{KeyError, SecretKey};
use crate::revocation::{RevocationError, RevocationList, RevocationState, CRL_PEM_TAG};

const ROOT_PEM_TAG: &str = "EBS ROOT CERTIFICATE";

/// A private key with the chain that certifies it, ordered from the
/// certificate under the root down to this node's own.
#[derive(Debug)]
pub struct Identity {
    pub key: SecretKey,
    pub chain: Vec<Certificate>,
}

impl Identity {
    /// This node's own certificate.
    pub fn cert(&self) -> &Certificate {
        // Constructors never build an identity with an empty chain.
        self.chain.last().expect("identity chain is never empty")
    }

    /// The chain without the root certificate (receivers hold the root).
    pub fn chain_below_root(&self) -> Vec<Certificate> {
        self.chain
            .iter()
            .filter(|c| c.tier() != Tier::Root)
            .cloned()
            .collect()
    }

    /// Issues a child identity with a fresh key.
    pub fn issue_child(
        &self,
        tier: Tier,
        name: &str,
        resource_code: ResourceCode,
        scope: Vec<AreaCode>,
        validity: (i64, i64),
        now: i64,
    ) -> Result<Identity, IssueError> {
        let key = SecretKey::generate();
        let cert = Certificate::issue(
            self.cert(),
            &self.key,
            CertRequest {
                tier,
                name: name.to_string(),
                resource_code,
                scope,
                not_before: validity.0,
                not_after: validity.1,
                public_key: key.public(),
            },
            now,
        )?;
        let mut chain = self.chain_below_root();
        chain.push(cert);
        Ok(Identity { key, chain })
    }

    /// Certifies someone else's existing key as a child: how a platform is
    /// moved under a re-keyed issuer without changing its own key. Returns
    /// the child's chain (below the root).
    pub fn certify(&self, request: CertRequest, now: i64) -> Result<Vec<Certificate>, IssueError> {
        let cert = Certificate::issue(self.cert(), &self.key, request, now)?;
        let mut chain = self.chain_below_root();
        chain.push(cert);
        Ok(chain)
    }

    /// The root identity: the chain is the root certificate alone.
    pub fn new_root(
        name: &str,
        resource_code: ResourceCode,
        scope: Vec<AreaCode>,
        validity: (i64, i64),
    ) -> Result<Identity, IssueError> {
        let key = SecretKey::generate();
        let cert = Certificate::new_root(
            CertRequest {
                tier: Tier::Root,
                name: name.to_string(),
                resource_code,
                scope,
                not_before: validity.0,
                not_after: validity.1,
                public_key: key.public(),
            },
            &key,
        )?;
        Ok(Identity {
            key,
            chain: vec![cert],
        })
    }
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("bundle {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("bundle {path}: {source}")]
    Decode { path: String, source: DecodeError },
    #[error("bundle {0} has no root certificate")]
    NoRoot(String),
    #[error("bundle {0} has no certificate chain")]
    NoChain(String),
    #[error("bundle chain does not verify: {0}")]
    Chain(#[from] ChainError),
    #[error("bundle key does not match its certificate")]
    KeyMismatch,
    #[error("bundle revocation list: {0}")]
    Revocation(#[from] RevocationError),
}

/// Everything a node is provisioned with: the root it trusts, its identity,
/// and the revocation lists in force when it was provisioned (so a new
/// terminal does not trust a revoked platform before it hears a list).
#[derive(Debug)]
pub struct Bundle {
    pub anchor: TrustAnchor,
    pub identity: Identity,
    pub revocations: Vec<RevocationList>,
}

impl Bundle {
    /// Checks that the chain verifies to the root and the key matches.
    pub fn new(root: Certificate, identity: Identity, now: i64) -> Result<Self, BundleError> {
        let anchor = TrustAnchor::new(root)?;
        anchor.verify(&identity.chain, now, &RevocationState::new())?;
        if identity.key.public() != *identity.cert().public_key() {
            return Err(BundleError::KeyMismatch);
        }
        Ok(Bundle {
            anchor,
            identity,
            revocations: Vec::new(),
        })
    }

    /// Adds the lists in force; each must verify, and none may revoke the
    /// node's own chain (provisioning a revoked identity is a mistake).
    pub fn with_revocations(
        mut self,
        lists: Vec<RevocationList>,
        now: i64,
    ) -> Result<Self, BundleError> {
        let mut state = RevocationState::new();
        for l in &lists {
            state.apply(l.clone(), &self.anchor, now)?;
        }
        self.anchor.verify(&self.identity.chain, now, &state)?;
        self.revocations = lists;
        Ok(self)
    }

    pub fn to_pem(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(pem::encode(&pem::Pem::new(
            ROOT_PEM_TAG,
            self.anchor.root().as_bytes().to_vec(),
        )));
        for c in &self.identity.chain {
            out.push_str(&pem::encode(&pem::Pem::new(
                CERT_PEM_TAG,
                c.as_bytes().to_vec(),
            )));
        }
        for l in &self.revocations {
            out.push_str(&l.to_pem());
        }
        out.push_str(&self.identity.key.to_pem());
        out
    }

    /// Writes the bundle (which holds the private key) with mode 0600.
    pub fn write_file(&self, path: &Path) -> Result<(), BundleError> {
        let err = |source| BundleError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(path).map_err(err)?;
        f.write_all(self.to_pem().as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)
    }

    pub fn read_file(path: &Path, now: i64) -> Result<Self, BundleError> {
        let p = path.display().to_string();
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| BundleError::Io {
                    path: p.clone(),
                    source,
                })?,
            );
        let decode = |source| BundleError::Decode {
            path: p.clone(),
            source,
        };
        let blocks = pem::parse_many(text.as_bytes())
            .map_err(|e| decode(DecodeError::invalid("PEM", e.to_string())))?;
        let root = blocks
            .iter()
            .find(|b| b.tag() == ROOT_PEM_TAG)
            .ok_or_else(|| BundleError::NoRoot(p.clone()))?;
        let root = Certificate::decode(root.contents()).map_err(decode)?;
        let chain = Certificate::all_from_pem(&text).map_err(decode)?;
        if chain.is_empty() {
            return Err(BundleError::NoChain(p));
        }
        let key = SecretKey::from_pem(&text, &p)?;
        let lists = blocks
            .iter()
            .filter(|b| b.tag() == CRL_PEM_TAG)
            .map(|b| RevocationList::decode(b.contents()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(decode)?;
        Bundle::new(root, Identity { key, chain }, now)?.with_revocations(lists, now)
    }
}
