//! QUIC/TLS identity from the same trust chain.
//!
//! Each node presents a self-signed X.509 certificate over its own Ed25519
//! key (the TLS handshake proves it holds that key), followed by its EBS
//! certificate chain carried opaquely in the intermediate slots of the TLS
//! certificate list. The verifiers below accept a peer only if that chain
//! verifies to the provisioned root (not expired, not revoked), its leaf key
//! is the X.509 key, and the leaf's tier fits the policy: a rogue server
//! cannot pose as a platform, and a terminal proves who it is.

use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig,
    SignatureScheme,
};
use thiserror::Error;

use crate::area::AreaCode;
use crate::cert::{Certificate, Tier};
use crate::chain::{ChainError, TrustAnchor};
use crate::identity::Identity;
use crate::revocation::RevocationState;

/// The TLS server name every node uses; identity comes from the EBS chain.
pub const SERVER_NAME: &str = "ebs.invalid";
/// ALPN protocol id of the EBS wire protocol, version 1.
pub const ALPN: &[u8] = b"ebs/1";

const ED25519_OID: &str = "1.3.101.112";

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot build the TLS certificate: {0}")]
    Certificate(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("the key cannot be exported: {0}")]
    Key(#[from] crate::key::KeyError),
}

/// Why a peer is refused, beyond the chain itself.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PeerError {
    #[error("peer sent no EBS certificate chain")]
    NoChain,
    #[error("peer chain is not decodable: {0}")]
    Decode(#[from] crate::encoding::DecodeError),
    #[error("peer chain: {0}")]
    Chain(#[from] ChainError),
    #[error("peer X.509 certificate is not an Ed25519 certificate")]
    NotEd25519,
    #[error("peer X.509 key is not the key of its EBS certificate")]
    KeyMismatch,
    #[error("peer tier {0} is not allowed on this link")]
    TierNotAllowed(Tier),
    #[error("peer's scope does not cover area {0}")]
    ScopeMismatch(AreaCode),
}

impl From<PeerError> for rustls::Error {
    fn from(e: PeerError) -> Self {
        let ce = match &e {
            PeerError::Chain(ChainError::Expired { .. }) => CertificateError::Expired,
            PeerError::Chain(ChainError::NotYetValid { .. }) => CertificateError::NotValidYet,
            PeerError::Chain(ChainError::Revoked(_)) => CertificateError::Revoked,
            PeerError::Chain(ChainError::BadSignature(_)) => CertificateError::BadSignature,
            PeerError::Chain(ChainError::UntrustedRoot | ChainError::UnknownIssuer { .. }) => {
                CertificateError::UnknownIssuer
            }
            _ => CertificateError::Other(rustls::OtherError(Arc::new(e))),
        };
        rustls::Error::InvalidCertificate(ce)
    }
}

/// Which peers a link accepts.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    pub allowed_tiers: Vec<Tier>,
    /// When set, the peer's scope must cover this area (a terminal's upstream
    /// platform must be responsible for the terminal's village).
    pub must_cover: Option<AreaCode>,
}

impl PeerPolicy {
    /// What a terminal or lower platform accepts as its upstream.
    pub fn upstream_of(area: AreaCode) -> Self {
        PeerPolicy {
            allowed_tiers: vec![Tier::District, Tier::Town, Tier::Village],
            must_cover: Some(area),
        }
    }

    /// What a platform accepts from below: lower platforms and terminals.
    pub fn downstream() -> Self {
        PeerPolicy {
            allowed_tiers: vec![Tier::Town, Tier::Village, Tier::Terminal],
            must_cover: None,
        }
    }
}

/// Told of every peer the verifier refuses: the error, and the serial of the
/// leaf certificate the peer presented when it could be read (the node turns
/// this into a security event).
pub type RejectHook = Arc<dyn Fn(&PeerError, Option<u64>) + Send + Sync>;

/// Verifies peers against the chain. The revocation state is shared with
/// the node, so a newly applied list affects the next handshake.
pub struct ChainVerifier {
    anchor: TrustAnchor,
    revocations: Arc<RwLock<RevocationState>>,
    policy: PeerPolicy,
    algorithms: WebPkiSupportedAlgorithms,
    on_reject: Option<RejectHook>,
}

impl std::fmt::Debug for ChainVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainVerifier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ChainVerifier {
    pub fn new(
        anchor: TrustAnchor,
        revocations: Arc<RwLock<RevocationState>>,
        policy: PeerPolicy,
    ) -> Self {
        ChainVerifier {
            anchor,
            revocations,
            policy,
            algorithms: provider().signature_verification_algorithms,
            on_reject: None,
        }
    }

    /// Calls `hook` for every refused peer.
    pub fn with_reject_hook(mut self, hook: Option<RejectHook>) -> Self {
        self.on_reject = hook;
        self
    }

    fn check_and_report(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: i64,
    ) -> Result<Vec<Certificate>, PeerError> {
        let result = self.check_peer(end_entity, intermediates, now);
        if let (Err(e), Some(hook)) = (&result, &self.on_reject) {
            let leaf = intermediates
                .last()
                .and_then(|c| Certificate::decode(c.as_ref()).ok())
                .map(|c| c.serial());
            hook(e, leaf);
        }
        result
    }

    /// Checks a presented certificate list; returns the peer's EBS chain.
    pub fn check_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: i64,
    ) -> Result<Vec<Certificate>, PeerError> {
        let chain = decode_chain(intermediates)?;
        let revocations = self
            .revocations
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let leaf = self.anchor.verify(&chain, now, &revocations)?;
        if x509_ed25519_key(end_entity)? != *leaf.public_key().as_bytes() {
            return Err(PeerError::KeyMismatch);
        }
        if !self.policy.allowed_tiers.contains(&leaf.tier()) {
            return Err(PeerError::TierNotAllowed(leaf.tier()));
        }
        if let Some(area) = self.policy.must_cover {
            if !leaf.scope().iter().any(|s| s.covers(area)) {
                return Err(PeerError::ScopeMismatch(area));
            }
        }
        Ok(chain)
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

fn unix_seconds(now: UnixTime) -> i64 {
    now.as_secs().min(i64::MAX as u64) as i64
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_and_report(end_entity, intermediates, unix_seconds(now))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // QUIC is TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for ChainVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_and_report(end_entity, intermediates, unix_seconds(now))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The EBS chain carried after the X.509 certificate.
pub fn decode_chain(intermediates: &[CertificateDer<'_>]) -> Result<Vec<Certificate>, PeerError> {
    if intermediates.is_empty() {
        return Err(PeerError::NoChain);
    }
    if intermediates.len() > crate::chain::MAX_CHAIN_LEN + 1 {
        return Err(ChainError::TooLong(intermediates.len()).into());
    }
    intermediates
        .iter()
        .map(|c| Certificate::decode(c.as_ref()).map_err(PeerError::from))
        .collect()
}

/// The peer's EBS chain from a finished handshake's certificate list
/// (X.509 first, then the chain).
pub fn peer_chain(presented: &[CertificateDer<'_>]) -> Result<Vec<Certificate>, PeerError> {
    decode_chain(presented.get(1..).unwrap_or_default())
}

fn x509_ed25519_key(der: &CertificateDer<'_>) -> Result<[u8; 32], PeerError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| PeerError::NotEd25519)?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        return Err(PeerError::NotEd25519);
    }
    spki.subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| PeerError::NotEd25519)
}

/// The crypto provider of every EBS TLS configuration.
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The certificate list and key a node presents in TLS.
fn presented(
    identity: &Identity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let pkcs8 = identity.key.to_pkcs8_der()?;
    let pkcs8_der = PrivatePkcs8KeyDer::from(pkcs8.to_vec());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8_der, &rcgen::PKCS_ED25519)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let x509 = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let mut list = vec![x509.der().clone()];
    list.extend(
        identity
            .chain_below_root()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes().to_vec())),
    );
    Ok((list, PrivateKeyDer::Pkcs8(pkcs8_der)))
}

/// TLS 1.3 server configuration: presents `identity`, requires and verifies
/// a client chain under `verifier`.
pub fn server_config(
    identity: &Identity,
    verifier: Arc<ChainVerifier>,
) -> Result<ServerConfig, TlsError> {
    let (certs, key) = presented(identity)?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// TLS 1.3 client configuration: presents `identity`, verifies the server
/// chain under `verifier`.
pub fn client_config(
    identity: &Identity,
    verifier: Arc<ChainVerifier>,
) -> Result<ClientConfig, TlsError> {
    let (certs, key) = presented(identity)?;
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}
