//! Security events: what a node refused, signed by that node, travelling up
//! to the district. A node aggregates its refusals per reason, so a flood of
//! garbage becomes a few events a second, never a flood of reports.

use std::collections::BTreeMap;

use certs::encoding::{DecodeError, Reader, Writer};
use certs::{PublicKey, SecretKey, SignContext, Signature, Tier};

use crate::control::CONTROL_VERSION;
use crate::ids::BroadcastId;
use crate::refusal::RefusalReason;

/// One reason's refusals at one node over a span of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEvent {
    pub reporter_serial: u64,
    pub reporter_tier: Tier,
    pub reason: RefusalReason,
    /// The first refused broadcast of the span, when it carried a readable id.
    pub broadcast: Option<BroadcastId>,
    /// Serial of the certificate that signed or presented the first refused
    /// message (as it claimed; 0 when unknown). Points at the key to revoke.
    pub offender: u64,
    pub count: u32,
    pub first_ms: i64,
    pub last_ms: i64,
}

impl SecurityEvent {
    fn encode_unsigned(&self) -> Writer {
        let mut w = Writer::with_capacity(128);
        w.u8(CONTROL_VERSION)
            .u64(self.reporter_serial)
            .u8(self.reporter_tier as u8)
            .u8(self.reason.code())
            .u128(self.broadcast.map_or(0, BroadcastId::as_u128))
            .u64(self.offender)
            .u32(self.count)
            .i64(self.first_ms)
            .i64(self.last_ms);
        w
    }

    pub fn sign(&self, key: &SecretKey) -> SignedEvent {
        let mut w = self.encode_unsigned();
        let signature = key.sign(SignContext::SecurityEvent, &[w.as_slice()]);
        w.raw(&signature);
        SignedEvent {
            event: self.clone(),
            signature,
            body: w.into_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEvent {
    pub event: SecurityEvent,
    signature: Signature,
    body: Vec<u8>,
}

impl SignedEvent {
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn signature_valid(&self, key: &PublicKey) -> bool {
        let signed = &self.body[..self.body.len() - self.signature.len()];
        key.verify(SignContext::SecurityEvent, &[signed], &self.signature)
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        match r.u8("event version")? {
            CONTROL_VERSION => {}
            v => return Err(DecodeError::UnsupportedVersion(v)),
        }
        let reporter_serial = r.u64("reporter serial")?;
        let tier = r.u8("reporter tier")?;
        let reporter_tier = Tier::from_u8(tier)
            .ok_or_else(|| DecodeError::invalid("reporter tier", tier.to_string()))?;
        let reason = RefusalReason::from_code(r.u8("event reason")?)?;
        let broadcast = match r.u128("event broadcast")? {
            0 => None,
            v => Some(BroadcastId::from_u128(v)?),
        };
        let event = SecurityEvent {
            reporter_serial,
            reporter_tier,
            reason,
            broadcast,
            offender: r.u64("offender")?,
            count: r.u32("event count")?,
            first_ms: r.i64("event first")?,
            last_ms: r.i64("event last")?,
        };
        if event.count == 0 || event.last_ms < event.first_ms {
            return Err(DecodeError::invalid("event span", "empty or reversed"));
        }
        let signature = r.array("event signature")?;
        r.finish()?;
        Ok(SignedEvent {
            event,
            signature,
            body: b.to_vec(),
        })
    }
}

#[derive(Debug, Clone)]
struct Pending {
    broadcast: Option<BroadcastId>,
    offender: u64,
    count: u32,
    first_ms: i64,
    last_ms: i64,
}

/// Turns a node's refusals into events: the first refusal of a reason is
/// reported at once; later ones within `window_ms` are counted and reported
/// together when the window ends. At most two events per reason per window,
/// and memory bounded by the number of reasons, whatever an attacker sends.
#[derive(Debug)]
pub struct EventReporter {
    serial: u64,
    tier: Tier,
    window_ms: i64,
    last_sent: BTreeMap<RefusalReason, i64>,
    pending: BTreeMap<RefusalReason, Pending>,
}

impl EventReporter {
    pub const DEFAULT_WINDOW_MS: i64 = 1_000;

    pub fn new(serial: u64, tier: Tier, window_ms: i64) -> Self {
        EventReporter {
            serial,
            tier,
            window_ms,
            last_sent: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Notes one refusal; returns an event to send now, if one is due.
    pub fn note(
        &mut self,
        reason: RefusalReason,
        broadcast: Option<BroadcastId>,
        offender: u64,
        now_ms: i64,
    ) -> Option<SecurityEvent> {
        let quiet = self
            .last_sent
            .get(&reason)
            .is_none_or(|t| now_ms - t >= self.window_ms);
        if quiet && !self.pending.contains_key(&reason) {
            self.last_sent.insert(reason, now_ms);
            return Some(self.event(
                reason,
                &Pending {
                    broadcast,
                    offender,
                    count: 1,
                    first_ms: now_ms,
                    last_ms: now_ms,
                },
            ));
        }
        let p = self.pending.entry(reason).or_insert(Pending {
            broadcast,
            offender,
            count: 0,
            first_ms: now_ms,
            last_ms: now_ms,
        });
        p.count = p.count.saturating_add(1);
        p.last_ms = now_ms;
        None
    }

    /// When the next aggregated event falls due (unix ms), if any is pending.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.pending
            .keys()
            .map(|r| {
                self.last_sent
                    .get(r)
                    .map_or(i64::MIN, |t| t + self.window_ms)
            })
            .min()
    }

    /// Aggregated events whose window has ended; call this about once per window.
    pub fn due(&mut self, now_ms: i64) -> Vec<SecurityEvent> {
        let ready: Vec<RefusalReason> = self
            .pending
            .keys()
            .filter(|r| {
                self.last_sent
                    .get(r)
                    .is_none_or(|t| now_ms - t >= self.window_ms)
            })
            .copied()
            .collect();
        ready
            .into_iter()
            .filter_map(|r| {
                let p = self.pending.remove(&r)?;
                self.last_sent.insert(r, now_ms);
                Some(self.event(r, &p))
            })
            .collect()
    }

    fn event(&self, reason: RefusalReason, p: &Pending) -> SecurityEvent {
        SecurityEvent {
            reporter_serial: self.serial,
            reporter_tier: self.tier,
            reason,
            broadcast: p.broadcast,
            offender: p.offender,
            count: p.count,
            first_ms: p.first_ms,
            last_ms: p.last_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_becomes_two_events_per_window() {
        let mut r = EventReporter::new(7, Tier::Terminal, 1_000);
        let mut sent = Vec::new();
        for i in 0..10_000i64 {
            let now = i / 10; // 10 refusals per ms for one second
            sent.extend(r.note(RefusalReason::SegmentSignature, None, 9, now));
            if i % 100 == 0 {
                sent.extend(r.due(now));
            }
        }
        assert_eq!(
            r.next_due_ms(),
            Some(1_000),
            "the aggregate waits out the window"
        );
        sent.extend(r.due(1_000));
        assert_eq!(r.next_due_ms(), None);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0].count, 1);
        assert_eq!(sent.iter().map(|e| e.count as u64).sum::<u64>(), 10_000);
        assert!(r.due(5_000).is_empty());
        // Quiet again: the next refusal is reported at once.
        assert!(r
            .note(RefusalReason::SegmentSignature, None, 9, 5_000)
            .is_some());
    }

    #[test]
    fn events_round_trip_and_signatures_bind_the_reporter() {
        let key = SecretKey::generate();
        let e = SecurityEvent {
            reporter_serial: 42,
            reporter_tier: Tier::Village,
            reason: RefusalReason::CertRevoked,
            broadcast: None,
            offender: 99,
            count: 3,
            first_ms: 1,
            last_ms: 2,
        };
        let s = e.sign(&key);
        let back = SignedEvent::decode(s.body()).unwrap();
        assert_eq!(back.event, e);
        assert!(back.signature_valid(&key.public()));
        assert!(!back.signature_valid(&SecretKey::generate().public()));
        let mut tampered = s.body().to_vec();
        tampered[1] ^= 1;
        let t = SignedEvent::decode(&tampered).unwrap();
        assert!(!t.signature_valid(&key.public()));
    }
}
