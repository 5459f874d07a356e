//! Alerts from above (R13): the national format (GY/T 384 interface,
//! GY/T 385 messages: EBD packages holding EBM messages, signed with
//! SM2/SM3) and OASIS CAP 1.2. Parsers that take nothing on trust (no
//! DTD, bounded sizes and counts, plain file names), the signature
//! verified before a byte of the data is parsed, one [`alert::Alert`] for
//! the platform to act on, and the answers in the sender's format. No I/O:
//! the platform owns the sockets, the store and the policy.

pub mod alert;
pub mod cap;
pub mod cert;
pub mod ebd;
pub mod geo;
pub mod gyt;
pub mod package;
pub mod sm;
pub mod xml;

pub use alert::{Action, Alert, Audio, Format};
pub use ebd::ResultCode;
pub use sm::{Sender, SmKey, TrustStore};
