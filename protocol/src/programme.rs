//! Scheduled programmes (R9, 平战结合): a platform signs a programme (what
//! it is, where, when it plays, and the SHA-256 of each chunk of its audio)
//! once; relays pass it and its audio down ahead of time; terminals cache
//! both and play each occurrence from their own clock, on the tree's time,
//! even while their link is down (断网续播). A change or a withdrawal is a
//! new revision of the same programme, signed again.
//!
//! The audio travels in chunks that carry no signature of their own: each
//! is bound by the digest the signed programme lists for its index.

use certs::cert::MAX_CERT_BYTES;
use certs::chain::MAX_CHAIN_LEN;
use certs::encoding::{DecodeError, Reader, Writer};
use certs::{AreaCode, PublicKey, SecretKey, SignContext, Signature};
use sha2::{Digest, Sha256};

use crate::header::{MAX_LANGUAGE_BYTES, MAX_TARGETS, MAX_TEXT_BYTES, MAX_TITLE_BYTES};
use crate::ids::{coded_enum, BroadcastClass, BroadcastId, EventType};
use crate::request::MAX_OPUS_PACKET_BYTES;
use crate::schedule::{Schedule, MAX_SCHEDULE_DAYS, MAX_TIMES_PER_DAY};

pub const PROGRAMME_VERSION: u8 = 1;
/// Longest programme audio: 30 minutes.
pub const MAX_PROGRAMME_MS: i64 = 30 * 60 * 1000;
/// Most frames in one chunk of audio (5 s of 20 ms frames).
pub const MAX_CHUNK_FRAMES: usize = 250;
/// Most chunks of one programme.
pub const MAX_CHUNKS: usize = 720;
/// Most programmes one inventory names.
pub const MAX_INVENTORY: usize = 512;
/// A programme's last play ends at most this long after it was issued.
pub const MAX_PROGRAMME_SPAN_MS: i64 = (MAX_SCHEDULE_DAYS as i64 + 1) * 86_400_000;

/// Largest encoded programme body.
pub const MAX_PROGRAMME_BYTES: usize = 1
    + 16
    + 4
    + 8
    + 1
    + 1
    + 5
    + 2
    + 8 * MAX_TARGETS
    + 6
    + MAX_LANGUAGE_BYTES
    + MAX_TITLE_BYTES
    + MAX_TEXT_BYTES
    + 2
    + 4
    + 4
    + 1
    + 1
    + 4 * MAX_TIMES_PER_DAY
    + 4
    + 1
    + 4
    + 2
    + 2
    + 32 * MAX_CHUNKS
    + 1
    + 1
    + MAX_CHAIN_LEN * (4 + MAX_CERT_BYTES)
    + 64;
/// Largest encoded chunk body.
pub const MAX_CHUNK_BYTES: usize = 1 + 16 + 2 + 2 + MAX_CHUNK_FRAMES * (2 + MAX_OPUS_PACKET_BYTES);

fn version(r: &mut Reader<'_>, what: &'static str) -> Result<(), DecodeError> {
    match r.u8(what)? {
        PROGRAMME_VERSION => Ok(()),
        v => Err(DecodeError::UnsupportedVersion(v)),
    }
}

/// How a programme's audio is coded and cut into chunks. A withdrawn
/// revision carries none ([`ProgrammeAudio::NONE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgrammeAudio {
    /// Opus: 8, 12, 16, 24 or 48 kHz, mono.
    pub sample_rate: u32,
    pub frame_ms: u8,
    pub total_frames: u32,
    /// Frames in every chunk but the last.
    pub frames_per_chunk: u16,
    /// SHA-256 of each chunk ([`chunk_digest`]), in order.
    pub chunks: Vec<[u8; 32]>,
}

impl ProgrammeAudio {
    pub const NONE: ProgrammeAudio = ProgrammeAudio {
        sample_rate: 0,
        frame_ms: 0,
        total_frames: 0,
        frames_per_chunk: 0,
        chunks: Vec::new(),
    };

    /// The audio of `frames` (Opus packets of `frame_ms`), cut into chunks
    /// of `frames_per_chunk`.
    pub fn of(frames: &[Vec<u8>], sample_rate: u32, frame_ms: u8, frames_per_chunk: u16) -> Self {
        let per = frames_per_chunk.max(1) as usize;
        ProgrammeAudio {
            sample_rate,
            frame_ms,
            total_frames: frames.len() as u32,
            frames_per_chunk: per as u16,
            chunks: frames.chunks(per).map(chunk_digest).collect(),
        }
    }

    pub fn duration_ms(&self) -> i64 {
        self.total_frames as i64 * self.frame_ms as i64
    }

    /// Frames in chunk `index`.
    pub fn frames_in(&self, index: usize) -> usize {
        let per = self.frames_per_chunk as usize;
        let start = index * per;
        (self.total_frames as usize).saturating_sub(start).min(per)
    }

    fn check(&self) -> Result<(), &'static str> {
        if ![8_000, 12_000, 16_000, 24_000, 48_000].contains(&self.sample_rate) {
            return Err("Opus sample rate must be 8, 12, 16, 24 or 48 kHz");
        }
        if ![10, 20, 40, 60].contains(&self.frame_ms) {
            return Err("Opus frame length must be 10, 20, 40 or 60 ms");
        }
        if self.total_frames == 0 || self.duration_ms() > MAX_PROGRAMME_MS {
            return Err("programme audio lasts from one frame to 30 minutes");
        }
        if !(1..=MAX_CHUNK_FRAMES as u16).contains(&self.frames_per_chunk) {
            return Err("frames per chunk out of range");
        }
        let chunks = (self.total_frames as usize).div_ceil(self.frames_per_chunk as usize);
        if chunks != self.chunks.len() || chunks > MAX_CHUNKS {
            return Err("the chunk digests do not match the frame count");
        }
        Ok(())
    }
}

/// SHA-256 of a chunk's frames, each as `u16` length then bytes.
pub fn chunk_digest(frames: &[Vec<u8>]) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in frames {
        h.update((f.len() as u16).to_be_bytes());
        h.update(f);
    }
    h.finalize().into()
}

/// What the issuer says about a programme, in one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programme {
    /// A 35-digit id from the issuer's own sequence (as a broadcast's):
    /// the same across revisions.
    pub id: BroadcastId,
    /// Grows with every change; a terminal takes only a newer one.
    pub revision: u32,
    pub issued_at_ms: i64,
    /// Withdrawn: nothing of it plays from now on.
    pub withdrawn: bool,
    /// Daily programming (the only class a schedule may carry).
    pub class: BroadcastClass,
    pub event_type: EventType,
    pub targets: Vec<AreaCode>,
    pub language: String,
    pub title: String,
    pub text: String,
    pub schedule: Schedule,
    pub audio: ProgrammeAudio,
    pub volume_hint: Option<u8>,
}

impl Programme {
    /// Rules every programme must follow; checked before signing and when
    /// verifying.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.revision == 0 {
            return Err("revisions count from 1");
        }
        if self.class != BroadcastClass::Daily {
            return Err("only daily programming is scheduled");
        }
        if self.targets.is_empty() || self.targets.len() > MAX_TARGETS {
            return Err("1 to 512 target areas");
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
        if self.withdrawn {
            if self.audio != ProgrammeAudio::NONE {
                return Err("a withdrawn programme carries no audio");
            }
        } else {
            self.audio.check()?;
        }
        self.schedule.check(self.audio.duration_ms())
    }

    /// When its validity ends: the end of its last local day, or of its
    /// last play if that runs past midnight.
    pub fn until_ms(&self) -> i64 {
        let s = &self.schedule;
        let day_end = crate::schedule::instant(s.last_day as i64 + 1, 0, s.utc_offset_minutes);
        let last_end = s
            .last_start_ms()
            .map_or(i64::MIN, |t| t + self.audio.duration_ms());
        day_end.max(last_end)
    }

    fn encode_into(&self, w: &mut Writer) {
        w.u8(PROGRAMME_VERSION)
            .u128(self.id.as_u128())
            .u32(self.revision)
            .i64(self.issued_at_ms)
            .u8(if self.withdrawn { 2 } else { 1 })
            .u8(self.class.code())
            .raw(self.event_type.as_bytes())
            .u16(self.targets.len() as u16);
        for t in &self.targets {
            w.u64(t.as_u64());
        }
        w.str16(&self.language).str16(&self.title).str16(&self.text);
        self.schedule.encode_into(w);
        let a = &self.audio;
        w.u32(a.sample_rate)
            .u8(a.frame_ms)
            .u32(a.total_frames)
            .u16(a.frames_per_chunk)
            .u16(a.chunks.len() as u16);
        for d in &a.chunks {
            w.raw(d);
        }
        w.u8(self.volume_hint.unwrap_or(u8::MAX));
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        version(r, "programme version")?;
        let id = BroadcastId::from_u128(r.u128("programme id")?)?;
        let revision = r.u32("revision")?;
        let issued_at_ms = r.i64("issued at")?;
        let withdrawn = match r.u8("programme state")? {
            1 => false,
            2 => true,
            v => return Err(DecodeError::invalid("programme state", v.to_string())),
        };
        let class = BroadcastClass::from_code(r.u8("class")?)?;
        let event_type = EventType::from_bytes(r.array("event type")?)?;
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
        let schedule = Schedule::decode_from(r)?;
        let sample_rate = r.u32("sample rate")?;
        let frame_ms = r.u8("frame length")?;
        let total_frames = r.u32("total frames")?;
        let frames_per_chunk = r.u16("frames per chunk")?;
        let n = r.count16(MAX_CHUNKS, "chunk digests")?;
        let mut chunks = Vec::with_capacity(n);
        for _ in 0..n {
            chunks.push(r.array("chunk digest")?);
        }
        let volume_hint = match r.u8("volume hint")? {
            u8::MAX => None,
            v => Some(v),
        };
        Ok(Programme {
            id,
            revision,
            issued_at_ms,
            withdrawn,
            class,
            event_type,
            targets,
            language,
            title,
            text,
            schedule,
            audio: ProgrammeAudio {
                sample_rate,
                frame_ms,
                total_frames,
                frames_per_chunk,
                chunks,
            },
            volume_hint,
        })
    }
}

/// A programme with its signer's chain and signature, holding its exact
/// bytes so relays forward them unchanged.
pub type SignedProgramme = crate::Signed<Programme>;

impl crate::Sealable for Programme {
    const CONTEXT: SignContext = SignContext::Programme;
    const MAX_BYTES: usize = MAX_PROGRAMME_BYTES;
    const WHAT: &'static str = "programme";

    fn check(&self) -> Result<(), &'static str> {
        Programme::check(self)
    }

    fn encode_into(&self, w: &mut Writer) {
        Programme::encode_into(self, w)
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Programme::decode_from(r)
    }

    fn capacity(&self) -> usize {
        1024 + 32 * self.audio.chunks.len()
    }
}

impl SignedProgramme {
    pub fn programme(&self) -> &Programme {
        self.message()
    }

    pub fn id(&self) -> BroadcastId {
        self.message().id
    }
}

/// One chunk of a programme's audio (kind 29). Unsigned: it is taken only
/// when its digest is the one the signed programme lists at `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgrammeChunk {
    pub id: BroadcastId,
    pub index: u16,
    pub frames: Vec<Vec<u8>>,
}

impl ProgrammeChunk {
    pub fn encode(&self) -> Vec<u8> {
        let len: usize = self.frames.iter().map(|f| f.len() + 2).sum();
        let mut w = Writer::with_capacity(21 + len);
        w.u8(PROGRAMME_VERSION)
            .u128(self.id.as_u128())
            .u16(self.index)
            .u16(self.frames.len() as u16);
        for f in &self.frames {
            w.bytes16(f);
        }
        w.into_vec()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() > MAX_CHUNK_BYTES {
            return Err(DecodeError::TooLong {
                field: "programme chunk",
                len: b.len(),
                max: MAX_CHUNK_BYTES,
            });
        }
        let mut r = Reader::new(b);
        version(&mut r, "chunk version")?;
        let id = BroadcastId::from_u128(r.u128("programme id")?)?;
        let index = r.u16("chunk index")?;
        let n = r.count16(MAX_CHUNK_FRAMES, "chunk frames")?;
        let mut frames = Vec::with_capacity(n);
        for _ in 0..n {
            let f = r.bytes16(MAX_OPUS_PACKET_BYTES, "frame")?;
            if f.is_empty() {
                return Err(DecodeError::invalid("frame", "empty"));
            }
            frames.push(f.to_vec());
        }
        r.finish()?;
        Ok(ProgrammeChunk { id, index, frames })
    }

    /// True when this is chunk `index` of `p`'s audio, byte for byte.
    pub fn matches(&self, p: &Programme) -> bool {
        let i = self.index as usize;
        p.audio.chunks.get(i).is_some_and(|d| {
            self.frames.len() == p.audio.frames_in(i) && *d == chunk_digest(&self.frames)
        })
    }
}

coded_enum!(
    /// What a programme receipt reports.
    PlayOutcome, "programme receipt kind" {
        /// Its audio is complete in the terminal's cache.
        Cached = 1,
        Started = 2,
        /// Played to its end (`detail`: ms heard).
        Finished = 3,
        /// Pre-empted by something of higher precedence (`detail`: ms heard).
        Preempted = 4,
        Resumed = 5,
        /// Not played at all (`reason` says why).
        Skipped = 6,
        /// Stopped before its end (`reason`; `detail`: ms heard).
        Cut = 7,
        /// Played with nothing heard (`detail`: ms played silent).
        Muted = 8,
        /// Moved by quiet hours to their end (`detail`: seconds later).
        Postponed = 9,
        /// Its audio left the cache to make room (`reason` cache full).
        Evicted = 10,
    }
);

coded_enum!(
    /// Why a play was skipped, cut or evicted (0: no reason to give).
    PlayReason, "programme receipt reason" {
        None = 0,
        QuietHours = 1,
        /// Its audio was not all in the cache by its time.
        NotCached = 2,
        Withdrawn = 3,
        /// Something of higher precedence held its whole slot.
        Preempted = 4,
        /// Its slot ended (a pre-empted play that could not resume).
        SlotEnded = 5,
        CacheFull = 6,
        /// Its signer's certificate was revoked or expired.
        Untrusted = 7,
        /// Replaced by a newer revision.
        Superseded = 8,
    }
);

/// A terminal's signed report about one play of a programme (kind 31).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgrammeReceipt {
    pub programme: BroadcastId,
    pub revision: u32,
    /// The play's scheduled start (unix ms); 0 for Cached and Evicted.
    pub occurrence_ms: i64,
    pub terminal_serial: u64,
    pub outcome: PlayOutcome,
    pub reason: PlayReason,
    /// When it happened (tree time).
    pub at_ms: i64,
    pub detail: u32,
}

impl ProgrammeReceipt {
    fn encode_unsigned(&self) -> Writer {
        let mut w = Writer::with_capacity(128);
        w.u8(PROGRAMME_VERSION)
            .u128(self.programme.as_u128())
            .u32(self.revision)
            .i64(self.occurrence_ms)
            .u64(self.terminal_serial)
            .u8(self.outcome.code())
            .u8(self.reason.code())
            .i64(self.at_ms)
            .u32(self.detail);
        w
    }

    pub fn sign(&self, key: &SecretKey) -> SignedProgrammeReceipt {
        let mut w = self.encode_unsigned();
        let signature = key.sign(SignContext::ProgrammeReceipt, &[w.as_slice()]);
        w.raw(&signature);
        SignedProgrammeReceipt {
            receipt: self.clone(),
            signature,
            body: w.into_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedProgrammeReceipt {
    pub receipt: ProgrammeReceipt,
    signature: Signature,
    body: Vec<u8>,
}

impl SignedProgrammeReceipt {
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn signature_valid(&self, key: &PublicKey) -> bool {
        let signed = &self.body[..self.body.len() - self.signature.len()];
        key.verify(SignContext::ProgrammeReceipt, &[signed], &self.signature)
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        version(&mut r, "programme receipt version")?;
        let receipt = ProgrammeReceipt {
            programme: BroadcastId::from_u128(r.u128("programme id")?)?,
            revision: r.u32("revision")?,
            occurrence_ms: r.i64("occurrence")?,
            terminal_serial: r.u64("terminal serial")?,
            outcome: PlayOutcome::from_code(r.u8("programme receipt kind")?)?,
            reason: PlayReason::from_code(r.u8("programme receipt reason")?)?,
            at_ms: r.i64("receipt time")?,
            detail: r.u32("receipt detail")?,
        };
        let signature = r.array("programme receipt signature")?;
        r.finish()?;
        Ok(SignedProgrammeReceipt {
            receipt,
            signature,
            body: b.to_vec(),
        })
    }
}

/// What a dialler holds of the programmes (kind 32), sent after
/// subscribe and whenever its upstream should know: the upstream sends
/// each programme it holds for the dialler's area that is missing, older,
/// or whose audio is incomplete there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    pub held: Vec<Held>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub id: BroadcastId,
    pub revision: u32,
    /// Every chunk of its audio is in hand (always true of a withdrawn one).
    pub complete: bool,
}

impl Inventory {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(3 + 21 * self.held.len());
        w.u8(PROGRAMME_VERSION).u16(self.held.len() as u16);
        for h in &self.held {
            w.u128(h.id.as_u128()).u32(h.revision).u8(h.complete as u8);
        }
        w.into_vec()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        version(&mut r, "inventory version")?;
        let n = r.count16(MAX_INVENTORY, "inventory")?;
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let id = BroadcastId::from_u128(r.u128("programme id")?)?;
            let revision = r.u32("revision")?;
            let complete = match r.u8("complete")? {
                0 => false,
                1 => true,
                v => return Err(DecodeError::invalid("complete", v.to_string())),
            };
            held.push(Held {
                id,
                revision,
                complete,
            });
        }
        r.finish()?;
        Ok(Inventory { held })
    }

    /// What it says of `id`.
    pub fn get(&self, id: BroadcastId) -> Option<Held> {
        self.held.iter().find(|h| h.id == id).copied()
    }
}
