//! Issuing here: audio file → Opus frames → signed header and segments,
//! kept durably before the operator is told it was accepted. Cancel by id.

use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use certs::AreaCode;
use protocol::build::{segments_needed, SegmentSigner};
use protocol::{
    AudioParams, BroadcastClass, BroadcastHeader, BroadcastId, Codec, EventType, Message,
    MessageType, Severity, SignedHeader,
};

use crate::relay::{now_ms, Relay};

/// Frames per segment of recorded audio (200 ms; PROTOCOL.md section 5).
const FRAMES_PER_SEGMENT: u8 = 10;
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
    #[error("refused by this platform's own verifier: {0}")]
    Refused(String),
    #[error("store: {0}")]
    Store(String),
}

/// What an operator asks for.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub targets: Vec<AreaCode>,
    pub class: BroadcastClass,
    pub msg_type: MessageType,
    pub severity: Severity,
    pub event_type: EventType,
    pub title: String,
    pub text: String,
    pub language: String,
    pub valid_minutes: i64,
    pub volume: Option<u8>,
}

/// Daily sequence numbers for broadcast ids (4 digits, wraps).
#[derive(Debug, Default)]
pub struct Sequence(AtomicU16);

impl Sequence {
    pub fn next(&self) -> u16 {
        self.0.fetch_add(1, Ordering::Relaxed) % 10_000
    }
}

/// Today's date in China (Asia/Shanghai, UTC+8), for the broadcast id.
fn china_date(unix_ms: i64) -> (u16, u8, u8) {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(certs::time::CHINA_OFFSET);
    (t.year() as u16, t.month() as u8, t.day())
}

/// The next broadcast id of this platform: its resource code, today's date
/// in China, the daily sequence.
fn next_id(relay: &Relay, seq: &Sequence, now_ms: i64) -> Result<BroadcastId, IssueError> {
    BroadcastId::new(
        &relay.identity.cert().body().resource_code,
        china_date(now_ms),
        seq.next(),
    )
    .map_err(|e| IssueError::Invalid(e.to_string()))
}

pub fn check_scope(relay: &Relay, targets: &[AreaCode]) -> Result<(), IssueError> {
    if targets.is_empty() {
        return Err(IssueError::NoTargets);
    }
    if let Some(t) = targets
        .iter()
        .find(|t| !relay.scope.iter().any(|s| s.covers(**t)))
    {
        let scope: Vec<String> = relay.scope.iter().map(|a| a.to_string()).collect();
        return Err(IssueError::OutsideScope(*t, scope.join(", ")));
    }
    Ok(())
}

/// Encodes `audio`, signs, and publishes. Returns once stored durably.
pub async fn issue(
    relay: Arc<Relay>,
    seq: &Sequence,
    req: IssueRequest,
    audio: &Path,
    ingest: codec::IngestConfig,
    lead_ms: i64,
) -> Result<BroadcastId, IssueError> {
    check_scope(&relay, &req.targets)?;
    let path = audio.to_path_buf();
    let encoded =
        tokio::task::spawn_blocking(move || codec::ingest_file(&path, &ingest, &mut |_| {}))
            .await
            .map_err(|e| IssueError::Invalid(e.to_string()))??;
    let now = now_ms();
    let identity = &relay.identity;
    let id = next_id(&relay, seq, now)?;
    let header = BroadcastHeader {
        id,
        msg_type: req.msg_type,
        related: None,
        class: req.class,
        event_type: req.event_type,
        severity: req.severity,
        issued_at_ms: now,
        start_ms: now,
        end_ms: now + req.valid_minutes.max(1) * 60_000,
        targets: req.targets,
        language: req.language,
        title: req.title,
        text: req.text,
        audio: AudioParams {
            codec: Codec::Opus,
            sample_rate: encoded.sample_rate,
            frame_ms: 20,
            channels: 1,
            frames_per_segment: FRAMES_PER_SEGMENT,
            live: false,
            total_segments: segments_needed(encoded.frames.len(), FRAMES_PER_SEGMENT),
        },
        volume_hint: req.volume,
    };
    let signed =
        SignedHeader::sign(header, identity).map_err(|e| IssueError::Invalid(e.to_string()))?;
    let segments = SegmentSigner::new(&signed, &identity.key, (now + lead_ms) * 1000)
        .sign_all(encoded.frames, FRAMES_PER_SEGMENT)
        .map_err(|e| IssueError::Invalid(e.to_string()))?;
    publish(&relay, signed, segments.into_iter().map(Message::Segment))?;
    Ok(id)
}

/// Cancels a broadcast everywhere with a signed cancel message.
pub fn cancel(
    relay: &Relay,
    seq: &Sequence,
    target: BroadcastId,
) -> Result<BroadcastId, IssueError> {
    let original = relay
        .get(target)
        .ok_or_else(|| IssueError::Invalid(format!("no broadcast {target} here")))?;
    let o = original.header.header();
    let now = now_ms();
    let identity = &relay.identity;
    let id = next_id(relay, seq, now)?;
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

fn publish(
    relay: &Relay,
    header: SignedHeader,
    segments: impl Iterator<Item = Message>,
) -> Result<(), IssueError> {
    let frame = Bytes::from(Message::Header(header).encode());
    relay
        .ingest_header(frame, false)
        .map_err(|e| IssueError::Refused(e.to_string()))?;
    let mut last = Ok(());
    for s in segments {
        last = relay.ingest_segment(Bytes::from(s.encode()), false);
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
        .ingest_command(frame)
        .map_err(|e| IssueError::Refused(e.to_string()))?;
    Ok(id)
}
