//! Issuing here: audio file → Opus frames → signed header and segments,
//! kept durably before the operator is told it was accepted. Cancel by id.

use std::path::Path;

use bytes::Bytes;
use certs::{AreaCode, ResourceCode};
use protocol::build::{segments_needed, SegmentSigner};
use protocol::{
    AudioParams, BroadcastClass, BroadcastHeader, BroadcastId, Codec, Message, MessageType,
    SignedHeader,
};

use crate::drafts::{DraftFields, Plan};
use crate::lead::Lead;
use crate::now_ms;
use crate::relay::Relay;
use crate::store::Store;

/// Frames per segment of recorded audio (500 ms; PROTOCOL.md section 5).
/// Recorded audio exists whole before it is signed, so a longer segment
/// adds no latency; it saves what every terminal pays per segment
/// (a signature check, a journal entry, a stream frame), which adds up when
/// an alert's first seconds reach the whole district at once.
pub const FRAMES_PER_SEGMENT: u8 = 25;
/// Default time between accepting a broadcast and its first frame's
/// presentation: room for it to reach and be verified by every terminal
/// through three tiers, so all start in step.
pub const DEFAULT_LEAD_MS: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("area {0} lies outside this platform's scope ({1})")]
    OutsideScope(AreaCode, String),
    #[error("no target area given")]
    NoTargets,
    #[error("{0}")]
    Invalid(String),
    #[error("audio: {0}")]
    Audio(#[from] codec::CodecError),
    #[error(
        "valid_minutes: the audio lasts {} s, longer than its validity of {valid_minutes} min: \
         it would be cut off; give at least {} minutes",
        audio_ms / 1000,
        (audio_ms + lead_ms + 59_999) / 60_000
    )]
    LongerThanValidity {
        audio_ms: i64,
        lead_ms: i64,
        valid_minutes: i64,
    },
    #[error("audio: the file is silent (nothing above −70 LUFS); an emergency must be heard")]
    SilentEmergency,
    #[error("no broadcast {0} is held here")]
    NoSuchBroadcast(BroadcastId),
    #[error("broadcast {0} is already cancelled")]
    AlreadyCancelled(BroadcastId),
    #[error("refused by this platform's own verifier: {0}")]
    Refused(String),
    #[error("store: {0}")]
    Store(String),
    #[error(
        "all {} broadcast ids of {day} (China time) are used; issuing resumes at midnight",
        crate::store::SEQUENCES_PER_DAY
    )]
    IdsExhausted { day: u32 },
}

/// Hands out this platform's broadcast ids: its resource code, the issue
/// day in China, and that day's next sequence number, reserved durably in
/// the store first. A restarted or crashed platform never reuses an id (a
/// reused id is refused as a duplicate all the way down the tree).
#[derive(Clone)]
pub struct IdAllocator {
    store: Store,
    issuer: ResourceCode,
}

impl IdAllocator {
    pub fn new(store: Store, issuer: ResourceCode) -> Self {
        IdAllocator { store, issuer }
    }

    /// A fresh id for a broadcast issued at `now_ms`.
    pub fn next(&self, now_ms: i64) -> Result<BroadcastId, IssueError> {
        let (y, m, d) = china_date(now_ms);
        let day = y as u32 * 10_000 + m as u32 * 100 + d as u32;
        let seq = self
            .store
            .reserve_sequence(day)
            .map_err(|e| IssueError::Store(e.to_string()))?
            .ok_or(IssueError::IdsExhausted { day })?;
        BroadcastId::new(&self.issuer, (y, m, d), seq)
            .map_err(|e| IssueError::Invalid(e.to_string()))
    }
}

/// Today's date in China (Asia/Shanghai, UTC+8), for the broadcast id.
fn china_date(unix_ms: i64) -> (u16, u8, u8) {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(certs::time::CHINA_OFFSET);
    (t.year() as u16, t.month() as u8, t.day())
}

pub fn check_scope(relay: &Relay, targets: &[AreaCode]) -> Result<(), IssueError> {
    if targets.is_empty() {
        return Err(IssueError::NoTargets);
    }
    if let Some(t) = certs::area::first_outside(targets, &relay.scope) {
        let scope: Vec<String> = relay.scope.iter().map(|a| a.to_string()).collect();
        return Err(IssueError::OutsideScope(t, scope.join(", ")));
    }
    Ok(())
}

/// Decodes and encodes `audio` for a broadcast with `fields`, and checks
/// what the result must be (see `check_audio`). Blocking (decoding,
/// encoding): callers on a runtime use `spawn_blocking`.
pub fn ingest(
    audio: &Path,
    ingest: &codec::IngestConfig,
    fields: &DraftFields,
    lead_ms: i64,
) -> Result<(codec::Encoded, Vec<String>), IssueError> {
    let encoded = codec::ingest_file(audio, ingest, &mut |_| {})?;
    let warnings = check_audio(fields, &encoded, lead_ms)?;
    Ok((encoded, warnings))
}

/// Fixes the header's id and times for a broadcast of `fields` signed at
/// `now`: its audio presents from `now + lead`. A measured lead also names
/// a short playout delay in the header (the first segment is known to
/// arrive in time); a configured one leaves the terminals' own.
pub fn plan(
    ids: &IdAllocator,
    fields: &DraftFields,
    now: i64,
    lead: Lead,
) -> Result<Plan, IssueError> {
    let id = ids.next(now)?;
    Ok(Plan {
        broadcast: id.as_u128(),
        issued_at_ms: now,
        end_ms: now + fields.valid_minutes.max(1) * 60_000,
        play_at_us: (now + lead.lead_ms) * 1000,
        playout_delay_ms: if lead.measured_ms.is_some() {
            crate::lead::MEASURED_PLAYOUT_DELAY_MS
        } else {
            0
        },
        revision: None,
    })
}

/// Signs the header and segments of a broadcast of `fields` with `frames`
/// as `plan` says and publishes them. The same plan, fields and frames
/// always give the same bytes (Ed25519 is deterministic), so a crash
/// between signing and recording it re-signs the very same broadcast.
/// Blocking (fsync).
pub fn sign_and_publish(
    relay: &Relay,
    fields: &DraftFields,
    frames: Vec<Vec<u8>>,
    sample_rate: u32,
    plan: &Plan,
) -> Result<BroadcastId, IssueError> {
    check_scope(relay, &fields.targets)?;
    let id =
        BroadcastId::from_u128(plan.broadcast).map_err(|e| IssueError::Invalid(e.to_string()))?;
    let identity = &relay.identity;
    let header = header_of(
        fields,
        id,
        (plan.issued_at_ms, plan.end_ms),
        AudioParams {
            codec: Codec::Opus,
            sample_rate,
            frame_ms: 20,
            channels: 1,
            frames_per_segment: FRAMES_PER_SEGMENT,
            live: false,
            total_segments: segments_needed(frames.len(), FRAMES_PER_SEGMENT),
            playout_delay_ms: plan.playout_delay_ms,
        },
    );
    let signed =
        SignedHeader::sign(header, identity).map_err(|e| IssueError::Invalid(e.to_string()))?;
    let segments = SegmentSigner::new(&signed, &identity.key, plan.play_at_us)
        .sign_all(frames, FRAMES_PER_SEGMENT)
        .map_err(|e| IssueError::Invalid(e.to_string()))?;
    // Before it goes out: on a quick tree the first acknowledgements come
    // back before publishing returns.
    {
        let mut book = relay.book();
        let online = book.online_terminals(crate::now_ms(), crate::api::OFFLINE_AFTER_MS);
        book.lead.issued(id, plan.issued_at_ms, online);
    }
    publish(relay, signed, segments.into_iter().map(Message::Segment))?;
    Ok(id)
}

/// The header of a broadcast of `fields` issued (and starting) at
/// `issued_ms`, valid until `end_ms`, with `audio`.
fn header_of(
    fields: &DraftFields,
    id: BroadcastId,
    (issued_ms, end_ms): (i64, i64),
    audio: AudioParams,
) -> BroadcastHeader {
    BroadcastHeader {
        id,
        msg_type: fields.msg_type(),
        related: None,
        class: fields.class,
        event_type: fields.event_type,
        severity: fields.severity,
        issued_at_ms: issued_ms,
        start_ms: issued_ms,
        end_ms,
        targets: fields.targets.clone(),
        language: fields.language.clone(),
        title: fields.title.clone(),
        text: fields.text.clone(),
        audio,
        volume_hint: fields.volume,
    }
}

/// Signs and publishes the header of a live broadcast of `fields` opening
/// at `now` (its validity bounds how long it may last), whose terminals
/// play each frame `delay_ms` after it presents. Its id and the header's
/// digest (the segments bind to it). Blocking (fsync).
pub fn open_live(
    relay: &Relay,
    ids: &IdAllocator,
    fields: &DraftFields,
    now: i64,
    delay_ms: u16,
) -> Result<(BroadcastId, [u8; 32]), IssueError> {
    let id = ids.next(now)?;
    let header = header_of(
        fields,
        id,
        (now, now + fields.valid_minutes.max(1) * 60_000),
        AudioParams {
            codec: Codec::Opus,
            sample_rate: 16_000,
            frame_ms: 20,
            channels: 1,
            frames_per_segment: crate::live::LIVE_FRAMES_PER_SEGMENT,
            live: true,
            total_segments: 0,
            playout_delay_ms: delay_ms,
        },
    );
    let signed = SignedHeader::sign(header, &relay.identity)
        .map_err(|e| IssueError::Invalid(e.to_string()))?;
    let digest = *signed.digest();
    publish(relay, signed, std::iter::empty())?;
    Ok((id, digest))
}

/// What the ingested audio must be for this request: it fits in its
/// validity (or every terminal would cut it off), and an emergency is not
/// silent. A silent notice is accepted with a warning.
fn check_audio(
    fields: &DraftFields,
    encoded: &codec::Encoded,
    lead_ms: i64,
) -> Result<Vec<String>, IssueError> {
    let audio_ms = encoded.frames.len() as i64 * 20;
    if encoded.frames.is_empty() {
        return Err(IssueError::Invalid("audio: the file holds no audio".into()));
    }
    if audio_ms + lead_ms > fields.valid_minutes.max(1) * 60_000 {
        return Err(IssueError::LongerThanValidity {
            audio_ms,
            lead_ms,
            valid_minutes: fields.valid_minutes,
        });
    }
    let mut warnings = Vec::new();
    if encoded.normalisation.source_lufs.is_none() {
        if fields.class == BroadcastClass::Emergency {
            return Err(IssueError::SilentEmergency);
        }
        warnings.push("audio: the file is silent (nothing above −70 LUFS)".to_string());
    }
    Ok(warnings)
}

/// Cancels a broadcast everywhere with a signed cancel message. Blocking
/// (fsync), like `issue`.
pub fn cancel(
    relay: &Relay,
    ids: &IdAllocator,
    target: BroadcastId,
) -> Result<BroadcastId, IssueError> {
    let original = relay
        .broadcasts
        .get(target)
        .ok_or(IssueError::NoSuchBroadcast(target))?;
    if original.is_cancelled() {
        return Err(IssueError::AlreadyCancelled(target));
    }
    if original.header.header().msg_type == MessageType::Cancel {
        return Err(IssueError::Invalid(format!(
            "{target} is itself a cancel; it cannot be cancelled"
        )));
    }
    let o = original.header.header();
    let now = now_ms();
    let identity = &relay.identity;
    let id = ids.next(now)?;
    let header = BroadcastHeader {
        id,
        msg_type: MessageType::Cancel,
        related: Some(target),
        class: o.class,
        event_type: o.event_type,
        severity: o.severity,
        issued_at_ms: now,
        start_ms: now,
        end_ms: o.end_ms.max(now + 60_000),
        targets: o.targets.clone(),
        language: o.language.clone(),
        title: format!("取消: {}", o.title),
        text: String::new(),
        audio: AudioParams::NONE,
        volume_hint: None,
    };
    let signed =
        SignedHeader::sign(header, identity).map_err(|e| IssueError::Invalid(e.to_string()))?;
    publish(relay, signed, std::iter::empty())?;
    Ok(id)
}

/// Cancels broadcast `target` of a lower tier, which this platform does
/// not hold (broadcasts travel down): a cancel for `areas`, in this
/// platform's scope, that the relays and terminals below accept because a
/// higher tier whose scope covers the broadcast's targets may cancel it.
pub fn cancel_below(
    relay: &Relay,
    ids: &IdAllocator,
    target: BroadcastId,
    areas: Vec<AreaCode>,
) -> Result<BroadcastId, IssueError> {
    check_scope(relay, &areas)?;
    let now = now_ms();
    let id = ids.next(now)?;
    let header = BroadcastHeader {
        id,
        msg_type: MessageType::Cancel,
        related: Some(target),
        class: BroadcastClass::Emergency,
        event_type: "10000"
            .parse()
            .map_err(|e: certs::encoding::DecodeError| IssueError::Invalid(e.to_string()))?,
        severity: protocol::Severity::Unknown,
        issued_at_ms: now,
        start_ms: now,
        // Long enough to outlive what it cancels (the verifier caps 7 days).
        end_ms: now + 86_400_000,
        targets: areas,
        language: "zh-CN".into(),
        title: format!("上级取消: {target}"),
        text: String::new(),
        audio: AudioParams::NONE,
        volume_hint: None,
    };
    let signed = SignedHeader::sign(header, &relay.identity)
        .map_err(|e| IssueError::Invalid(e.to_string()))?;
    publish(relay, signed, std::iter::empty())?;
    Ok(id)
}

fn publish(
    relay: &Relay,
    header: SignedHeader,
    segments: impl Iterator<Item = Message>,
) -> Result<(), IssueError> {
    let frame = Bytes::from(Message::Header(header).encode());
    relay
        .ingest_header(frame, false, crate::now_ms())
        .map_err(|e| IssueError::Refused(e.to_string()))?;
    let mut last = Ok(());
    for s in segments {
        last = relay.ingest_segment(Bytes::from(s.encode()), false, crate::now_ms());
        if last.is_err() {
            break;
        }
    }
    last.map_err(|e| IssueError::Refused(e.to_string()))?;
    relay.flush().map_err(|e| IssueError::Store(e.to_string()))
}

/// Signs a remote command (volume, mute, ...) for areas or terminals in this
/// platform's scope and sends it down. Returns the command id.
pub fn command(
    relay: &Relay,
    targets: Vec<AreaCode>,
    terminals: Vec<u64>,
    action: protocol::Action,
) -> Result<u64, IssueError> {
    if targets.is_empty() && terminals.is_empty() {
        return Err(IssueError::NoTargets);
    }
    if !targets.is_empty() {
        check_scope(relay, &targets)?;
    }
    use rand::RngCore;
    let id = rand::rngs::OsRng.next_u64();
    let now = now_ms();
    let cmd = protocol::Command {
        command_id: id,
        issued_at_ms: now,
        expires_at_ms: now + 5 * 60_000,
        target_areas: targets,
        target_terminals: terminals,
        action,
    };
    let frame = Bytes::from(Message::Command(cmd.sign(&relay.identity)).encode());
    relay
        .ingest_command(frame, crate::now_ms())
        .map_err(|e| IssueError::Refused(e.to_string()))?;
    Ok(id)
}
