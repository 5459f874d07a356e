//! The broadcast header: what an EBM says, signed by the issuing platform
//! together with the certificate chain that authorises it.

use certs::cert::MAX_CERT_BYTES;
use certs::chain::MAX_CHAIN_LEN;
use certs::encoding::{DecodeError, Reader, Writer};
use certs::{AreaCode, SignContext};

use crate::ids::{BroadcastClass, BroadcastId, Codec, EventType, MessageType, Severity};

pub const HEADER_VERSION: u8 = 1;
pub const MAX_TARGETS: usize = 512;
pub const MAX_LANGUAGE_BYTES: usize = 16;
pub const MAX_TITLE_BYTES: usize = 256;
pub const MAX_TEXT_BYTES: usize = 8192;
pub const MAX_FRAMES_PER_SEGMENT: u8 = 50;
/// Largest encoded header body; anything longer is refused before parsing.
pub const MAX_HEADER_BYTES: usize = 1
    + 16
    + 1
    + 16
    + 1
    + 5
    + 1
    + 24
    + 2
    + 8 * MAX_TARGETS
    + 6
    + MAX_LANGUAGE_BYTES
    + MAX_TITLE_BYTES
    + MAX_TEXT_BYTES
    + 15
    + 1
    + 1
    + MAX_CHAIN_LEN * (4 + MAX_CERT_BYTES)
    + 64;

/// How the audio of a broadcast is coded and segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioParams {
    pub codec: Codec,
    pub sample_rate: u32,
    pub frame_ms: u8,
    pub channels: u8,
    /// Upper bound on frames per segment.
    pub frames_per_segment: u8,
    /// Live audio has no known length.
    pub live: bool,
    /// Number of segments of recorded audio; 0 when live or without audio.
    pub total_segments: u32,
    /// How long after its presentation time every terminal plays a frame
    /// (ms): the issuer's choice, the same for all so they stay in step;
    /// 0 leaves it to each terminal's configured delay.
    pub playout_delay_ms: u16,
}

/// Longest playout delay an issuer may ask for.
pub const MAX_PLAYOUT_DELAY_MS: u16 = 10_000;

impl AudioParams {
    /// No audio: cancels and text-only messages.
    pub const NONE: AudioParams = AudioParams {
        codec: Codec::None,
        sample_rate: 0,
        frame_ms: 0,
        channels: 0,
        frames_per_segment: 0,
        live: false,
        total_segments: 0,
        playout_delay_ms: 0,
    };

    fn check(&self) -> Result<(), &'static str> {
        match self.codec {
            Codec::None => {
                if *self != AudioParams::NONE {
                    return Err("audio parameters without a codec");
                }
            }
            Codec::Opus => {
                if ![8_000, 12_000, 16_000, 24_000, 48_000].contains(&self.sample_rate) {
                    return Err("Opus sample rate must be 8, 12, 16, 24 or 48 kHz");
                }
                if ![10, 20, 40, 60].contains(&self.frame_ms) {
                    return Err("Opus frame length must be 10, 20, 40 or 60 ms");
                }
                if !(1..=2).contains(&self.channels) {
                    return Err("1 or 2 channels");
                }
                if !(1..=MAX_FRAMES_PER_SEGMENT).contains(&self.frames_per_segment) {
                    return Err("frames per segment out of range");
                }
                if self.live != (self.total_segments == 0) {
                    return Err("recorded audio has a segment count, live audio has none");
                }
                if self.playout_delay_ms > MAX_PLAYOUT_DELAY_MS {
                    return Err("playout delay above 10000 ms");
                }
            }
        }
        Ok(())
    }
}

/// What the issuer says about a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastHeader {
    pub id: BroadcastId,
    pub msg_type: MessageType,
    /// The broadcast a cancel refers to.
    pub related: Option<BroadcastId>,
    pub class: BroadcastClass,
    pub event_type: EventType,
    pub severity: Severity,
    /// Unix milliseconds on the issuer's clock.
    pub issued_at_ms: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Areas addressed; each must lie inside the signer's scope.
    pub targets: Vec<AreaCode>,
    /// BCP 47 tag, e.g. zh-CN.
    pub language: String,
    pub title: String,
    pub text: String,
    pub audio: AudioParams,
    /// Suggested volume 0–100.
    pub volume_hint: Option<u8>,
}

impl BroadcastHeader {
    /// Rules every header must follow; checked before signing and when verifying.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.targets.is_empty() {
            return Err("no target area");
        }
        if self.targets.len() > MAX_TARGETS {
            return Err("too many target areas");
        }
        if self.start_ms >= self.end_ms {
            return Err("start must be before end");
        }
        if self.language.len() > MAX_LANGUAGE_BYTES
            || self.title.len() > MAX_TITLE_BYTES
            || self.text.len() > MAX_TEXT_BYTES
        {
            return Err("text field too long");
        }
        if self.volume_hint.is_some_and(|v| v > 100) {
            return Err("volume hint above 100");
        }
        match self.msg_type {
            MessageType::Cancel => {
                if self.related.is_none() || self.audio.codec != Codec::None {
                    return Err("a cancel names the broadcast it cancels and carries no audio");
                }
            }
            t => {
                if self.related.is_some() {
                    return Err("only a cancel refers to another broadcast");
                }
                // Drills must look unmistakably different from real alerts.
                if t.is_drill() != (self.class == BroadcastClass::Drill) {
                    return Err("drill message types go with the drill class, and only they");
                }
            }
        }
        self.audio.check()
    }

    fn encode_into(&self, w: &mut Writer) {
        w.u8(HEADER_VERSION)
            .u128(self.id.as_u128())
            .u8(self.msg_type.code())
            .u128(self.related.map_or(0, BroadcastId::as_u128))
            .u8(self.class.code())
            .raw(self.event_type.as_bytes())
            .u8(self.severity.code())
            .i64(self.issued_at_ms)
            .i64(self.start_ms)
            .i64(self.end_ms)
            .u16(self.targets.len() as u16);
        for t in &self.targets {
            w.u64(t.as_u64());
        }
        w.str16(&self.language).str16(&self.title).str16(&self.text);
        let a = &self.audio;
        w.u8(a.codec.code())
            .u32(a.sample_rate)
            .u8(a.frame_ms)
            .u8(a.channels)
            .u8(a.frames_per_segment)
            .u8(a.live as u8)
            .u32(a.total_segments)
            .u16(a.playout_delay_ms)
            .u8(self.volume_hint.unwrap_or(u8::MAX));
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8("header version")?;
        if version != HEADER_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let id = BroadcastId::from_u128(r.u128("id")?)?;
        let msg_type = MessageType::from_code(r.u8("message type")?)?;
        let related = match r.u128("related id")? {
            0 => None,
            v => Some(BroadcastId::from_u128(v)?),
        };
        let class = BroadcastClass::from_code(r.u8("class")?)?;
        let event_type = EventType::from_bytes(r.array("event type")?)?;
        let severity = Severity::from_code(r.u8("severity")?)?;
        let issued_at_ms = r.i64("issued at")?;
        let start_ms = r.i64("start")?;
        let end_ms = r.i64("end")?;
        let n = r.count16(MAX_TARGETS, "targets")?;
        let mut targets = Vec::with_capacity(n);
        for _ in 0..n {
            targets.push(
                AreaCode::from_u64(r.u64("target")?)
                    .map_err(|e| DecodeError::invalid("target", e.to_string()))?,
            );
        }
        let language = r.str16(MAX_LANGUAGE_BYTES, "language")?.to_string();
        let title = r.str16(MAX_TITLE_BYTES, "title")?.to_string();
        let text = r.str16(MAX_TEXT_BYTES, "text")?.to_string();
        let audio = AudioParams {
            codec: Codec::from_code(r.u8("codec")?)?,
            sample_rate: r.u32("sample rate")?,
            frame_ms: r.u8("frame length")?,
            channels: r.u8("channels")?,
            frames_per_segment: r.u8("frames per segment")?,
            live: match r.u8("live")? {
                0 => false,
                1 => true,
                v => return Err(DecodeError::invalid("live", v.to_string())),
            },
            total_segments: r.u32("total segments")?,
            playout_delay_ms: r.u16("playout delay")?,
        };
        let volume_hint = match r.u8("volume hint")? {
            u8::MAX => None,
            v => Some(v),
        };
        Ok(BroadcastHeader {
            id,
            msg_type,
            related,
            class,
            event_type,
            severity,
            issued_at_ms,
            start_ms,
            end_ms,
            targets,
            language,
            title,
            text,
            audio,
            volume_hint,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    #[error("header is inconsistent: {0}")]
    Inconsistent(&'static str),
    #[error("the signing identity has no certificate chain below the root")]
    NoChain,
}

/// A header with its signer's chain and signature, holding its exact bytes
/// so relays forward them unchanged.
pub type SignedHeader = crate::Signed<BroadcastHeader>;

impl crate::Sealable for BroadcastHeader {
    const CONTEXT: SignContext = SignContext::Header;
    const MAX_BYTES: usize = MAX_HEADER_BYTES;
    const WHAT: &'static str = "header";

    fn check(&self) -> Result<(), &'static str> {
        BroadcastHeader::check(self)
    }

    fn encode_into(&self, w: &mut Writer) {
        BroadcastHeader::encode_into(self, w)
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        BroadcastHeader::decode_from(r)
    }
}

impl SignedHeader {
    pub fn header(&self) -> &BroadcastHeader {
        self.message()
    }

    pub fn id(&self) -> BroadcastId {
        self.message().id
    }
}
