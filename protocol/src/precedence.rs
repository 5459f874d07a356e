//! Which broadcast goes first (R8), defined once: the terminal's choice of
//! what the loudspeaker plays and the relay's QUIC stream priority both
//! come from here.

use certs::Tier;

use crate::header::BroadcastHeader;
use crate::ids::{BroadcastClass, MessageType, Severity};

/// Larger goes first: cancels before anything; then emergency before drill
/// before daily; then severity I before II, III, IV and unknown; then the
/// higher tier (district before town before village); then the newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    cancel: bool,
    class: u8,
    severity: u8,
    tier: u8,
    issued_at_ms: i64,
}

impl Precedence {
    /// The precedence of `header` signed by a platform of `signer_tier`.
    pub fn of(header: &BroadcastHeader, signer_tier: Tier) -> Self {
        let class = match header.class {
            BroadcastClass::Emergency => 3,
            BroadcastClass::Drill => 2,
            BroadcastClass::Daily => 1,
        };
        let severity = match header.severity {
            Severity::Unknown => 0,
            s => 5 - s.code(),
        };
        Precedence {
            cancel: header.msg_type == MessageType::Cancel,
            class,
            severity,
            tier: (Tier::Terminal as u8).saturating_sub(signer_tier as u8),
            issued_at_ms: header.issued_at_ms,
        }
    }

    /// A severity I–II emergency (R21): it plays at no less than the
    /// terminal's configured minimum volume whatever its mute or volume.
    pub fn beats_local_volume(&self) -> bool {
        !self.cancel && self.class == 3 && self.severity >= 5 - Severity::Orange.code()
    }

    /// The QUIC stream priority of a broadcast with this precedence
    /// (higher is sent first): the same order without the issue time.
    pub fn stream_priority(&self) -> i32 {
        if self.cancel {
            return 1_000;
        }
        self.class as i32 * 100 + self.severity as i32 * 10 + self.tier as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BroadcastId, Codec, EventType};

    fn header(class: BroadcastClass, severity: Severity, at: i64) -> BroadcastHeader {
        BroadcastHeader {
            id: BroadcastId::from_u128(43601210000000101010000202612010001).unwrap(),
            msg_type: MessageType::Broadcast,
            related: None,
            class,
            event_type: "11B06".parse::<EventType>().unwrap(),
            severity,
            issued_at_ms: at,
            start_ms: at,
            end_ms: at + 60_000,
            targets: vec![],
            language: "zh-CN".into(),
            title: String::new(),
            text: String::new(),
            audio: crate::header::AudioParams {
                codec: Codec::Opus,
                ..crate::header::AudioParams::NONE
            },
            volume_hint: None,
        }
    }

    #[test]
    fn the_order_of_r8_for_players_and_streams_alike() {
        use BroadcastClass::*;
        use Severity::*;
        // Most important first.
        let ordered = [
            Precedence::of(&header(Emergency, Red, 1), Tier::Village),
            Precedence::of(&header(Emergency, Orange, 9), Tier::District),
            Precedence::of(&header(Emergency, Orange, 5), Tier::Town),
            Precedence::of(&header(Emergency, Orange, 7), Tier::Village),
            Precedence::of(&header(Emergency, Orange, 6), Tier::Village),
            Precedence::of(&header(Emergency, Blue, 1), Tier::District),
            Precedence::of(&header(Emergency, Unknown, 1), Tier::District),
            Precedence::of(&header(Drill, Red, 1), Tier::District),
            Precedence::of(&header(Daily, Red, 1), Tier::District),
        ];
        for pair in ordered.windows(2) {
            assert!(pair[0] > pair[1], "{pair:?}");
            assert!(
                pair[0].stream_priority() >= pair[1].stream_priority(),
                "{pair:?}"
            );
        }
        let mut cancel = header(Daily, Unknown, 1);
        cancel.msg_type = MessageType::Cancel;
        let cancel = Precedence::of(&cancel, Tier::Village);
        assert!(cancel > ordered[0]);
        assert!(cancel.stream_priority() > ordered[0].stream_priority());
    }
}
