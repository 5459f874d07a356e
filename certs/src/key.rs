//! Ed25519 keys: generation, domain-separated signing, and private key files.
//!
//! Private keys are zeroized when dropped (ed25519-dalek's `zeroize`
//! feature), never printed by `Debug`, and written to files with mode 0600.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use thiserror::Error;
use zeroize::Zeroizing;

pub const SIGNATURE_LEN: usize = 64;
pub const PUBLIC_KEY_LEN: usize = 32;
const KEY_PEM_TAG: &str = "EBS ED25519 PRIVATE KEY";

pub type Signature = [u8; SIGNATURE_LEN];

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {0} is not an EBS Ed25519 private key")]
    Format(String),
}

/// Contexts that separate what a signature may mean: a signature made for a
/// certificate can never be presented as a header's or a segment's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignContext {
    Certificate,
    RevocationList,
    Header,
    Segment,
    Receipt,
    Command,
    Status,
    SecurityEvent,
    AuditSeal,
    PublishRequest,
    RequestOutcome,
    Programme,
    ProgrammeReceipt,
    QuietHours,
}

impl SignContext {
    pub fn label(self) -> &'static [u8] {
        match self {
            SignContext::Certificate => b"EBS-v1 certificate\0",
            SignContext::RevocationList => b"EBS-v1 revocation list\0",
            SignContext::Header => b"EBS-v1 broadcast header\0",
            SignContext::Segment => b"EBS-v1 audio segment\0",
            SignContext::Receipt => b"EBS-v1 receipt\0",
            SignContext::Command => b"EBS-v1 command\0",
            SignContext::Status => b"EBS-v1 status\0",
            SignContext::SecurityEvent => b"EBS-v1 security event\0",
            SignContext::AuditSeal => b"EBS-v1 audit seal\0",
            SignContext::PublishRequest => b"EBS-v1 publish request\0",
            SignContext::RequestOutcome => b"EBS-v1 request outcome\0",
            SignContext::Programme => b"EBS-v1 programme\0",
            SignContext::ProgrammeReceipt => b"EBS-v1 programme receipt\0",
            SignContext::QuietHours => b"EBS-v1 quiet hours\0",
        }
    }
}

fn framed(context: SignContext, parts: &[&[u8]]) -> Vec<u8> {
    let len = context.label().len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(context.label());
    for p in parts {
        m.extend_from_slice(p);
    }
    m
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    pub fn from_bytes(b: [u8; PUBLIC_KEY_LEN]) -> Self {
        PublicKey(b)
    }

    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// Verifies `signature` over the concatenation of `parts` in `context`.
    /// Uses strict verification: no malleable or small-order signatures.
    pub fn verify(&self, context: SignContext, parts: &[&[u8]], signature: &Signature) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(&framed(context, parts), &sig).is_ok()
    }

    /// Hex of the first 8 bytes, for logs and listings.
    pub fn fingerprint(&self) -> String {
        self.0[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// Verifies many signatures at once (ed25519-dalek batch verification), for
/// a node catching up on a backlog. True only if every signature is valid;
/// on false, verify one by one to find the bad ones. Batch verification is
/// not the strict check: callers that must reject malleable signatures
/// re-check with [`PublicKey::verify`].
pub fn verify_batch(context: SignContext, items: &[(&PublicKey, &[&[u8]], &Signature)]) -> bool {
    let mut messages = Vec::with_capacity(items.len());
    let mut signatures = Vec::with_capacity(items.len());
    let mut keys = Vec::with_capacity(items.len());
    for (key, parts, sig) in items {
        let Ok(k) = VerifyingKey::from_bytes(&key.0) else {
            return false;
        };
        keys.push(k);
        messages.push(framed(context, parts));
        signatures.push(ed25519_dalek::Signature::from_bytes(sig));
    }
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    ed25519_dalek::verify_batch(&refs, &signatures, &keys).is_ok()
}

/// An Ed25519 private key. Never printed, zeroized on drop.
pub struct SecretKey(SigningKey);

impl SecretKey {
    pub fn generate() -> Self {
        SecretKey(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, context: SignContext, parts: &[&[u8]]) -> Signature {
        self.0.sign(&framed(context, parts)).to_bytes()
    }

    /// PKCS#8 v2 DER, for the TLS stack. Zeroized when dropped.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let doc = self
            .0
            .to_pkcs8_der()
            .map_err(|_| KeyError::Format("pkcs8 encoding".into()))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    pub fn to_pem(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.0.to_bytes().to_vec());
        let pem = pem::Pem::new(KEY_PEM_TAG, seed.to_vec());
        Zeroizing::new(pem::encode(&pem))
    }

    pub fn from_pem(text: &str, origin: &str) -> Result<Self, KeyError> {
        // The key may share a file with certificates (a provisioning bundle).
        let blocks = pem::parse_many(text).map_err(|_| KeyError::Format(origin.to_string()))?;
        let parsed = blocks
            .into_iter()
            .find(|b| b.tag() == KEY_PEM_TAG)
            .ok_or_else(|| KeyError::Format(origin.to_string()))?;
        let contents = Zeroizing::new(parsed.into_contents());
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            contents
                .as_slice()
                .try_into()
                .map_err(|_| KeyError::Format(origin.to_string()))?,
        );
        Ok(SecretKey::from_seed(&seed))
    }

    /// Writes the key to a new file with mode 0600; never overwrites.
    pub fn write_file(&self, path: &Path) -> Result<(), KeyError> {
        let err = |source| KeyError::Write {
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
        let mut file = options.open(path).map_err(err)?;
        file.write_all(self.to_pem().as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)
    }

    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: path.display().to_string(),
                    source,
                })?,
            );
        SecretKey::from_pem(&text, &path.display().to_string())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecretKey(<redacted>, public {})",
            self.public().fingerprint()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_with_context_separation() {
        let k = SecretKey::generate();
        let sig = k.sign(SignContext::Header, &[b"abc", b"def"]);
        assert!(k.public().verify(SignContext::Header, &[b"abcdef"], &sig));
        assert!(!k.public().verify(SignContext::Segment, &[b"abcdef"], &sig));
        assert!(!k.public().verify(SignContext::Header, &[b"abcdeg"], &sig));
        assert!(!SecretKey::generate()
            .public()
            .verify(SignContext::Header, &[b"abcdef"], &sig));
    }

    #[test]
    fn batch_verification_agrees() {
        let k = SecretKey::generate();
        let pk = k.public();
        let msgs: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 40]).collect();
        let sigs: Vec<Signature> = msgs
            .iter()
            .map(|m| k.sign(SignContext::Segment, &[m]))
            .collect();
        let parts: Vec<[&[u8]; 1]> = msgs.iter().map(|m| [m.as_slice()]).collect();
        let mut items: Vec<(&PublicKey, &[&[u8]], &Signature)> = parts
            .iter()
            .zip(&sigs)
            .map(|(p, s)| (&pk, &p[..], s))
            .collect();
        assert!(verify_batch(SignContext::Segment, &items));
        let bad = [b"tampered".as_slice()];
        items[3].1 = &bad;
        assert!(!verify_batch(SignContext::Segment, &items));
    }

    #[test]
    fn key_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let k = SecretKey::generate();
        k.write_file(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(SecretKey::read_file(&path).unwrap().public(), k.public());
        // Never overwrites an existing key.
        assert!(matches!(k.write_file(&path), Err(KeyError::Write { .. })));
        assert!(!format!("{k:?}").contains(&format!("{:?}", k.0.to_bytes())));
        std::fs::write(dir.path().join("bad"), "hello").unwrap();
        assert!(SecretKey::read_file(&dir.path().join("bad")).is_err());
    }
}
