//! Control messages: hello, subscribe/resume, status (heartbeat), receipts,
//! signed remote commands, revocation-list push and time sync.

use certs::encoding::{DecodeError, Reader, Writer};
use certs::{AreaCode, Certificate, Identity, PublicKey, SecretKey, SignContext, Signature, Tier};

use crate::ids::{coded_enum, BroadcastId};
use crate::refusal::RefusalReason;

pub const CONTROL_VERSION: u8 = 1;
pub const MAX_VERSION_STRING: usize = 32;
pub const MAX_RESUME: usize = 64;
pub const MAX_FAULTS: usize = 16;
pub const MAX_FAULT_DETAIL: usize = 128;
pub const MAX_REVOCATION_NUMBERS: usize = 8;
pub const MAX_COMMAND_AREAS: usize = 64;
pub const MAX_COMMAND_TERMINALS: usize = 1024;

fn version(r: &mut Reader<'_>, what: &'static str) -> Result<(), DecodeError> {
    match r.u8(what)? {
        CONTROL_VERSION => Ok(()),
        v => Err(DecodeError::UnsupportedVersion(v)),
    }
}

fn opt_id(v: u128) -> Result<Option<BroadcastId>, DecodeError> {
    match v {
        0 => Ok(None),
        v => BroadcastId::from_u128(v).map(Some),
    }
}

fn bool_byte(v: u8, field: &'static str) -> Result<bool, DecodeError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(DecodeError::invalid(field, v.to_string())),
    }
}

/// Sent first on every connection, after the TLS handshake authenticated the
/// peer. It states what the peer is; the TLS identity is what counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub tier: Tier,
    pub serial: u64,
    pub software: String,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(CONTROL_VERSION)
            .u8(self.tier as u8)
            .u64(self.serial)
            .str16(&self.software);
        w.into_vec()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        version(&mut r, "hello version")?;
        let t = r.u8("tier")?;
        let tier = Tier::from_u8(t).ok_or_else(|| DecodeError::invalid("tier", t.to_string()))?;
        let h = Hello {
            tier,
            serial: r.u64("serial")?,
            software: r.str16(MAX_VERSION_STRING, "software")?.to_string(),
        };
        r.finish()?;
        Ok(h)
    }
}

/// Asks the upstream for broadcasts; `resume` lists broadcasts already
/// partly received, with the next sequence wanted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    pub resume: Vec<(BroadcastId, u32)>,
}

impl Subscribe {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(CONTROL_VERSION).u16(self.resume.len() as u16);
        for (id, seq) in &self.resume {
            w.u128(id.as_u128()).u32(*seq);
        }
        w.into_vec()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        version(&mut r, "subscribe version")?;
        let n = r.count16(MAX_RESUME, "resume list")?;
        let mut resume = Vec::with_capacity(n);
        for _ in 0..n {
            resume.push((
                BroadcastId::from_u128(r.u128("resume id")?)?,
                r.u32("resume sequence")?,
            ));
        }
        r.finish()?;
        Ok(Subscribe { resume })
    }
}

coded_enum!(
    /// Broadcast state, as the national standard numbers it.
    PlayState, "play state" {
        NotProcessed = 0,
        Waiting = 1,
        Playing = 2,
        Done = 3,
        Failed = 4,
        Cancelled = 5,
    }
);

/// A fault a terminal reports (device missing, amplifier, storage...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub code: u16,
    pub detail: String,
}

/// A terminal's heartbeat and status, signed by the terminal so relays
/// cannot alter it on the way up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub terminal_serial: u64,
    /// Increases with every heartbeat.
    pub seq: u32,
    pub sent_at_ms: i64,
    pub volume: u8,
    pub muted: bool,
    pub playing: Option<BroadcastId>,
    pub state: PlayState,
    /// Estimated offset of the tree's clock from the terminal's own
    /// (tree − local), microseconds.
    pub clock_offset_us: i64,
    /// Standard error of that estimate, µs; `u32::MAX` while the terminal
    /// has not measured its upstream yet (it plays on its own clock).
    pub clock_uncertainty_us: u32,
    pub software: String,
    pub faults: Vec<Fault>,
    /// (signer serial, list number) of each revocation list in force.
    pub revocation_numbers: Vec<(u64, u64)>,
    /// Refusals by reason since start.
    pub refusals: Vec<(RefusalReason, u32)>,
    /// Audio frames since start, by how they were made and heard.
    pub audio: AudioCounters,
    /// The cache of programmes sent ahead (status version 2; zero from a
    /// version 1 sender).
    pub cache: ProgrammeCache,
}

/// A terminal's cache of scheduled programmes (R9), as its status reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgrammeCache {
    /// Programmes held (withdrawn ones until their end included).
    pub programmes: u16,
    /// Of those, not withdrawn and with all their audio.
    pub complete: u16,
    pub used_kb: u32,
    pub limit_kb: u32,
}

/// Status version 2 adds the programme cache at the end; a receiver takes
/// both.
pub const STATUS_VERSION: u8 = 2;

/// A terminal's audio counters since it started (frames of 20 ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioCounters {
    /// Decoded from the packet received.
    pub played: u64,
    /// Rebuilt from the next packet's forward error correction.
    pub recovered: u64,
    /// Concealed (the packet never came in time).
    pub concealed: u64,
    /// Skipped as too late to play.
    pub late: u64,
    /// Handed to the loudspeaker with its gain above zero.
    pub heard: u64,
}

impl Status {
    fn encode_unsigned(&self) -> Writer {
        let mut w = Writer::with_capacity(140);
        w.u8(STATUS_VERSION)
            .u64(self.terminal_serial)
            .u32(self.seq)
            .i64(self.sent_at_ms)
            .u8(self.volume)
            .u8(self.muted as u8)
            .u128(self.playing.map_or(0, BroadcastId::as_u128))
            .u8(self.state.code())
            .i64(self.clock_offset_us)
            .u32(self.clock_uncertainty_us)
            .str16(&self.software)
            .u8(self.faults.len() as u8);
        for f in &self.faults {
            w.u16(f.code).str16(&f.detail);
        }
        w.u8(self.revocation_numbers.len() as u8);
        for (s, n) in &self.revocation_numbers {
            w.u64(*s).u64(*n);
        }
        w.u8(self.refusals.len() as u8);
        for (reason, n) in &self.refusals {
            w.u8(reason.code()).u32(*n);
        }
        let a = &self.audio;
        w.u64(a.played)
            .u64(a.recovered)
            .u64(a.concealed)
            .u64(a.late)
            .u64(a.heard);
        let c = &self.cache;
        w.u16(c.programmes)
            .u16(c.complete)
            .u32(c.used_kb)
            .u32(c.limit_kb);
        w
    }

    pub fn sign(&self, key: &SecretKey) -> SignedStatus {
        let mut w = self.encode_unsigned();
        let signature = key.sign(SignContext::Status, &[w.as_slice()]);
        w.raw(&signature);
        SignedStatus {
            status: self.clone(),
            signature,
            body: w.into_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedStatus {
    pub status: Status,
    signature: Signature,
    body: Vec<u8>,
}

impl SignedStatus {
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn signature_valid(&self, key: &PublicKey) -> bool {
        let signed = &self.body[..self.body.len() - self.signature.len()];
        key.verify(SignContext::Status, &[signed], &self.signature)
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let status_version = match r.u8("status version")? {
            v @ (CONTROL_VERSION | STATUS_VERSION) => v,
            v => return Err(DecodeError::UnsupportedVersion(v)),
        };
        let terminal_serial = r.u64("terminal serial")?;
        let seq = r.u32("status sequence")?;
        let sent_at_ms = r.i64("sent at")?;
        let volume = r.u8("volume")?;
        let muted = bool_byte(r.u8("muted")?, "muted")?;
        let playing = opt_id(r.u128("playing")?)?;
        let state = PlayState::from_code(r.u8("play state")?)?;
        let clock_offset_us = r.i64("clock offset")?;
        let clock_uncertainty_us = r.u32("clock uncertainty")?;
        let software = r.str16(MAX_VERSION_STRING, "software")?.to_string();
        let n = r.u8("fault count")? as usize;
        if n > MAX_FAULTS {
            return Err(DecodeError::TooLong {
                field: "faults",
                len: n,
                max: MAX_FAULTS,
            });
        }
        let mut faults = Vec::with_capacity(n);
        for _ in 0..n {
            faults.push(Fault {
                code: r.u16("fault code")?,
                detail: r.str16(MAX_FAULT_DETAIL, "fault detail")?.to_string(),
            });
        }
        let n = r.u8("revocation numbers")? as usize;
        if n > MAX_REVOCATION_NUMBERS {
            return Err(DecodeError::TooLong {
                field: "revocation numbers",
                len: n,
                max: MAX_REVOCATION_NUMBERS,
            });
        }
        let mut revocation_numbers = Vec::with_capacity(n);
        for _ in 0..n {
            revocation_numbers.push((r.u64("signer")?, r.u64("number")?));
        }
        let n = r.u8("refusal counts")? as usize;
        let mut refusals = Vec::with_capacity(n);
        for _ in 0..n {
            refusals.push((
                RefusalReason::from_code(r.u8("refusal reason")?)?,
                r.u32("refusal count")?,
            ));
        }
        let audio = AudioCounters {
            played: r.u64("frames played")?,
            recovered: r.u64("frames recovered")?,
            concealed: r.u64("frames concealed")?,
            late: r.u64("frames late")?,
            heard: r.u64("frames heard")?,
        };
        let cache = if status_version >= 2 {
            ProgrammeCache {
                programmes: r.u16("cached programmes")?,
                complete: r.u16("complete programmes")?,
                used_kb: r.u32("cache used")?,
                limit_kb: r.u32("cache limit")?,
            }
        } else {
            ProgrammeCache::default()
        };
        let signature = r.array("status signature")?;
        r.finish()?;
        Ok(SignedStatus {
            status: Status {
                terminal_serial,
                seq,
                sent_at_ms,
                volume,
                muted,
                playing,
                state,
                clock_offset_us,
                clock_uncertainty_us,
                software,
                faults,
                revocation_numbers,
                refusals,
                audio,
                cache,
            },
            signature,
            body: b.to_vec(),
        })
    }
}

coded_enum!(
    /// What a receipt reports (回传).
    ReceiptKind, "receipt kind" {
        Received = 1,
        Verified = 2,
        Started = 3,
        /// Played to its end, and heard (`detail`: ms heard).
        Finished = 4,
        /// Pre-empted (`detail`: ms heard so far); it may resume.
        Preempted = 5,
        Refused = 6,
        /// Stopped by a cancel or a revocation (`detail`: ms heard).
        Cancelled = 7,
        Resumed = 8,
        /// Its validity ended before its audio did (`detail`: ms heard).
        CutAtEnd = 9,
        /// Played while the loudspeaker was muted or at volume 0: nothing
        /// was heard (`detail`: ms played silent).
        Muted = 10,
        /// Stopped here by the local-silence procedure (R20): a signed
        /// `Silence` command of a platform above this terminal (`detail`:
        /// ms heard).
        Silenced = 11,
        /// Held back by the quiet hours of its area (R20): it plays when
        /// they end, if still valid (`detail`: ms heard so far).
        Held = 12,
        /// Not played: the quiet hours of its area skip non-emergency
        /// content (`detail`: ms heard before they began).
        Skipped = 13,
    }
);

/// A terminal's signed report about one broadcast. A refusal receipt is also
/// the security event that travels up to the district.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// None when the refused message did not even carry a readable id.
    pub broadcast: Option<BroadcastId>,
    pub terminal_serial: u64,
    pub kind: ReceiptKind,
    /// Set on refusals.
    pub reason: Option<RefusalReason>,
    pub at_ms: i64,
    /// Kind-specific: segments played on Finished, the refused sequence, ...
    pub detail: u32,
}

impl Receipt {
    fn encode_unsigned(&self) -> Writer {
        let mut w = Writer::with_capacity(110);
        w.u8(CONTROL_VERSION)
            .u128(self.broadcast.map_or(0, BroadcastId::as_u128))
            .u64(self.terminal_serial)
            .u8(self.kind.code())
            .u8(self.reason.map_or(0, RefusalReason::code))
            .i64(self.at_ms)
            .u32(self.detail);
        w
    }

    pub fn sign(&self, key: &SecretKey) -> SignedReceipt {
        let mut w = self.encode_unsigned();
        let signature = key.sign(SignContext::Receipt, &[w.as_slice()]);
        w.raw(&signature);
        SignedReceipt {
            receipt: self.clone(),
            signature,
            body: w.into_vec(),
        }
    }

    /// The national result code: 1 verified, 0 received, or the refusal's code.
    pub fn national_result_code(&self) -> crate::ResultCode {
        use crate::ResultCode;
        match (self.kind, self.reason) {
            (ReceiptKind::Refused, Some(r)) => r.national_result_code(),
            (ReceiptKind::Refused, None) => ResultCode::Other,
            (ReceiptKind::Received, _) => ResultCode::Received,
            _ => ResultCode::Verified,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    signature: Signature,
    body: Vec<u8>,
}

impl SignedReceipt {
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn signature_valid(&self, key: &PublicKey) -> bool {
        let signed = &self.body[..self.body.len() - self.signature.len()];
        key.verify(SignContext::Receipt, &[signed], &self.signature)
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        version(&mut r, "receipt version")?;
        let broadcast = opt_id(r.u128("receipt broadcast")?)?;
        let terminal_serial = r.u64("terminal serial")?;
        let kind = ReceiptKind::from_code(r.u8("receipt kind")?)?;
        let reason = match r.u8("refusal reason")? {
            0 => None,
            v => Some(RefusalReason::from_code(v)?),
        };
        if (kind == ReceiptKind::Refused) != reason.is_some() {
            return Err(DecodeError::invalid(
                "refusal reason",
                "only refusals carry a reason",
            ));
        }
        let receipt = Receipt {
            broadcast,
            terminal_serial,
            kind,
            reason,
            at_ms: r.i64("receipt time")?,
            detail: r.u32("receipt detail")?,
        };
        let signature = r.array("receipt signature")?;
        r.finish()?;
        Ok(SignedReceipt {
            receipt,
            signature,
            body: b.to_vec(),
        })
    }
}

/// What a remote command does (terminal commands of the loudspeaker protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Volume(u8),
    Mute(bool),
    Restart,
    ReportPeriod {
        seconds: u16,
    },
    Amplifier(bool),
    /// Local silence (R20): stop this broadcast here and never play it
    /// again, whoever issued it.
    Silence(BroadcastId),
}

impl Action {
    fn encode_into(&self, w: &mut Writer) {
        match *self {
            Action::Volume(v) => w.u8(1).u16(v as u16),
            Action::Mute(m) => w.u8(2).u16(m as u16),
            Action::Restart => w.u8(3).u16(0),
            Action::ReportPeriod { seconds } => w.u8(4).u16(seconds),
            Action::Amplifier(on) => w.u8(5).u16(on as u16),
            Action::Silence(id) => w.u8(6).u16(0).u128(id.as_u128()),
        };
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let code = r.u8("action")?;
        let arg = r.u16("action argument")?;
        let flag = |a: u16| bool_byte(a.min(255) as u8, "action argument");
        Ok(match code {
            1 if arg <= 100 => Action::Volume(arg as u8),
            2 => Action::Mute(flag(arg)?),
            3 if arg == 0 => Action::Restart,
            4 if arg >= 5 => Action::ReportPeriod { seconds: arg },
            5 => Action::Amplifier(flag(arg)?),
            6 if arg == 0 => {
                Action::Silence(BroadcastId::from_u128(r.u128("silenced broadcast")?)?)
            }
            _ => return Err(DecodeError::invalid("action", format!("{code}/{arg}"))),
        })
    }
}

/// A remote command, signed by a platform with its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Unique per signer; a command id is executed once.
    pub command_id: u64,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub target_areas: Vec<AreaCode>,
    pub target_terminals: Vec<u64>,
    pub action: Action,
}

impl Command {
    fn encode_unsigned(&self, chain: &[Certificate]) -> Writer {
        let mut w = Writer::with_capacity(256);
        w.u8(CONTROL_VERSION)
            .u64(self.command_id)
            .i64(self.issued_at_ms)
            .i64(self.expires_at_ms)
            .u16(self.target_areas.len() as u16);
        for a in &self.target_areas {
            w.u64(a.as_u64());
        }
        w.u16(self.target_terminals.len() as u16);
        for t in &self.target_terminals {
            w.u64(*t);
        }
        self.action.encode_into(&mut w);
        crate::signer_chain::write(&mut w, chain);
        w
    }

    pub fn sign(&self, identity: &Identity) -> SignedCommand {
        let chain = identity.chain_below_root();
        let mut w = self.encode_unsigned(&chain);
        let signature = identity.key.sign(SignContext::Command, &[w.as_slice()]);
        w.raw(&signature);
        SignedCommand {
            command: self.clone(),
            chain,
            signature,
            body: w.into_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCommand {
    pub command: Command,
    chain: Vec<Certificate>,
    signature: Signature,
    body: Vec<u8>,
}

impl SignedCommand {
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    pub fn signature_valid(&self) -> bool {
        crate::signer_chain::signed_by_last(
            &self.chain,
            &self.body,
            &self.signature,
            SignContext::Command,
        )
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        version(&mut r, "command version")?;
        let command_id = r.u64("command id")?;
        let issued_at_ms = r.i64("issued at")?;
        let expires_at_ms = r.i64("expires at")?;
        let n = r.count16(MAX_COMMAND_AREAS, "command areas")?;
        let mut target_areas = Vec::with_capacity(n);
        for _ in 0..n {
            target_areas.push(
                AreaCode::from_u64(r.u64("command area")?)
                    .map_err(|e| DecodeError::invalid("command area", e.to_string()))?,
            );
        }
        let n = r.count16(MAX_COMMAND_TERMINALS, "command terminals")?;
        let mut target_terminals = Vec::with_capacity(n);
        for _ in 0..n {
            target_terminals.push(r.u64("command terminal")?);
        }
        let action = Action::decode_from(&mut r)?;
        let chain = crate::signer_chain::read(&mut r)?;
        let signature = r.array("command signature")?;
        r.finish()?;
        Ok(SignedCommand {
            command: Command {
                command_id,
                issued_at_ms,
                expires_at_ms,
                target_areas,
                target_terminals,
                action,
            },
            chain,
            signature,
            body: b.to_vec(),
        })
    }
}

/// Time sync request: the client's send time (its clock, microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRequest {
    pub t0_us: i64,
}

/// Time sync response: the request's t0, the server's receive (t1) and send
/// (t2) times on the tree's clock. Offset = ((t1 − t0) + (t2 − t3)) / 2, t3
/// the client's receive time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeResponse {
    pub t0_us: i64,
    pub t1_us: i64,
    pub t2_us: i64,
    /// Changes whenever the server's own estimate of the tree's time
    /// stepped (its first fit, a new upstream): samples taken before
    /// describe a clock that is gone.
    pub epoch: u32,
}

impl TimeRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(CONTROL_VERSION).i64(self.t0_us);
        w.into_vec()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        version(&mut r, "time request version")?;
        let t = TimeRequest {
            t0_us: r.i64("t0")?,
        };
        r.finish()?;
        Ok(t)
    }
}

impl TimeResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(CONTROL_VERSION)
            .i64(self.t0_us)
            .i64(self.t1_us)
            .i64(self.t2_us)
            .u32(self.epoch);
        w.into_vec()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        version(&mut r, "time response version")?;
        let t = TimeResponse {
            t0_us: r.i64("t0")?,
            t1_us: r.i64("t1")?,
            t2_us: r.i64("t2")?,
            epoch: r.u32("clock epoch")?,
        };
        r.finish()?;
        Ok(t)
    }

    /// Clock offset of the server relative to the client, and the round-trip
    /// delay, given the client's receive time `t3_us`.
    pub fn offset_and_delay(&self, t3_us: i64) -> (i64, i64) {
        let offset = ((self.t1_us - self.t0_us) + (self.t2_us - t3_us)) / 2;
        let delay = (t3_us - self.t0_us) - (self.t2_us - self.t1_us);
        (offset, delay)
    }
}
