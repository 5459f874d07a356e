//! Member announcements: a platform tells its parent which nodes are
//! connected below it, with their certificate chains, so every tier up to
//! the district can check that a receipt, status or security event was
//! signed by the node it names. The chain authenticates itself (it must
//! verify to the root); the announcing platform's scope must cover it.

use certs::encoding::{DecodeError, Reader, Writer};
use certs::Certificate;

use crate::control::CONTROL_VERSION;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// From under the root down to the member.
    pub chain: Vec<Certificate>,
}

impl Member {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(1024);
        w.u8(CONTROL_VERSION);
        crate::signer_chain::write(&mut w, &self.chain);
        w.into_vec()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        match r.u8("member version")? {
            CONTROL_VERSION => {}
            v => return Err(DecodeError::UnsupportedVersion(v)),
        }
        let chain = crate::signer_chain::read(&mut r)?;
        r.finish()?;
        Ok(Member { chain })
    }

    /// The member's own certificate.
    pub fn leaf(&self) -> Option<&Certificate> {
        self.chain.last()
    }
}
