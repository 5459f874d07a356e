//! Forged broadcasts for the attack suite: real Opus audio (loud music, so
//! a leak would be unmistakable in any sink) under headers and segments
//! signed however the attack needs.

use certs::{AreaCode, Identity, SecretKey};
use protocol::build::SegmentSigner;
use protocol::testing::alert_header;
use protocol::{BroadcastHeader, BroadcastId, Message, Segment, SignedHeader};

/// The attack's audio at 16 kHz: three seconds of the music jingle.
pub fn attack_pcm() -> Vec<f32> {
    let mut pcm = crate::pcm16k("programme-jingle-44k-stereo.mp3");
    pcm.truncate(3 * 16_000);
    pcm
}

/// The attack's audio as Opus frames.
pub fn attack_opus() -> Vec<Vec<u8>> {
    codec::encode_pcm(&attack_pcm(), codec::opus::EncoderConfig::default()).expect("encode")
}

/// A broadcast and its segments, ready to put on a stream.
#[derive(Debug, Clone)]
pub struct Forged {
    pub header: SignedHeader,
    pub segments: Vec<Segment>,
}

impl Forged {
    pub fn id(&self) -> BroadcastId {
        self.header.id()
    }

    /// Header then segments, as frames.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        std::iter::once(Message::Header(self.header.clone()).encode())
            .chain(
                self.segments
                    .iter()
                    .map(|s| Message::Segment(s.clone()).encode()),
            )
            .collect()
    }
}

pub fn now_ms() -> i64 {
    certs::time::unix_now_ms()
}

/// An emergency (severity I) to `targets`, signed by `signer` without any
/// consistency check, after `edit` changed the header; it starts in 300 ms.
pub fn broadcast(
    signer: &Identity,
    seq: u16,
    targets: Vec<AreaCode>,
    edit: impl FnOnce(&mut BroadcastHeader),
) -> Forged {
    let frames = attack_opus();
    let per = 10u8;
    let now = now_ms();
    let mut h = alert_header(
        signer,
        seq,
        targets,
        now,
        protocol::build::segments_needed(frames.len(), per),
    );
    h.start_ms = now;
    h.end_ms = now + 600_000;
    h.title = "伪造警报".into();
    edit(&mut h);
    let header = SignedHeader::sign_unchecked(h, signer).expect("forged header signs");
    let segments = sign_segments(&header, &signer.key, (now + 300) * 1000, frames, per);
    Forged { header, segments }
}

/// Segments of `frames` bound to `header`, signed with `key`.
pub fn sign_segments(
    header: &SignedHeader,
    key: &SecretKey,
    start_us: i64,
    frames: Vec<Vec<u8>>,
    per: u8,
) -> Vec<Segment> {
    SegmentSigner::new(header, key, start_us)
        .sign_all(frames, per)
        .expect("frames within limits")
}

/// A frame whose last 64 bytes (the signature) are zeroed: "unsigned".
pub fn strip_signature(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let n = f.len();
    f[n.saturating_sub(64)..].fill(0);
    f
}

/// A fresh identity under a root of its own: a complete, valid-looking chain
/// that does not lead to the district's root.
pub fn foreign_identity(tier: certs::Tier) -> Identity {
    let now = certs::time::unix_now();
    let validity = (now - 3600, now + 86_400);
    let pki = certs::pki::DistrictPki::generate(certs::pki::Layout::ONE_OF_EACH, validity, now)
        .expect("foreign pki");
    match tier {
        certs::Tier::District => pki.district,
        certs::Tier::Town => pki.towns.into_iter().next().expect("town").identity,
        certs::Tier::Terminal => pki
            .towns
            .into_iter()
            .next()
            .and_then(|t| t.villages.into_iter().next())
            .and_then(|v| v.terminals.into_iter().next())
            .expect("terminal"),
        _ => {
            pki.towns
                .into_iter()
                .next()
                .and_then(|t| t.villages.into_iter().next())
                .expect("village")
                .identity
        }
    }
}
