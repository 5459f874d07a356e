//! The terminal core in simulated time, shared by the core's test files:
//! a test builds a core, hands it frames at chosen moments, moves time to
//! each timeout the core asks for, and checks what came out: the audio
//! (with its play times), the receipts, the counts.
#![allow(dead_code, unused_imports)]

pub use std::sync::{Arc, RwLock};

pub use certs::pki::{DistrictPki, Layout};
pub use certs::{Identity, RevocationState, TrustAnchor};
pub use protocol::build::{segments_needed, SegmentSigner};
pub use protocol::{
    AudioParams, BroadcastClass, BroadcastHeader, BroadcastId, Message, MessageType, RawFrame,
    ReceiptKind, RefusalReason, Severity, SignedHeader,
};
pub use terminal_agent::core::{Chunk, ControlVerdict, CoreConfig, Output, TerminalCore};
pub use terminal_agent::journal::{Journal, TerminalStore};

pub const T0: i64 = 1_800_000_000_000_000; // µs
pub const FRAME: i64 = 20_000;
pub const DELAY: i64 = 400_000;

pub struct World {
    pub pki: DistrictPki,
    pub anchor: TrustAnchor,
}

impl World {
    pub fn new() -> Self {
        Self::with(Layout::ONE_OF_EACH, 86_400)
    }

    /// A district of `layout` whose certificates stay valid `valid_s`.
    pub fn with(layout: Layout, valid_s: i64) -> Self {
        let now = T0 / 1_000_000;
        let pki = DistrictPki::generate(layout, (now - 3600, now + valid_s), now).unwrap();
        let anchor = TrustAnchor::new(pki.root.cert().clone()).unwrap();
        World { pki, anchor }
    }

    pub fn terminal(&self) -> Identity {
        certs::pki::copy(self.pki.terminals().next().unwrap().1)
    }

    pub fn core(&self, journal: Journal) -> TerminalCore {
        self.core_with(journal, CoreConfig::default())
    }

    pub fn core_with(&self, journal: Journal, config: CoreConfig) -> TerminalCore {
        TerminalCore::new(
            self.terminal(),
            self.anchor.clone(),
            Arc::new(RwLock::new(RevocationState::new())),
            journal,
            config,
            T0,
        )
        .unwrap()
    }

    pub fn county(&self) -> certs::AreaCode {
        self.pki.district.cert().scope()[0]
    }
}

/// `seconds` of a tone at `hz`, encoded as real Opus at 16 kHz.
pub fn tone(hz: f32, seconds: f32) -> (Vec<f32>, Vec<Vec<u8>>) {
    let pcm: Vec<f32> = (0..(16_000.0 * seconds) as usize)
        .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / 16_000.0).sin() * 0.5)
        .collect();
    let frames = codec::encode_pcm(&pcm, codec::EncoderConfig::default()).unwrap();
    (pcm, frames)
}

/// A signed broadcast from the district: its header frame and segment
/// frames, first frame presented at `pts_us`.
pub struct Cast {
    pub id: BroadcastId,
    pub header: RawFrame,
    pub segments: Vec<RawFrame>,
    pub pts_us: i64,
    pub frames: usize,
}

pub fn raw(m: &Message) -> RawFrame {
    let bytes = m.encode();
    protocol::FrameReader::new().push(&bytes).unwrap().remove(0)
}

pub fn cast(
    w: &World,
    seq: u16,
    class: BroadcastClass,
    severity: Severity,
    issued_us: i64,
    frames: Vec<Vec<u8>>,
) -> Cast {
    cast_with(w, seq, class, severity, issued_us, frames, |_| {})
}

pub fn cast_with(
    w: &World,
    seq: u16,
    class: BroadcastClass,
    severity: Severity,
    issued_us: i64,
    frames: Vec<Vec<u8>>,
    edit: impl FnOnce(&mut BroadcastHeader),
) -> Cast {
    let n = frames.len();
    let mut header = protocol::testing::alert_header(
        &w.pki.district,
        seq,
        vec![w.county()],
        issued_us / 1000,
        segments_needed(n, 10),
    );
    header.class = class;
    header.severity = severity;
    header.title = format!("broadcast {seq}");
    edit(&mut header);
    let id = header.id;
    let signed = SignedHeader::sign(header, &w.pki.district).unwrap();
    let pts_us = issued_us + 1_000_000;
    let segments = SegmentSigner::new(&signed, &w.pki.district.key, pts_us)
        .sign_all(frames, 10)
        .unwrap()
        .into_iter()
        .map(|s| raw(&Message::Segment(s)))
        .collect();
    Cast {
        id,
        header: raw(&Message::Header(signed)),
        segments,
        pts_us,
        frames: n,
    }
}

/// A core driven in simulated time, with everything it put out.
pub struct Sim {
    pub core: TerminalCore,
    pub now: i64,
    pub chunks: Vec<Chunk>,
    /// Every receipt that went up, with when it went (µs).
    pub receipts: Vec<(protocol::control::Receipt, i64)>,
    pub flushes: Vec<u64>,
    /// The player's gain as the core last set it.
    pub gain: f32,
    pub persisted: Vec<terminal_agent::journal::Persist>,
    /// When false the player takes nothing (a stalled sink).
    pub sink_takes: bool,
    /// Every programme receipt that went up, with when it went (µs).
    pub play_receipts: Vec<(protocol::ProgrammeReceipt, i64)>,
    /// Every status that went up, as its upstream decodes it.
    pub statuses: Vec<Result<protocol::SignedStatus, certs::encoding::DecodeError>>,
}

impl Sim {
    pub fn new(core: TerminalCore) -> Self {
        Sim {
            core,
            now: T0,
            chunks: Vec::new(),
            receipts: Vec::new(),
            flushes: Vec::new(),
            gain: 1.0,
            persisted: Vec::new(),
            sink_takes: true,
            play_receipts: Vec::new(),
            statuses: Vec::new(),
        }
    }

    pub fn drain(&mut self) {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Up(m) => match *m {
                    Message::Receipt(r) => self.receipts.push((r.receipt, self.now)),
                    Message::ProgrammeReceipt(r) => self.play_receipts.push((r.receipt, self.now)),
                    Message::Status(st) => self
                        .statuses
                        .push(protocol::SignedStatus::decode(st.body())),
                    _ => {}
                },
                Output::Persist(p) => self.persisted.push(p),
                Output::Flush { gen } => {
                    self.flushes.push(gen);
                    // The player drops what it holds of older generations.
                    let now = self.now;
                    self.chunks.retain(|c| c.gen >= gen || c.play_at_us <= now);
                }
                Output::Gain(g) => self.gain = g,
            }
        }
        if self.sink_takes {
            while let Some(c) = self.core.poll_chunk(self.now) {
                self.chunks.push(c);
            }
        }
    }

    /// Moves time to `t`, waking the core whenever it asked to be.
    pub fn run_until(&mut self, t: i64) {
        while let Some(next) = self.core.poll_timeout() {
            if next > t {
                break;
            }
            self.now = self.now.max(next);
            self.core.handle_timeout(self.now);
            self.drain();
        }
        self.now = self.now.max(t);
        self.core.handle_timeout(self.now);
        self.drain();
    }

    /// Delivers a frame at `t`; true when it was refused.
    pub fn deliver(&mut self, t: i64, f: &RawFrame) -> bool {
        self.run_until(t);
        let refused = self.core.handle_broadcast_frame(f, 7, self.now);
        self.drain();
        refused
    }

    /// Delivers a control frame at `t` from an upstream with `chain`.
    pub fn control(
        &mut self,
        t: i64,
        f: &RawFrame,
        chain: &[certs::Certificate],
    ) -> terminal_agent::core::ControlVerdict {
        self.run_until(t);
        let v = self.core.handle_control_frame(f, chain, self.now);
        self.drain();
        v
    }

    /// The detail of the receipt of `kind` about `id`.
    pub fn detail(&self, id: BroadcastId, kind: ReceiptKind) -> Option<u32> {
        self.receipts
            .iter()
            .find(|(r, _)| r.broadcast == Some(id) && r.kind == kind)
            .map(|(r, _)| r.detail)
    }

    /// Delivers a whole broadcast at `t`, in one batch (as the driver
    /// hands the core what arrived together before its timeouts).
    pub fn deliver_all(&mut self, t: i64, c: &Cast) {
        self.run_until(t);
        for f in std::iter::once(&c.header).chain(&c.segments) {
            assert!(!self.core.handle_broadcast_frame(f, 7, self.now), "refused");
        }
        self.drain();
        self.run_until(t);
    }

    pub fn played(&self, id: BroadcastId) -> Vec<&Chunk> {
        self.chunks.iter().filter(|c| c.broadcast == id).collect()
    }

    pub fn receipts_of(&self, id: BroadcastId) -> Vec<ReceiptKind> {
        self.receipts
            .iter()
            .filter(|(r, _)| r.broadcast == Some(id))
            .map(|(r, _)| r.kind)
            .collect()
    }
}

pub fn pcm_of(chunks: &[&Chunk]) -> Vec<f32> {
    chunks.iter().flat_map(|c| c.pcm.iter().copied()).collect()
}

/// Play times run on in 20 ms steps with no gap or overlap.
pub fn contiguous(chunks: &[&Chunk]) -> bool {
    chunks
        .windows(2)
        .all(|w| w[1].play_at_us - w[0].play_at_us == FRAME)
}
