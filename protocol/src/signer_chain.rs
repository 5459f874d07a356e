//! The signer's certificate chain as headers and commands carry it: a count
//! (1 to 4), then each certificate as `bytes32`.

use certs::cert::MAX_CERT_BYTES;
use certs::chain::MAX_CHAIN_LEN;
use certs::encoding::{DecodeError, Reader, Writer};
use certs::Certificate;

pub(crate) fn write(w: &mut Writer, chain: &[Certificate]) {
    w.u8(chain.len() as u8);
    for c in chain {
        w.bytes32(c.as_bytes());
    }
}

pub(crate) fn read(r: &mut Reader<'_>) -> Result<Vec<Certificate>, DecodeError> {
    let n = r.u8("signer chain length")? as usize;
    if n == 0 || n > MAX_CHAIN_LEN {
        return Err(DecodeError::invalid(
            "signer chain",
            format!("{n} certificates"),
        ));
    }
    let mut chain = Vec::with_capacity(n);
    for _ in 0..n {
        chain.push(Certificate::decode(
            r.bytes32(MAX_CERT_BYTES, "signer certificate")?,
        )?);
    }
    Ok(chain)
}

/// True when `body` ends with `signature`, made under `context` over the
/// bytes before it by the key of the chain's last certificate (the signer).
pub(crate) fn signed_by_last(
    chain: &[Certificate],
    body: &[u8],
    signature: &certs::Signature,
    context: certs::SignContext,
) -> bool {
    let Some(signer) = chain.last() else {
        return false;
    };
    let signed = &body[..body.len() - signature.len()];
    signer.public_key().verify(context, &[signed], signature)
}

/// A message's signed form: the chain it carries, its signature, its exact
/// bytes and their SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub chain: Vec<certs::Certificate>,
    pub signature: certs::Signature,
    pub body: Vec<u8>,
    pub digest: [u8; 32],
}

/// Writes a message (`encode` writes its fields), then the signer's chain,
/// and signs all of it under `context` (headers, programmes, quiet hours).
pub(crate) fn seal(
    identity: &certs::Identity,
    context: certs::SignContext,
    capacity: usize,
    encode: impl FnOnce(&mut Writer),
) -> Result<Sealed, crate::header::SignError> {
    use sha2::Digest;
    let chain = identity.chain_below_root();
    if chain.is_empty() {
        return Err(crate::header::SignError::NoChain);
    }
    let mut w = Writer::with_capacity(capacity);
    encode(&mut w);
    write(&mut w, &chain);
    let signature = identity.key.sign(context, &[w.as_slice()]);
    w.raw(&signature);
    let body = w.into_vec();
    let digest = sha2::Sha256::digest(&body).into();
    Ok(Sealed {
        chain,
        signature,
        body,
        digest,
    })
}

/// Reads a message sealed so (at most `max` bytes): its fields by
/// `decode`, then the chain and the signature, and nothing after.
pub(crate) fn open<T>(
    body: &[u8],
    max: usize,
    field: &'static str,
    decode: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<(T, Sealed), DecodeError> {
    use sha2::Digest;
    if body.len() > max {
        return Err(DecodeError::TooLong {
            field,
            len: body.len(),
            max,
        });
    }
    let mut r = Reader::new(body);
    let message = decode(&mut r)?;
    let chain = read(&mut r)?;
    let signature = r.array("signature")?;
    r.finish()?;
    Ok((
        message,
        Sealed {
            chain,
            signature,
            body: body.to_vec(),
            digest: sha2::Sha256::digest(body).into(),
        },
    ))
}
