//! The trust chain of the emergency broadcast system.
//!
//! Trust starts at a root key kept offline. Certificates chain root →
//! district → town → village → terminal; each names its tier, the area codes
//! it may address and its validity. [`TrustAnchor::verify`] checks a chain;
//! [`RevocationState`] holds the newest signed revocation lists; [`tls`]
//! authenticates QUIC peers with the same chain.

pub mod area;
pub mod cert;
pub mod chain;
pub mod encoding;
pub mod identity;
pub mod key;
/// A whole district's PKI in one call, for tests, benchmarks and the demo
/// (feature `testing`).
#[cfg(feature = "testing")]
pub mod pki;
pub mod revocation;
pub mod time;
pub mod tls;

pub use area::{AreaCode, AreaLevel, ResourceCode};
pub use cert::{CertRequest, Certificate, IssueError, Tier};
pub use chain::{ChainError, TrustAnchor};
pub use identity::{Bundle, BundleError, Identity};
pub use key::{PublicKey, SecretKey, SignContext, Signature};
pub use revocation::{Applied, RevocationError, RevocationList, RevocationState};
