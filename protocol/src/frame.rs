//! Framing: `version (u8) | kind (u8) | length (u32, big-endian) | body`.
//!
//! Each kind has a hard body limit checked before a byte of the body is
//! buffered. A framing error (unknown version or kind, oversized length)
//! leaves the stream unsynchronised: the reader reports it and the caller
//! closes the stream. A body that fails to decode is a bad message inside a
//! sound stream.

use certs::encoding::DecodeError;
use certs::revocation::MAX_CRL_BYTES;
use certs::RevocationList;

use crate::control::{
    Hello, SignedCommand, SignedReceipt, SignedStatus, Subscribe, TimeRequest, TimeResponse,
};
use crate::event::SignedEvent;
use crate::header::{SignedHeader, MAX_HEADER_BYTES};
use crate::ids::coded_enum;
use crate::member::Member;
use crate::programme::{Inventory, ProgrammeChunk, SignedProgramme, SignedProgrammeReceipt};
use crate::quiet::SignedQuietHours;
use crate::request::{SignedOutcome, SignedRequest};
use crate::segment::{Segment, MAX_SEGMENT_BYTES};

pub const FRAME_VERSION: u8 = 1;
pub const FRAME_PREFIX_LEN: usize = 6;
const MAX_CONTROL_BYTES: usize = 16 * 1024;

coded_enum!(
    /// What a frame holds.
    FrameKind, "frame kind" {
        Header = 1,
        Segment = 2,
        Hello = 16,
        Subscribe = 17,
        Status = 18,
        Receipt = 19,
        Command = 20,
        Revocation = 21,
        TimeRequest = 22,
        TimeResponse = 23,
        SecurityEvent = 24,
        Member = 25,
        /// A lower platform's publish request, up (PROTOCOL.md 6.8).
        PublishRequest = 26,
        /// The tier above's answer to one, down.
        RequestOutcome = 27,
        /// A scheduled programme, down (PROTOCOL.md 6.10).
        Programme = 28,
        /// A chunk of a programme's audio, down.
        ProgrammeChunk = 29,
        /// Quiet hours of some areas, down (6.11).
        QuietHours = 30,
        /// A terminal's report of one scheduled play, up.
        ProgrammeReceipt = 31,
        /// What programmes a dialler holds, up.
        Inventory = 32,
    }
);

impl FrameKind {
    /// The largest body a frame of this kind may declare.
    pub fn max_body(self) -> usize {
        match self {
            FrameKind::Header => MAX_HEADER_BYTES,
            FrameKind::Segment => MAX_SEGMENT_BYTES,
            FrameKind::Revocation => MAX_CRL_BYTES,
            FrameKind::Command => 2 * MAX_CONTROL_BYTES,
            FrameKind::PublishRequest => crate::request::MAX_REQUEST_BYTES,
            FrameKind::RequestOutcome => crate::request::MAX_OUTCOME_BYTES,
            FrameKind::Programme => crate::programme::MAX_PROGRAMME_BYTES,
            FrameKind::ProgrammeChunk => crate::programme::MAX_CHUNK_BYTES,
            FrameKind::QuietHours => crate::quiet::MAX_QUIET_BYTES,
            _ => MAX_CONTROL_BYTES,
        }
    }
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Header(SignedHeader),
    Segment(Segment),
    Hello(Hello),
    Subscribe(Subscribe),
    Status(SignedStatus),
    Receipt(SignedReceipt),
    Command(SignedCommand),
    Revocation(RevocationList),
    TimeRequest(TimeRequest),
    TimeResponse(TimeResponse),
    SecurityEvent(SignedEvent),
    Member(Member),
    PublishRequest(SignedRequest),
    RequestOutcome(SignedOutcome),
    Programme(SignedProgramme),
    ProgrammeChunk(ProgrammeChunk),
    QuietHours(SignedQuietHours),
    ProgrammeReceipt(SignedProgrammeReceipt),
    Inventory(Inventory),
}

impl Message {
    pub fn kind(&self) -> FrameKind {
        match self {
            Message::Header(_) => FrameKind::Header,
            Message::Segment(_) => FrameKind::Segment,
            Message::Hello(_) => FrameKind::Hello,
            Message::Subscribe(_) => FrameKind::Subscribe,
            Message::Status(_) => FrameKind::Status,
            Message::Receipt(_) => FrameKind::Receipt,
            Message::Command(_) => FrameKind::Command,
            Message::Revocation(_) => FrameKind::Revocation,
            Message::TimeRequest(_) => FrameKind::TimeRequest,
            Message::TimeResponse(_) => FrameKind::TimeResponse,
            Message::SecurityEvent(_) => FrameKind::SecurityEvent,
            Message::Member(_) => FrameKind::Member,
            Message::PublishRequest(_) => FrameKind::PublishRequest,
            Message::RequestOutcome(_) => FrameKind::RequestOutcome,
            Message::Programme(_) => FrameKind::Programme,
            Message::ProgrammeChunk(_) => FrameKind::ProgrammeChunk,
            Message::QuietHours(_) => FrameKind::QuietHours,
            Message::ProgrammeReceipt(_) => FrameKind::ProgrammeReceipt,
            Message::Inventory(_) => FrameKind::Inventory,
        }
    }

    /// The whole frame: prefix and body.
    pub fn encode(&self) -> Vec<u8> {
        let owned;
        let body: &[u8] = match self {
            Message::Header(h) => h.body(),
            Message::Segment(s) => s.body(),
            Message::Status(s) => s.body(),
            Message::Receipt(r) => r.body(),
            Message::Command(c) => c.body(),
            Message::SecurityEvent(e) => e.body(),
            Message::PublishRequest(r) => r.body(),
            Message::RequestOutcome(o) => o.body(),
            Message::Programme(p) => p.body(),
            Message::QuietHours(q) => q.body(),
            Message::ProgrammeReceipt(r) => r.body(),
            other => {
                owned = match other {
                    Message::Hello(h) => h.encode(),
                    Message::Subscribe(s) => s.encode(),
                    Message::Revocation(l) => l.encode(),
                    Message::TimeRequest(t) => t.encode(),
                    Message::TimeResponse(t) => t.encode(),
                    Message::Member(m) => m.encode(),
                    Message::ProgrammeChunk(c) => c.encode(),
                    Message::Inventory(i) => i.encode(),
                    _ => Vec::new(),
                };
                &owned
            }
        };
        encode_frame(self.kind(), body)
    }

    /// Decodes the body of a frame of `kind`.
    pub fn decode_body(kind: FrameKind, body: &[u8]) -> Result<Message, DecodeError> {
        if body.len() > kind.max_body() {
            return Err(DecodeError::TooLong {
                field: "frame body",
                len: body.len(),
                max: kind.max_body(),
            });
        }
        Ok(match kind {
            FrameKind::Header => Message::Header(SignedHeader::decode(body)?),
            FrameKind::Segment => Message::Segment(Segment::decode(body)?),
            FrameKind::Hello => Message::Hello(Hello::decode(body)?),
            FrameKind::Subscribe => Message::Subscribe(Subscribe::decode(body)?),
            FrameKind::Status => Message::Status(SignedStatus::decode(body)?),
            FrameKind::Receipt => Message::Receipt(SignedReceipt::decode(body)?),
            FrameKind::Command => Message::Command(SignedCommand::decode(body)?),
            FrameKind::Revocation => Message::Revocation(RevocationList::decode(body)?),
            FrameKind::TimeRequest => Message::TimeRequest(TimeRequest::decode(body)?),
            FrameKind::TimeResponse => Message::TimeResponse(TimeResponse::decode(body)?),
            FrameKind::SecurityEvent => Message::SecurityEvent(SignedEvent::decode(body)?),
            FrameKind::Member => Message::Member(Member::decode(body)?),
            FrameKind::PublishRequest => Message::PublishRequest(SignedRequest::decode(body)?),
            FrameKind::RequestOutcome => Message::RequestOutcome(SignedOutcome::decode(body)?),
            FrameKind::Programme => Message::Programme(SignedProgramme::decode(body)?),
            FrameKind::ProgrammeChunk => Message::ProgrammeChunk(ProgrammeChunk::decode(body)?),
            FrameKind::QuietHours => Message::QuietHours(SignedQuietHours::decode(body)?),
            FrameKind::ProgrammeReceipt => {
                Message::ProgrammeReceipt(SignedProgrammeReceipt::decode(body)?)
            }
            FrameKind::Inventory => Message::Inventory(Inventory::decode(body)?),
        })
    }
}

pub fn encode_frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_PREFIX_LEN + body.len());
    out.push(FRAME_VERSION);
    out.push(kind.code());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads a frame prefix: kind and body length, checked against the limits.
pub fn decode_prefix(prefix: &[u8; FRAME_PREFIX_LEN]) -> Result<(FrameKind, usize), DecodeError> {
    if prefix[0] != FRAME_VERSION {
        return Err(DecodeError::UnsupportedVersion(prefix[0]));
    }
    let kind = FrameKind::from_code(prefix[1])?;
    let len = u32::from_be_bytes([prefix[2], prefix[3], prefix[4], prefix[5]]) as usize;
    if len > kind.max_body() {
        return Err(DecodeError::TooLong {
            field: "frame",
            len,
            max: kind.max_body(),
        });
    }
    Ok((kind, len))
}

/// One frame exactly as received, kept so relays forward the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub kind: FrameKind,
    /// The whole frame, prefix included.
    pub bytes: Vec<u8>,
}

impl RawFrame {
    pub fn body(&self) -> &[u8] {
        &self.bytes[FRAME_PREFIX_LEN..]
    }

    pub fn message(&self) -> Result<Message, DecodeError> {
        Message::decode_body(self.kind, self.body())
    }
}

/// Splits a byte stream into frames, buffering at most one frame.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Kind and length of the frame being read, once its prefix arrived.
    current: Option<(FrameKind, usize)>,
    broken: bool,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes. Returns the frames completed so far; on a
    /// framing error the reader stays broken and the stream must be closed.
    pub fn push(&mut self, mut data: &[u8]) -> Result<Vec<RawFrame>, DecodeError> {
        if self.broken {
            return Err(DecodeError::invalid(
                "stream",
                "closed after a framing error",
            ));
        }
        let mut out = Vec::new();
        while !data.is_empty() {
            let want = match self.current {
                None => FRAME_PREFIX_LEN,
                Some((_, len)) => FRAME_PREFIX_LEN + len,
            };
            let take = (want - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() < want {
                break;
            }
            match self.current {
                None => {
                    let prefix: [u8; FRAME_PREFIX_LEN] =
                        self.buf[..FRAME_PREFIX_LEN].try_into().unwrap_or_default();
                    match decode_prefix(&prefix) {
                        Ok(kl) => self.current = Some(kl),
                        Err(e) => {
                            self.broken = true;
                            self.buf = Vec::new();
                            return Err(e);
                        }
                    }
                }
                Some((kind, _)) => {
                    self.current = None;
                    out.push(RawFrame {
                        kind,
                        bytes: std::mem::take(&mut self.buf),
                    });
                }
            }
            // A zero-length body completes at once.
            if let Some((kind, 0)) = self.current {
                self.current = None;
                out.push(RawFrame {
                    kind,
                    bytes: std::mem::take(&mut self.buf),
                });
            }
        }
        Ok(out)
    }

    /// Bytes held for an incomplete frame (bounded by the kind's limit).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md section 2 quotes these limits: change both together.
    #[test]
    fn documented_limits() {
        let limits: Vec<(FrameKind, usize)> =
            FrameKind::ALL.iter().map(|k| (*k, k.max_body())).collect();
        assert_eq!(
            limits,
            vec![
                (FrameKind::Header, 15_918),
                (FrameKind::Segment, 63_945),
                (FrameKind::Hello, 16_384),
                (FrameKind::Subscribe, 16_384),
                (FrameKind::Status, 16_384),
                (FrameKind::Receipt, 16_384),
                (FrameKind::Command, 32_768),
                (FrameKind::Revocation, 83_296),
                (FrameKind::TimeRequest, 16_384),
                (FrameKind::TimeResponse, 16_384),
                (FrameKind::SecurityEvent, 16_384),
                (FrameKind::Member, 16_384),
                (FrameKind::PublishRequest, 4_194_304),
                (FrameKind::RequestOutcome, 16_384),
                (FrameKind::Programme, 39_131),
                (FrameKind::ProgrammeChunk, 319_271),
                (FrameKind::QuietHours, 3_836),
                (FrameKind::ProgrammeReceipt, 16_384),
                (FrameKind::Inventory, 16_384),
            ]
        );
        assert_eq!(certs::cert::MAX_CERT_BYTES, 797);
    }
}
