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
