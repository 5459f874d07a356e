//! Identifiers and enumerations carried by the national emergency broadcast
//! message (EBM), kept with their national codes so a gateway can be lossless.

use std::fmt;
use std::str::FromStr;

use certs::encoding::DecodeError;
use certs::ResourceCode;

/// 35-digit EBM id: the issuing platform's 23-digit resource code, the issue
/// date (yyyymmdd) and a 4-digit sequence of that day. Stored as its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BroadcastId(u128);

const ID_LIMIT: u128 = 100_000_000_000_000_000_000_000_000_000_000_000; // 10^35

impl BroadcastId {
    pub fn new(
        issuer: &ResourceCode,
        date: (u16, u8, u8),
        sequence: u16,
    ) -> Result<Self, DecodeError> {
        let (y, m, d) = date;
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y > 9999 || sequence > 9999 {
            return Err(DecodeError::invalid(
                "broadcast id",
                "date or sequence out of range",
            ));
        }
        format!("{issuer}{y:04}{m:02}{d:02}{sequence:04}").parse()
    }

    /// Checks the value has at most 35 digits and embeds a valid resource code.
    pub fn from_u128(v: u128) -> Result<Self, DecodeError> {
        if v >= ID_LIMIT {
            return Err(DecodeError::invalid("broadcast id", "more than 35 digits"));
        }
        let id = BroadcastId(v);
        ResourceCode::from_digits(id.digits()[..23].try_into().unwrap_or([0; 23]))
            .map_err(|e| DecodeError::invalid("broadcast id", e.to_string()))?;
        Ok(id)
    }

    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// An id a terminal gives one of its own scheduled plays (R9): 10^35
    /// and up, above every EBM id, so it never meets a real broadcast's and
    /// never names anything on the wire (`from_u128` refuses it).
    pub fn local(n: u64) -> BroadcastId {
        BroadcastId(ID_LIMIT + n as u128)
    }

    /// A terminal's own id for a scheduled play ([`BroadcastId::local`]).
    pub fn is_local(self) -> bool {
        self.0 >= ID_LIMIT
    }

    fn digits(self) -> [u8; 35] {
        let mut out = [b'0'; 35];
        let mut v = self.0;
        for slot in out.iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out
    }

    /// The resource code of the platform that issued it (an id from the
    /// wire: a local one has none).
    pub fn issuer(self) -> ResourceCode {
        let d = self.digits();
        let rc: [u8; 23] = d[..23].try_into().unwrap_or([b'0'; 23]);
        ResourceCode::from_digits(rc).expect("every BroadcastId embeds a validated resource code")
    }

    /// The 4-digit sequence number of the issue day.
    pub fn sequence(self) -> u16 {
        (self.0 % 10_000) as u16
    }
}

impl fmt::Display for BroadcastId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:035}", self.0)
    }
}

impl FromStr for BroadcastId {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, DecodeError> {
        if s.len() != 35 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecodeError::invalid("broadcast id", "must be 35 digits"));
        }
        let v = s
            .parse::<u128>()
            .map_err(|_| DecodeError::invalid("broadcast id", "not a number"))?;
        BroadcastId::from_u128(v)
    }
}

macro_rules! coded_enum {
    ($(#[$meta:meta])* $name:ident, $field:literal { $($(#[$vmeta:meta])* $variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $code),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn code(self) -> u8 {
                self as u8
            }

            pub fn from_code(v: u8) -> Result<Self, DecodeError> {
                match v {
                    $($code => Ok($name::$variant),)+
                    other => Err(DecodeError::invalid($field, other.to_string())),
                }
            }
        }
    };
}
pub(crate) use coded_enum;

coded_enum!(
    /// EBM message type (GY/T 385 MsgType).
    MessageType, "message type" {
        /// 实际播发: a real broadcast.
        Broadcast = 1,
        /// 取消播发: cancels the broadcast named in `related`.
        Cancel = 2,
        /// 平台演练播发: drill at platform level.
        DrillPlatform = 3,
        /// 前端演练播发: drill at front-end level.
        DrillFrontEnd = 4,
        /// 终端演练播发: drill at terminal level.
        DrillTerminal = 5,
    }
);

impl MessageType {
    pub fn is_drill(self) -> bool {
        matches!(
            self,
            MessageType::DrillPlatform | MessageType::DrillFrontEnd | MessageType::DrillTerminal
        )
    }
}

coded_enum!(
    /// What kind of content this is; drives priority and presentation.
    BroadcastClass, "class" {
        /// 应急: emergency alert.
        Emergency = 1,
        /// 日常: daily programme or notice.
        Daily = 2,
        /// 演练/测试: drill or test, never to be mistaken for a real alert.
        Drill = 3,
    }
);

coded_enum!(
    /// Severity (GY/T 385 EventLevel): 1 is the most severe.
    Severity, "severity" {
        Unknown = 0,
        /// 特别重大 (red)
        Red = 1,
        /// 重大 (orange)
        Orange = 2,
        /// 较大 (yellow)
        Yellow = 3,
        /// 一般 (blue)
        Blue = 4,
    }
);

coded_enum!(
    /// Audio codec of the segments.
    Codec, "codec" {
        /// No audio: a cancel, or a text-only message.
        None = 0,
        Opus = 1,
    }
);

/// 5-character event type (e.g. 11B06), uppercase letters and digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType([u8; 5]);

impl EventType {
    pub fn from_bytes(b: [u8; 5]) -> Result<Self, DecodeError> {
        if b.iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        {
            Ok(EventType(b))
        } else {
            Err(DecodeError::invalid(
                "event type",
                "must be 5 characters 0-9 A-Z",
            ))
        }
    }

    pub fn as_bytes(&self) -> &[u8; 5] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("?????")
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, DecodeError> {
        let b: [u8; 5] = s
            .as_bytes()
            .try_into()
            .map_err(|_| DecodeError::invalid("event type", "must be 5 characters"))?;
        EventType::from_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_id_layout() {
        let rc: ResourceCode = "43601210000000101010000".parse().unwrap();
        let id = BroadcastId::new(&rc, (2026, 11, 28), 17).unwrap();
        assert_eq!(id.to_string(), "43601210000000101010000202611280017");
        assert_eq!(id.issuer(), rc);
        assert_eq!(id.sequence(), 17);
        assert_eq!(id.to_string().parse::<BroadcastId>().unwrap(), id);
        assert!(BroadcastId::from_u128(ID_LIMIT).is_err());
        assert!("4360121000000010101000020261128001"
            .parse::<BroadcastId>()
            .is_err());
        assert!(BroadcastId::new(&rc, (2026, 13, 1), 1).is_err());
        // A 35-digit value whose resource part is malformed (area with a hole).
        assert!("43601000001230101010000202611280017"
            .parse::<BroadcastId>()
            .is_err());
        assert!("11B06".parse::<EventType>().is_ok());
        assert!("11b06".parse::<EventType>().is_err());
        assert_eq!(MessageType::from_code(2).unwrap(), MessageType::Cancel);
        assert!(MessageType::from_code(6).is_err());
        assert!(Severity::from_code(5).is_err());
    }
}
