//! Publish requests (发布申请): a lower platform asks the tier above to
//! approve and issue an emergency it drafted, audio included; the answer
//! comes back down. Both are signed by the platform that sends them, and
//! travel on the control streams of the existing links (PROTOCOL.md 6.8).

use certs::encoding::{DecodeError, Reader, Writer};
use certs::{AreaCode, Certificate, Identity, SignContext, Signature};

use crate::ids::{BroadcastClass, BroadcastId, EventType, Severity};

const REQUEST_VERSION: u8 = 1;
/// Ten minutes of 20 ms frames.
pub const MAX_REQUEST_FRAMES: usize = 30_000;
/// The largest Opus packet (RFC 6716).
pub const MAX_OPUS_PACKET_BYTES: usize = 1275;
pub const MAX_REQUEST_TARGETS: usize = 64;
pub const MAX_ACCOUNT_BYTES: usize = 32;
pub const MAX_DECISION_COMMENT_BYTES: usize = 1024;
/// The largest request body: its audio at 48 kbit/s and the rest.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// The largest outcome body.
pub const MAX_OUTCOME_BYTES: usize = 16 * 1024;

fn version(r: &mut Reader<'_>, what: &'static str) -> Result<(), DecodeError> {
    match r.u8(what)? {
        REQUEST_VERSION => Ok(()),
        v => Err(DecodeError::UnsupportedVersion(v)),
    }
}

/// What a lower platform asks the tier above to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// Unique per requesting platform: the tier above files a request once.
    pub request_id: u64,
    pub requested_at_ms: i64,
    /// The account that drafted it, at the requesting platform.
    pub requester_account: String,
    pub targets: Vec<AreaCode>,
    pub class: BroadcastClass,
    pub severity: Severity,
    pub event_type: EventType,
    pub valid_minutes: u32,
    pub volume: Option<u8>,
    pub language: String,
    pub title: String,
    pub text: String,
    pub sample_rate: u32,
    /// The ingested audio: 20 ms Opus frames, exactly what will be signed.
    pub frames: Vec<Vec<u8>>,
}

impl PublishRequest {
    fn encode_unsigned(&self, chain: &[Certificate]) -> Writer {
        let audio: usize = self.frames.iter().map(|f| f.len() + 2).sum();
        let mut w = Writer::with_capacity(1024 + audio + self.text.len());
        w.u8(REQUEST_VERSION)
            .u64(self.request_id)
            .i64(self.requested_at_ms)
            .str16(&self.requester_account)
            .u16(self.targets.len() as u16);
        for t in &self.targets {
            w.u64(t.as_u64());
        }
        w.u8(self.class.code())
            .u8(self.severity.code())
            .raw(self.event_type.as_bytes())
            .u32(self.valid_minutes)
            .u8(self.volume.unwrap_or(u8::MAX))
            .str16(&self.language)
            .str16(&self.title)
            .str16(&self.text)
            .u32(self.sample_rate)
            .u32(self.frames.len() as u32);
        for f in &self.frames {
            w.bytes16(f);
        }
        crate::signer_chain::write(&mut w, chain);
        w
    }

    /// Signs the request with the requesting platform's identity.
    pub fn sign(&self, identity: &Identity) -> SignedRequest {
        let chain = identity.chain_below_root();
        let mut w = self.encode_unsigned(&chain);
        let signature = identity
            .key
            .sign(SignContext::PublishRequest, &[w.as_slice()]);
        w.raw(&signature);
        SignedRequest {
            request: self.clone(),
            chain,
            signature,
            body: w.into_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub request: PublishRequest,
    chain: Vec<Certificate>,
    signature: Signature,
    body: Vec<u8>,
}

impl SignedRequest {
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The requesting platform's chain, its own certificate last.
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    pub fn signer_serial(&self) -> u64 {
        self.chain.last().map_or(0, Certificate::serial)
    }

    pub fn signature_valid(&self) -> bool {
        crate::signer_chain::signed_by_last(
            &self.chain,
            &self.body,
            &self.signature,
            SignContext::PublishRequest,
        )
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() > MAX_REQUEST_BYTES {
            return Err(DecodeError::TooLong {
                field: "publish request",
                len: b.len(),
                max: MAX_REQUEST_BYTES,
            });
        }
        let mut r = Reader::new(b);
        version(&mut r, "request version")?;
        let request_id = r.u64("request id")?;
        let requested_at_ms = r.i64("requested at")?;
        let requester_account = r.str16(MAX_ACCOUNT_BYTES, "requester account")?.to_string();
        let n = r.count16(MAX_REQUEST_TARGETS, "request targets")?;
        let mut targets = Vec::with_capacity(n);
        for _ in 0..n {
            targets.push(
                AreaCode::from_u64(r.u64("request target")?)
                    .map_err(|e| DecodeError::invalid("request target", e.to_string()))?,
            );
        }
        if targets.is_empty() {
            return Err(DecodeError::invalid("request targets", "none"));
        }
        let class = BroadcastClass::from_code(r.u8("request class")?)?;
        let severity = Severity::from_code(r.u8("request severity")?)?;
        let event_type = EventType::from_bytes(r.array("request event type")?)?;
        let valid_minutes = r.u32("valid minutes")?;
        if valid_minutes == 0 || valid_minutes > 7 * 24 * 60 {
            return Err(DecodeError::invalid(
                "valid minutes",
                valid_minutes.to_string(),
            ));
        }
        let volume = match r.u8("request volume")? {
            u8::MAX => None,
            v if v <= 100 => Some(v),
            v => return Err(DecodeError::invalid("request volume", v.to_string())),
        };
        let language = r
            .str16(crate::header::MAX_LANGUAGE_BYTES, "request language")?
            .to_string();
        let title = r
            .str16(crate::header::MAX_TITLE_BYTES, "request title")?
            .to_string();
        let text = r
            .str16(crate::header::MAX_TEXT_BYTES, "request text")?
            .to_string();
        let sample_rate = r.u32("request sample rate")?;
        if ![8_000, 12_000, 16_000, 24_000, 48_000].contains(&sample_rate) {
            return Err(DecodeError::invalid(
                "request sample rate",
                sample_rate.to_string(),
            ));
        }
        let n = r.u32("request frames")? as usize;
        if n == 0 || n > MAX_REQUEST_FRAMES {
            return Err(DecodeError::invalid(
                "request frames",
                format!("{n}, at most {MAX_REQUEST_FRAMES}"),
            ));
        }
        // Each frame takes at least its two length bytes: bound the
        // allocation by what the body can hold.
        let mut frames = Vec::with_capacity(n.min(r.remaining() / 2));
        for _ in 0..n {
            frames.push(r.bytes16(MAX_OPUS_PACKET_BYTES, "request frame")?.to_vec());
        }
        let chain = crate::signer_chain::read(&mut r)?;
        let signature = r.array("request signature")?;
        r.finish()?;
        Ok(SignedRequest {
            request: PublishRequest {
                request_id,
                requested_at_ms,
                requester_account,
                targets,
                class,
                severity,
                event_type,
                valid_minutes,
                volume,
                language,
                title,
                text,
                sample_rate,
                frames,
            },
            chain,
            signature,
            body: b.to_vec(),
        })
    }
}

crate::ids::coded_enum!(
    /// Where a publish request stands at the tier above.
    OutcomeState, "request state" {
        /// Filed in the approval queue.
        Queued = 1,
        /// Approved, signed and issued by the tier above (`broadcast`).
        Approved = 2,
        /// Rejected (`comment` says why).
        Rejected = 3,
    }
);

/// The tier above's answer to a publish request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOutcome {
    /// The requesting platform's certificate serial.
    pub requester_serial: u64,
    pub request_id: u64,
    pub state: OutcomeState,
    pub broadcast: Option<BroadcastId>,
    /// The approver's account, once decided.
    pub decided_by: String,
    pub comment: String,
    pub at_ms: i64,
}

impl RequestOutcome {
    fn encode_unsigned(&self, chain: &[Certificate]) -> Writer {
        let mut w = Writer::with_capacity(512 + self.comment.len());
        w.u8(REQUEST_VERSION)
            .u64(self.requester_serial)
            .u64(self.request_id)
            .u8(self.state.code())
            .u128(self.broadcast.map_or(0, BroadcastId::as_u128))
            .str16(&self.decided_by)
            .str16(&self.comment)
            .i64(self.at_ms);
        crate::signer_chain::write(&mut w, chain);
        w
    }

    pub fn sign(&self, identity: &Identity) -> SignedOutcome {
        let chain = identity.chain_below_root();
        let mut w = self.encode_unsigned(&chain);
        let signature = identity
            .key
            .sign(SignContext::RequestOutcome, &[w.as_slice()]);
        w.raw(&signature);
        SignedOutcome {
            outcome: self.clone(),
            chain,
            signature,
            body: w.into_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOutcome {
    pub outcome: RequestOutcome,
    chain: Vec<Certificate>,
    signature: Signature,
    body: Vec<u8>,
}

impl SignedOutcome {
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn signer_serial(&self) -> u64 {
        self.chain.last().map_or(0, Certificate::serial)
    }

    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    pub fn signature_valid(&self) -> bool {
        crate::signer_chain::signed_by_last(
            &self.chain,
            &self.body,
            &self.signature,
            SignContext::RequestOutcome,
        )
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        version(&mut r, "outcome version")?;
        let requester_serial = r.u64("requester serial")?;
        let request_id = r.u64("request id")?;
        let state = OutcomeState::from_code(r.u8("request state")?)?;
        let broadcast = match r.u128("outcome broadcast")? {
            0 => None,
            v => Some(BroadcastId::from_u128(v)?),
        };
        if (state == OutcomeState::Approved) != broadcast.is_some() {
            return Err(DecodeError::invalid(
                "outcome broadcast",
                "an approval names its broadcast, nothing else does",
            ));
        }
        let decided_by = r.str16(MAX_ACCOUNT_BYTES, "decided by")?.to_string();
        let comment = r
            .str16(MAX_DECISION_COMMENT_BYTES, "outcome comment")?
            .to_string();
        let at_ms = r.i64("outcome time")?;
        let chain = crate::signer_chain::read(&mut r)?;
        let signature = r.array("outcome signature")?;
        r.finish()?;
        Ok(SignedOutcome {
            outcome: RequestOutcome {
                requester_serial,
                request_id,
                state,
                broadcast,
                decided_by,
                comment,
                at_ms,
            },
            chain,
            signature,
            body: b.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certs::pki::{DistrictPki, Layout};

    #[test]
    fn requests_and_outcomes_round_trip_and_refuse_tampering() {
        let pki = DistrictPki::generate(Layout::ONE_OF_EACH, (0, 4_000_000_000), 1).unwrap();
        let village = &pki.towns[0].villages[0];
        let req = PublishRequest {
            request_id: 42,
            requested_at_ms: 1_700_000_000_000,
            requester_account: "村文书".into(),
            targets: vec![village.area],
            class: BroadcastClass::Emergency,
            severity: Severity::Orange,
            event_type: "11B06".parse().unwrap(),
            valid_minutes: 30,
            volume: Some(80),
            language: "zh-CN".into(),
            title: "山洪预警".into(),
            text: "请立即转移".into(),
            sample_rate: 16_000,
            frames: vec![vec![0xF8, 1, 2], vec![0xF8; 60]],
        };
        let signed = req.sign(&village.identity);
        let back = SignedRequest::decode(signed.body()).unwrap();
        assert_eq!(back.request, req);
        assert!(back.signature_valid());
        assert_eq!(back.signer_serial(), village.identity.cert().serial());
        let mut bad = signed.body().to_vec();
        let at = bad.len() / 2;
        bad[at] ^= 1;
        assert!(SignedRequest::decode(&bad).map_or(true, |r| !r.signature_valid()));
        for cut in [0, 10, bad.len() - 1] {
            assert!(SignedRequest::decode(&signed.body()[..cut]).is_err());
        }

        let outcome = RequestOutcome {
            requester_serial: 7,
            request_id: 42,
            state: OutcomeState::Rejected,
            broadcast: None,
            decided_by: "li".into(),
            comment: "范围过大".into(),
            at_ms: 5,
        };
        let s = outcome.sign(&pki.towns[0].identity);
        let back = SignedOutcome::decode(s.body()).unwrap();
        assert_eq!(back.outcome, outcome);
        assert!(back.signature_valid());
        let approved_without_id = RequestOutcome {
            state: OutcomeState::Approved,
            ..outcome
        };
        let s = approved_without_id.sign(&pki.towns[0].identity);
        assert!(SignedOutcome::decode(s.body()).is_err());
    }
}
