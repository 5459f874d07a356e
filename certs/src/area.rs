//! Administrative area codes and resource codes.
//!
//! An area code is China's administrative division code extended to village
//! level: 2 province + 2 city + 2 county + 3 town + 3 village = 12 digits. A
//! part of zeros means "the whole of the level above", so `360121000000` is a
//! county and `360121100000` a town inside it.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodeError {
    #[error("area code must be 12 digits, got {0:?}")]
    AreaFormat(String),
    #[error("area code {0} names a lower level under a zero higher level")]
    AreaHole(String),
    #[error("resource code must be 23 digits, got {0:?}")]
    ResourceFormat(String),
}

/// The level an area code names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AreaLevel {
    Nation,
    Province,
    City,
    County,
    Town,
    Village,
}

impl AreaLevel {
    /// How many leading digits identify an area of this level.
    fn significant_digits(self) -> usize {
        match self {
            AreaLevel::Nation => 0,
            AreaLevel::Province => 2,
            AreaLevel::City => 4,
            AreaLevel::County => 6,
            AreaLevel::Town => 9,
            AreaLevel::Village => 12,
        }
    }
}

/// A 12-digit area code, stored as its numeric value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AreaCode(u64);

/// Upper bounds (exclusive) of each part's digits, from the right.
const PARTS: [(AreaLevel, u32, u64); 5] = [
    (AreaLevel::Village, 0, 1_000),
    (AreaLevel::Town, 3, 1_000),
    (AreaLevel::County, 6, 100),
    (AreaLevel::City, 8, 100),
    (AreaLevel::Province, 10, 100),
];

impl AreaCode {
    pub const NATION: AreaCode = AreaCode(0);

    /// Builds from the numeric value, checking it is a well-formed code.
    pub fn from_u64(v: u64) -> Result<Self, CodeError> {
        if v >= 1_000_000_000_000 {
            return Err(CodeError::AreaFormat(v.to_string()));
        }
        let code = AreaCode(v);
        // Once a part is non-zero every higher part must be non-zero too.
        let mut seen_nonzero = false;
        for (_, shift, modulo) in PARTS {
            let part = (v / 10u64.pow(shift)) % modulo;
            if part != 0 {
                seen_nonzero = true;
            } else if seen_nonzero {
                return Err(CodeError::AreaHole(code.to_string()));
            }
        }
        Ok(code)
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    pub fn level(self) -> AreaLevel {
        for (level, shift, modulo) in PARTS {
            if (self.0 / 10u64.pow(shift)) % modulo != 0 {
                return level;
            }
        }
        AreaLevel::Nation
    }

    /// True when `other` equals this area or lies below it.
    pub fn covers(self, other: AreaCode) -> bool {
        let keep = self.level().significant_digits();
        let drop = 10u64.pow((12 - keep) as u32);
        self.0 / drop == other.0 / drop
    }

    /// The area directly above (a village's town, a town's county), None
    /// for the nation.
    pub fn parent(self) -> Option<AreaCode> {
        let up = match self.level() {
            AreaLevel::Nation => return None,
            AreaLevel::Province => AreaLevel::Nation,
            AreaLevel::City => AreaLevel::Province,
            AreaLevel::County => AreaLevel::City,
            AreaLevel::Town => AreaLevel::County,
            AreaLevel::Village => AreaLevel::Town,
        };
        let drop = 10u64.pow((12 - up.significant_digits()) as u32);
        Some(AreaCode(self.0 / drop * drop))
    }

    /// True when one of the two areas lies within the other: a broadcast
    /// to one concerns a node responsible for the other.
    pub fn overlaps(self, other: AreaCode) -> bool {
        self.covers(other) || other.covers(self)
    }
}

impl fmt::Display for AreaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012}", self.0)
    }
}

impl FromStr for AreaCode {
    type Err = CodeError;
    fn from_str(s: &str) -> Result<Self, CodeError> {
        if s.len() != 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CodeError::AreaFormat(s.to_string()));
        }
        let v = s
            .parse::<u64>()
            .map_err(|_| CodeError::AreaFormat(s.to_string()))?;
        AreaCode::from_u64(v)
    }
}

/// True when every area of `inner` is covered by some area of `outer`.
pub fn scope_within(inner: &[AreaCode], outer: &[AreaCode]) -> bool {
    first_outside(inner, outer).is_none()
}

/// The first area of `inner` that no area of `outer` covers.
pub fn first_outside(inner: &[AreaCode], outer: &[AreaCode]) -> Option<AreaCode> {
    inner
        .iter()
        .copied()
        .find(|a| !outer.iter().any(|o| o.covers(*a)))
}

/// True when some area of `a` overlaps some area of `b` (see
/// [`AreaCode::overlaps`]): what a relay forwards to a child.
pub fn any_overlap(a: &[AreaCode], b: &[AreaCode]) -> bool {
    a.iter().any(|x| b.iter().any(|y| x.overlaps(*y)))
}

/// A 23-digit resource code of the national standard: 1-digit prefix,
/// 12-digit area code, 8-digit type, 2-digit sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceCode([u8; 23]);

impl ResourceCode {
    pub fn from_digits(d: [u8; 23]) -> Result<Self, CodeError> {
        if !d.iter().all(u8::is_ascii_digit) {
            return Err(CodeError::ResourceFormat(
                String::from_utf8_lossy(&d).into_owned(),
            ));
        }
        let code = ResourceCode(d);
        // The embedded area code must itself be well-formed.
        let area = std::str::from_utf8(&d[1..13]).unwrap_or_default();
        area.parse::<AreaCode>()?;
        Ok(code)
    }

    pub fn digits(&self) -> &[u8; 23] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The area code embedded in digits 2–13.
    pub fn area(&self) -> AreaCode {
        self.as_str()[1..13].parse().unwrap_or(AreaCode::NATION)
    }
}

impl fmt::Display for ResourceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceCode {
    type Err = CodeError;
    fn from_str(s: &str) -> Result<Self, CodeError> {
        let d: [u8; 23] = s
            .as_bytes()
            .try_into()
            .map_err(|_| CodeError::ResourceFormat(s.to_string()))?;
        ResourceCode::from_digits(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> AreaCode {
        s.parse().unwrap()
    }

    #[test]
    fn levels() {
        assert_eq!(a("000000000000").level(), AreaLevel::Nation);
        assert_eq!(a("360000000000").level(), AreaLevel::Province);
        assert_eq!(a("360100000000").level(), AreaLevel::City);
        assert_eq!(a("360121000000").level(), AreaLevel::County);
        assert_eq!(a("360121100000").level(), AreaLevel::Town);
        assert_eq!(a("360121100201").level(), AreaLevel::Village);
    }

    #[test]
    fn coverage() {
        let county = a("360121000000");
        let town = a("360121100000");
        let village = a("360121100201");
        let other_village = a("360121100202");
        let other_town = a("360121101000");
        assert!(county.covers(town) && county.covers(village) && county.covers(county));
        assert!(town.covers(village) && !town.covers(county) && !town.covers(other_town));
        assert!(village.covers(village) && !village.covers(other_village));
        assert!(!village.covers(town));
        assert!(AreaCode::NATION.covers(village));
        assert!(!a("360122000000").covers(village));
        assert!(scope_within(&[village, other_village], &[town]));
        assert!(!scope_within(&[village, a("360121101001")], &[town]));
    }

    #[test]
    fn malformed_codes() {
        for bad in [
            "36012110020",
            "3601211002011",
            "36012110020x",
            "360100000123",
            "360021100000",
        ] {
            assert!(bad.parse::<AreaCode>().is_err(), "{bad}");
        }
        assert!(AreaCode::from_u64(1_000_000_000_000).is_err());
        let rc: ResourceCode = "43601211002010314010101".parse().unwrap();
        assert_eq!(rc.area(), a("360121100201"));
        assert!("4360121100201031401010".parse::<ResourceCode>().is_err());
        assert!("4360100000123031401010x".parse::<ResourceCode>().is_err());
    }
}
