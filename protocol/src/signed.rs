//! Messages a platform signs with its certificate chain (broadcast headers,
//! programmes, quiet hours), in one form: the message, the signer's chain,
//! the signature, and the exact signed bytes with their SHA-256, so relays
//! forward them unchanged. Each message type says how it is written, read
//! and checked ([`Sealable`]); `signer_chain` does the sealing.

use certs::encoding::{DecodeError, Reader, Writer};
use certs::{Certificate, Identity, SignContext};

use crate::header::SignError;
use crate::signer_chain::Sealed;

/// A message that travels signed with its signer's chain.
pub trait Sealable: Sized {
    /// The signature's domain.
    const CONTEXT: SignContext;
    /// The largest signed form accepted.
    const MAX_BYTES: usize;
    /// Its name in decode errors.
    const WHAT: &'static str;
    /// The rules every such message follows: checked before signing (and
    /// by the verifier).
    fn check(&self) -> Result<(), &'static str>;
    fn encode_into(&self, w: &mut Writer);
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    /// Bytes to reserve for the signed form.
    fn capacity(&self) -> usize {
        1024
    }
}

/// A message with its signer's chain and signature, as made or received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<T> {
    message: T,
    sealed: Sealed,
}

impl<T: Sealable> Signed<T> {
    /// Signs `message` with `identity`'s key; the signature covers every
    /// byte before it, the chain included.
    pub fn sign(message: T, identity: &Identity) -> Result<Self, SignError> {
        message.check().map_err(SignError::Inconsistent)?;
        Self::sign_unchecked(message, identity)
    }

    /// Signs without checking the message's rules. Anyone with a key can do
    /// this; the verifier is what refuses. For tests and the attack suite.
    pub fn sign_unchecked(message: T, identity: &Identity) -> Result<Self, SignError> {
        let sealed = crate::signer_chain::seal(identity, T::CONTEXT, message.capacity(), |w| {
            message.encode_into(w)
        })?;
        Ok(Signed { message, sealed })
    }

    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let (message, sealed) =
            crate::signer_chain::open(body, T::MAX_BYTES, T::WHAT, T::decode_from)?;
        Ok(Signed { message, sealed })
    }

    pub fn message(&self) -> &T {
        &self.message
    }

    /// The chain from under the root down to the signer.
    pub fn chain(&self) -> &[Certificate] {
        &self.sealed.chain
    }

    /// The signer's certificate (the last of the chain; decoding guarantees
    /// one).
    pub fn signer(&self) -> &Certificate {
        &self.sealed.chain[self.sealed.chain.len() - 1]
    }

    /// The exact signed bytes, as received or as made.
    pub fn body(&self) -> &[u8] {
        &self.sealed.body
    }

    /// SHA-256 of the body: what a header's segments are bound to; two
    /// revisions of a programme with one number but other bytes are a
    /// forgery or a bug.
    pub fn digest(&self) -> &[u8; 32] {
        &self.sealed.digest
    }

    /// True when the signer's key made the signature over the preceding bytes.
    pub fn signature_valid(&self) -> bool {
        crate::signer_chain::signed_by_last(
            &self.sealed.chain,
            &self.sealed.body,
            &self.sealed.signature,
            T::CONTEXT,
        )
    }
}
