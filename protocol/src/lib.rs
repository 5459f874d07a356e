//! Wire formats of the emergency broadcast system and the sans-IO verifier.
//!
//! A broadcast is a [`SignedHeader`] (what the national EBM says, signed by
//! the issuing platform with its certificate chain) followed by signed audio
//! [`Segment`]s bound to that header. [`Verifier`] accepts or refuses each
//! of them, and remote commands, with a typed [`Refusal`]. `PROTOCOL.md` at
//! the repository root specifies every byte.

pub mod build;
pub mod control;
pub mod event;
pub mod frame;
pub mod header;
pub mod ids;
pub mod member;
pub mod precedence;
pub mod programme;
pub mod quiet;
pub mod refusal;
pub mod replay;
pub mod request;
pub mod schedule;
pub mod segment;
pub mod signed;
mod signer_chain;
/// Fixtures for tests and benchmarks (feature `testing`).
#[cfg(feature = "testing")]
pub mod testing;
pub mod verify;

pub use control::AudioCounters;
pub use control::{
    Action, Command, Hello, ProgrammeCache, Receipt, ReceiptKind, SignedCommand, SignedReceipt,
    SignedStatus, Status, Subscribe,
};
pub use event::{EventReporter, SecurityEvent, SignedEvent};
pub use frame::{FrameKind, FrameReader, Message, RawFrame};
pub use header::{AudioParams, BroadcastHeader, SignedHeader};
pub use ids::{BroadcastClass, BroadcastId, Codec, EventType, MessageType, Severity};
pub use member::Member;
pub use precedence::Precedence;
pub use programme::{
    Held, Inventory, PlayOutcome, PlayReason, Programme, ProgrammeAudio, ProgrammeChunk,
    ProgrammeReceipt, SignedProgramme, SignedProgrammeReceipt,
};
pub use quiet::{Quiet, QuietHours, QuietMode, SignedQuietHours};
pub use refusal::{Refusal, RefusalCounts, RefusalReason, ResultCode};
pub use replay::{MemoryReplayStore, ReplayRecord, ReplayStore};
pub use request::{OutcomeState, PublishRequest, RequestOutcome, SignedOutcome, SignedRequest};
pub use schedule::Schedule;
pub use segment::Segment;
pub use signed::{Sealable, Signed};
pub use verify::{
    Audience, HeaderVerdict, HeldRevision, Policy, ProgrammeVerdict, RevocationOutcome,
    SegmentVerdict, Verifier,
};
