//! Fixtures shared by tests and benchmarks: plausible headers and fake Opus
//! frames. Not used by the programs.

use certs::{AreaCode, Identity};

use crate::build::{segments_needed, SegmentSigner};
use crate::header::{AudioParams, BroadcastHeader, SignedHeader};
use crate::ids::{BroadcastClass, BroadcastId, Codec, MessageType, Severity};
use crate::segment::Segment;

/// A recorded emergency alert header from `issuer` to `targets`, issued at
/// `now_ms`, lasting an hour, with `segments` segments of 10 frames.
pub fn alert_header(
    issuer: &Identity,
    sequence: u16,
    targets: Vec<AreaCode>,
    now_ms: i64,
    segments: u32,
) -> BroadcastHeader {
    BroadcastHeader {
        id: BroadcastId::new(
            &issuer.cert().body().resource_code,
            (2026, 11, 28),
            sequence,
        )
        .expect("valid fixture id"),
        msg_type: MessageType::Broadcast,
        related: None,
        class: BroadcastClass::Emergency,
        event_type: "11B06".parse().expect("valid event type"),
        severity: Severity::Red,
        issued_at_ms: now_ms,
        start_ms: now_ms,
        end_ms: now_ms + 3_600_000,
        targets,
        language: "zh-CN".into(),
        title: "防汛紧急转移通知".into(),
        text: "请沿河低洼地带居民立即转移到安全地点。".into(),
        audio: AudioParams {
            codec: Codec::Opus,
            sample_rate: 16_000,
            frame_ms: 20,
            channels: 1,
            frames_per_segment: 10,
            live: segments == 0,
            total_segments: segments,
            playout_delay_ms: 0,
        },
        volume_hint: Some(80),
    }
}

/// A fake Opus frame of 60 bytes (24 kbit/s at 20 ms), distinct per index.
pub fn fake_frame(i: usize) -> Vec<u8> {
    (0..60).map(|b| (b as usize * 7 + i) as u8).collect()
}

/// A complete signed recorded broadcast: header and `segments` segments.
pub fn recorded_broadcast(
    issuer: &Identity,
    sequence: u16,
    targets: Vec<AreaCode>,
    now_ms: i64,
    segments: u32,
) -> (SignedHeader, Vec<Segment>) {
    let frames: Vec<Vec<u8>> = (0..segments as usize * 10).map(fake_frame).collect();
    debug_assert_eq!(segments_needed(frames.len(), 10), segments);
    let header = SignedHeader::sign(
        alert_header(issuer, sequence, targets, now_ms, segments),
        issuer,
    )
    .expect("consistent fixture header");
    let segs = SegmentSigner::new(&header, &issuer.key, now_ms * 1000)
        .sign_all(frames, 10)
        .expect("valid fixture frames");
    (header, segs)
}

/// A daily programme of `frames` fake frames (20 ms, 16 kHz, chunks of
/// 50) from `issuer` to `targets`, issued at `now_ms`, playing by
/// `schedule`.
pub fn programme(
    issuer: &Identity,
    sequence: u16,
    targets: Vec<AreaCode>,
    now_ms: i64,
    schedule: crate::schedule::Schedule,
    frames: &[Vec<u8>],
) -> crate::programme::Programme {
    crate::programme::Programme {
        id: BroadcastId::new(&issuer.cert().body().resource_code, (2026, 12, 7), sequence)
            .expect("valid fixture id"),
        revision: 1,
        issued_at_ms: now_ms,
        withdrawn: false,
        class: BroadcastClass::Daily,
        event_type: "10000".parse().expect("valid event type"),
        targets,
        language: "zh-CN".into(),
        title: "每日新闻".into(),
        text: "村广播每日新闻。".into(),
        schedule,
        audio: crate::programme::ProgrammeAudio::of(frames, 16_000, 20, 50),
        volume_hint: None,
    }
}
