//! The verifier's rules for what is sent ahead of time: scheduled
//! programmes, their audio chunks, and quiet hours. The same chain, signer
//! and scope checks as a broadcast header; their own time rules (a
//! schedule may run for a year, a quiet-hours policy stands until
//! replaced); replay protection by revision (programmes) or number
//! (quiet hours) against what the caller holds.

use crate::programme::{ProgrammeChunk, SignedProgramme, MAX_PROGRAMME_SPAN_MS};
use crate::quiet::SignedQuietHours;
use crate::refusal::Refusal;
use crate::replay::ReplayStore;

use super::{outside_scope, Verifier};

/// What an accepted programme means to the node holding `held`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgrammeVerdict {
    /// Not held before.
    New,
    /// A newer revision of one held.
    Update { from: u32 },
    /// The revision held, byte for byte (a resend after a reconnect).
    Same,
}

/// What a node holds of a programme or policy: its revision (or number)
/// and the digest of its signed body.
pub type HeldRevision = (u64, [u8; 32]);

impl<S: ReplayStore> Verifier<S> {
    /// Verifies a programme: chain, platform signer, signature, id, its
    /// consistency, scope, audience, time (issued at most 2 min ahead, its
    /// last play within a year and a day of its issue, not over), and its
    /// revision against the one `held` here.
    pub fn accept_programme(
        &mut self,
        signed: &SignedProgramme,
        held: Option<HeldRevision>,
        now_ms: i64,
    ) -> Result<ProgrammeVerdict, Refusal> {
        match self.check_programme(signed, held, now_ms) {
            Ok(v) => Ok(v),
            Err(r) => self.refuse(r),
        }
    }

    /// The checks of [`Verifier::accept_programme`] without counting a
    /// refusal (what a node reloads from its own store).
    pub fn check_programme(
        &self,
        signed: &SignedProgramme,
        held: Option<HeldRevision>,
        now_ms: i64,
    ) -> Result<ProgrammeVerdict, Refusal> {
        let p = signed.programme();
        let signer = self.platform_signer(signed.chain(), now_ms / 1000)?;
        if !signed.signature_valid() {
            return Err(Refusal::HeaderSignature);
        }
        if p.id.issuer() != signer.body().resource_code {
            return Err(Refusal::IdNotIssuers);
        }
        p.check().map_err(Refusal::Inconsistent)?;
        outside_scope(&signer, &p.targets)?;
        if !self.audience.addressed_by(&p.targets) {
            return Err(Refusal::NotAddressed);
        }
        if p.issued_at_ms > now_ms + self.policy.max_future_ms {
            return Err(Refusal::IssuedInFuture {
                ahead_ms: p.issued_at_ms - now_ms,
            });
        }
        let until = p.until_ms();
        if until > p.issued_at_ms + MAX_PROGRAMME_SPAN_MS {
            return Err(Refusal::Inconsistent(
                "a programme's last play ends more than a year after its issue",
            ));
        }
        if until < now_ms {
            return Err(Refusal::Expired { end_ms: until });
        }
        newer(u64::from(p.revision), signed.digest(), held).map(|v| match (v, held) {
            (Fresh::New, None) => ProgrammeVerdict::New,
            (Fresh::New, Some((from, _))) => ProgrammeVerdict::Update { from: from as u32 },
            (Fresh::Same, _) => ProgrammeVerdict::Same,
        })
    }

    /// Checks a chunk of audio against the programme it names (`programme`:
    /// the revision held here, if any).
    pub fn accept_chunk(
        &mut self,
        chunk: &ProgrammeChunk,
        programme: Option<&crate::programme::Programme>,
    ) -> Result<(), Refusal> {
        let result = match programme {
            None => Err(Refusal::UnknownProgramme),
            Some(p) if p.withdrawn || !chunk.matches(p) => {
                Err(Refusal::ChunkDigest { index: chunk.index })
            }
            Some(_) => Ok(()),
        };
        match result {
            Ok(()) => Ok(()),
            Err(r) => self.refuse(r),
        }
    }

    /// Verifies a quiet-hours policy: chain, platform signer, signature,
    /// consistency, scope, audience, issue time, and its number against
    /// the signer's policy `held` here. Ok(true) when it is new.
    pub fn accept_quiet_hours(
        &mut self,
        signed: &SignedQuietHours,
        held: Option<HeldRevision>,
        now_ms: i64,
    ) -> Result<bool, Refusal> {
        let result = self.check_quiet_hours(signed, held, now_ms);
        match result {
            Ok(v) => Ok(v),
            Err(r) => self.refuse(r),
        }
    }

    /// The checks of [`Verifier::accept_quiet_hours`] without counting.
    pub fn check_quiet_hours(
        &self,
        signed: &SignedQuietHours,
        held: Option<HeldRevision>,
        now_ms: i64,
    ) -> Result<bool, Refusal> {
        let q = signed.policy();
        let signer = self.platform_signer(signed.chain(), now_ms / 1000)?;
        if !signed.signature_valid() {
            return Err(Refusal::HeaderSignature);
        }
        q.check().map_err(Refusal::Inconsistent)?;
        outside_scope(&signer, &q.targets)?;
        if !self.audience.addressed_by(&q.targets) {
            return Err(Refusal::NotAddressed);
        }
        if q.issued_at_ms > now_ms + self.policy.max_future_ms {
            return Err(Refusal::IssuedInFuture {
                ahead_ms: q.issued_at_ms - now_ms,
            });
        }
        newer(q.number, signed.digest(), held).map(|v| v == Fresh::New)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    New,
    Same,
}

/// A higher number than the one held is new; the same number is a resend
/// only with the same bytes (else two different messages claim one
/// number: a forgery or a bug); a lower one is a replay.
fn newer(number: u64, digest: &[u8; 32], held: Option<HeldRevision>) -> Result<Fresh, Refusal> {
    match held {
        None => Ok(Fresh::New),
        Some((n, _)) if number > n => Ok(Fresh::New),
        Some((n, d)) if number == n && d == *digest => Ok(Fresh::Same),
        Some((n, _)) if number == n => Err(Refusal::DuplicateId),
        Some(_) => Err(Refusal::Replayed),
    }
}
