//! Why something was refused, with a stable code per reason, the national
//! result code it maps to, and counters.

use std::collections::BTreeMap;

use certs::encoding::DecodeError;
use certs::{AreaCode, ChainError, RevocationError, Tier};
use thiserror::Error;

use crate::ids::coded_enum;

coded_enum!(
    /// The result codes of GY/T 385's EBDResponse: what every national
    /// answer says of a message it received.
    ResultCode, "result code" {
        Received = 0,
        Verified = 1,
        ParseFailure = 2,
        MissingContent = 3,
        SignatureFailed = 4,
        Other = 5,
    }
);

coded_enum!(
    /// Stable reason codes, carried in refusal receipts and used as metric labels.
    RefusalReason, "refusal reason" {
        Malformed = 1,
        UnsupportedVersion = 2,
        ChainUntrusted = 10,
        CertSignature = 11,
        CertTierOrder = 12,
        CertScopeEscalation = 13,
        CertValidityOutsideIssuer = 14,
        CertExpired = 15,
        CertNotYetValid = 16,
        CertRevoked = 17,
        SignerNotPlatform = 20,
        HeaderSignature = 21,
        IdNotIssuers = 22,
        TargetOutsideScope = 23,
        NotAddressed = 24,
        Inconsistent = 25,
        IssuedInFuture = 30,
        IssuedTooLongAgo = 31,
        Expired = 32,
        DuplicateId = 33,
        CancelNotAuthorised = 34,
        Replayed = 35,
        UnknownBroadcast = 40,
        SegmentSignature = 41,
        StaleSequence = 42,
        BeyondEnd = 43,
        TooManyFrames = 44,
        ChunkDigest = 45,
        UnknownProgramme = 46,
        CommandReplayed = 50,
        ForgedReport = 51,
        PeerUntrusted = 52,
        RevocationRollback = 53,
        RevocationInvalid = 54,
        Store = 60,
    }
);

impl RefusalReason {
    /// A short snake_case name for logs and metric labels.
    pub fn name(self) -> &'static str {
        use RefusalReason::*;
        match self {
            Malformed => "malformed",
            UnsupportedVersion => "unsupported_version",
            ChainUntrusted => "chain_untrusted",
            CertSignature => "cert_signature",
            CertTierOrder => "cert_tier_order",
            CertScopeEscalation => "cert_scope_escalation",
            CertValidityOutsideIssuer => "cert_validity_outside_issuer",
            CertExpired => "cert_expired",
            CertNotYetValid => "cert_not_yet_valid",
            CertRevoked => "cert_revoked",
            SignerNotPlatform => "signer_not_platform",
            HeaderSignature => "header_signature",
            IdNotIssuers => "id_not_issuers",
            TargetOutsideScope => "target_outside_scope",
            NotAddressed => "not_addressed",
            Inconsistent => "inconsistent",
            IssuedInFuture => "issued_in_future",
            IssuedTooLongAgo => "issued_too_long_ago",
            Expired => "expired",
            DuplicateId => "duplicate_id",
            CancelNotAuthorised => "cancel_not_authorised",
            Replayed => "replayed",
            UnknownBroadcast => "unknown_broadcast",
            SegmentSignature => "segment_signature",
            StaleSequence => "stale_sequence",
            BeyondEnd => "beyond_end",
            TooManyFrames => "too_many_frames",
            ChunkDigest => "chunk_digest",
            UnknownProgramme => "unknown_programme",
            CommandReplayed => "command_replayed",
            ForgedReport => "forged_report",
            PeerUntrusted => "peer_untrusted",
            RevocationRollback => "revocation_rollback",
            RevocationInvalid => "revocation_invalid",
            Store => "store",
        }
    }

    /// The national result code (GY/T 385): 2 parse failure, 3 missing
    /// content, 4 signature verification failed, 5 other.
    pub fn national_result_code(self) -> ResultCode {
        use RefusalReason::*;
        match self {
            Malformed | UnsupportedVersion => ResultCode::ParseFailure,
            UnknownBroadcast | UnknownProgramme => ResultCode::MissingContent,
            ChainUntrusted
            | CertSignature
            | CertTierOrder
            | CertScopeEscalation
            | CertValidityOutsideIssuer
            | CertExpired
            | CertNotYetValid
            | CertRevoked
            | HeaderSignature
            | SegmentSignature
            | ChunkDigest
            | ForgedReport
            | PeerUntrusted
            | RevocationInvalid => ResultCode::SignatureFailed,
            _ => ResultCode::Other,
        }
    }
}

/// A refusal with its details.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("malformed: {0}")]
    Malformed(DecodeError),
    #[error("signer chain: {0}")]
    Chain(ChainError),
    #[error("signer is a {0}, only platforms may issue")]
    SignerNotPlatform(Tier),
    #[error("header signature is invalid")]
    HeaderSignature,
    #[error("the broadcast id does not carry the signer's resource code")]
    IdNotIssuers,
    #[error("target area {0} lies outside the signer's scope")]
    TargetOutsideScope(AreaCode),
    #[error("not addressed to this node")]
    NotAddressed,
    #[error("inconsistent header: {0}")]
    Inconsistent(&'static str),
    #[error("issued {ahead_ms} ms in the future")]
    IssuedInFuture { ahead_ms: i64 },
    #[error("issued {age_ms} ms ago, beyond the accepted window")]
    IssuedTooLongAgo { age_ms: i64 },
    #[error("ended at {end_ms}")]
    Expired { end_ms: i64 },
    #[error("another header with this id was already seen")]
    DuplicateId,
    #[error("the signer may not cancel this broadcast")]
    CancelNotAuthorised,
    #[error("this broadcast already ended or was cancelled here")]
    Replayed,
    #[error("segment of a broadcast without a verified header")]
    UnknownBroadcast,
    #[error("segment signature is invalid (tampered, spliced or moved)")]
    SegmentSignature,
    #[error("segment {seq} already played or skipped (next is {expected})")]
    StaleSequence { seq: u32, expected: u32 },
    #[error("segment {seq} beyond the announced {total}")]
    BeyondEnd { seq: u32, total: u32 },
    #[error("segment has more frames than announced")]
    TooManyFrames,
    #[error("programme audio chunk {index} does not match its signed digest")]
    ChunkDigest { index: u16 },
    #[error("audio of a programme without a verified programme")]
    UnknownProgramme,
    #[error("command already executed")]
    CommandReplayed,
    #[error("a report (receipt, status, event) not signed by the node it names")]
    ForgedReport,
    #[error("peer failed authentication: {0}")]
    PeerUntrusted(String),
    #[error("revocation list refused: {0}")]
    Revocation(RevocationError),
    #[error("replay store failed: {0}")]
    Store(String),
}

impl Refusal {
    pub fn reason(&self) -> RefusalReason {
        use RefusalReason as R;
        match self {
            Refusal::Malformed(DecodeError::UnsupportedVersion(_)) => R::UnsupportedVersion,
            Refusal::Malformed(_) => R::Malformed,
            Refusal::Chain(e) => match e {
                ChainError::BadSignature(_) => R::CertSignature,
                ChainError::TierOrder { .. } => R::CertTierOrder,
                ChainError::ScopeEscalation(_) => R::CertScopeEscalation,
                ChainError::ValidityOutsideIssuer(_) => R::CertValidityOutsideIssuer,
                ChainError::Expired { .. } => R::CertExpired,
                ChainError::NotYetValid { .. } => R::CertNotYetValid,
                ChainError::Revoked(_) => R::CertRevoked,
                _ => R::ChainUntrusted,
            },
            Refusal::SignerNotPlatform(_) => R::SignerNotPlatform,
            Refusal::HeaderSignature => R::HeaderSignature,
            Refusal::IdNotIssuers => R::IdNotIssuers,
            Refusal::TargetOutsideScope(_) => R::TargetOutsideScope,
            Refusal::NotAddressed => R::NotAddressed,
            Refusal::Inconsistent(_) => R::Inconsistent,
            Refusal::IssuedInFuture { .. } => R::IssuedInFuture,
            Refusal::IssuedTooLongAgo { .. } => R::IssuedTooLongAgo,
            Refusal::Expired { .. } => R::Expired,
            Refusal::DuplicateId => R::DuplicateId,
            Refusal::CancelNotAuthorised => R::CancelNotAuthorised,
            Refusal::Replayed => R::Replayed,
            Refusal::UnknownBroadcast => R::UnknownBroadcast,
            Refusal::SegmentSignature => R::SegmentSignature,
            Refusal::StaleSequence { .. } => R::StaleSequence,
            Refusal::BeyondEnd { .. } => R::BeyondEnd,
            Refusal::TooManyFrames => R::TooManyFrames,
            Refusal::ChunkDigest { .. } => R::ChunkDigest,
            Refusal::UnknownProgramme => R::UnknownProgramme,
            Refusal::CommandReplayed => R::CommandReplayed,
            Refusal::ForgedReport => R::ForgedReport,
            Refusal::PeerUntrusted(_) => R::PeerUntrusted,
            Refusal::Revocation(RevocationError::Rollback { .. }) => R::RevocationRollback,
            Refusal::Revocation(_) => R::RevocationInvalid,
            Refusal::Store(_) => R::Store,
        }
    }
}

impl Refusal {
    /// A TLS peer the chain verifier refused: the chain reasons where the
    /// chain was at fault, `peer_untrusted` otherwise.
    pub fn from_peer(e: &certs::tls::PeerError) -> Refusal {
        match e {
            certs::tls::PeerError::Chain(c) => Refusal::Chain(c.clone()),
            other => Refusal::PeerUntrusted(other.to_string()),
        }
    }
}

impl From<DecodeError> for Refusal {
    fn from(e: DecodeError) -> Self {
        Refusal::Malformed(e)
    }
}

/// How many refusals of each reason a node has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusalCounts(BTreeMap<RefusalReason, u64>);

impl RefusalCounts {
    pub fn record(&mut self, reason: RefusalReason) {
        *self.0.entry(reason).or_default() += 1;
    }

    pub fn get(&self, reason: RefusalReason) -> u64 {
        self.0.get(&reason).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (RefusalReason, u64)> + '_ {
        self.0.iter().map(|(r, n)| (*r, *n))
    }
}
