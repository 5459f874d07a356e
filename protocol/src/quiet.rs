//! Quiet hours (R20): hours of the local day in which no non-emergency
//! content plays in an area. The platform that owns the area signs its
//! policy (kind 30); relays pass it down with the revocation lists; each
//! terminal enforces every policy covering it, whoever sent the content,
//! so a misbehaving upper tier cannot push a notice at midnight.
//! Emergencies always play.

use certs::cert::MAX_CERT_BYTES;
use certs::chain::MAX_CHAIN_LEN;
use certs::encoding::{DecodeError, Reader, Writer};
use certs::{AreaCode, SignContext};

use crate::ids::coded_enum;
use crate::schedule::{local_day, DAY_MINUTES};

pub const QUIET_VERSION: u8 = 1;
pub const MAX_QUIET_TARGETS: usize = 64;
pub const MAX_QUIET_WINDOWS: usize = 8;
/// Largest encoded body.
pub const MAX_QUIET_BYTES: usize = 1
    + 8
    + 8
    + 2
    + 8 * MAX_QUIET_TARGETS
    + 2
    + 1
    + 1
    + 4 * MAX_QUIET_WINDOWS
    + 1
    + MAX_CHAIN_LEN * (4 + MAX_CERT_BYTES)
    + 64;

coded_enum!(
    /// What happens to non-emergency content that falls in quiet hours.
    QuietMode, "quiet mode" {
        /// Held: a scheduled play moves to the end of the quiet hours; a
        /// broadcast still valid then plays on from there, in step.
        Hold = 1,
        /// Skipped, and reported so.
        Skip = 2,
    }
);

/// One platform's quiet hours for some of its areas. A later policy of the
/// same platform (a higher `number`) replaces it; no windows clears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHours {
    /// Grows with every policy the platform signs.
    pub number: u64,
    pub issued_at_ms: i64,
    pub targets: Vec<AreaCode>,
    pub utc_offset_minutes: i16,
    pub mode: QuietMode,
    /// (start, end) minutes after local midnight; an end before the start
    /// runs past midnight (22:00–06:00).
    pub windows: Vec<(u16, u16)>,
}

/// Quiet hours in force at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quiet {
    /// When they end (unix ms; windows that meet count as one).
    pub until_ms: i64,
    pub mode: QuietMode,
}

impl QuietHours {
    pub fn check(&self) -> Result<(), &'static str> {
        if self.targets.is_empty() || self.targets.len() > MAX_QUIET_TARGETS {
            return Err("1 to 64 areas");
        }
        if !(-720..=840).contains(&self.utc_offset_minutes) {
            return Err("UTC offset outside -12:00..+14:00");
        }
        if self.windows.len() > MAX_QUIET_WINDOWS {
            return Err("at most 8 windows");
        }
        for (s, e) in &self.windows {
            if *s >= DAY_MINUTES || *e >= DAY_MINUTES || s == e {
                return Err("a window runs from one minute of the day to another");
            }
        }
        Ok(())
    }

    pub fn covers(&self, area: AreaCode) -> bool {
        self.targets.iter().any(|t| t.covers(area))
    }

    /// The end (unix ms) of this policy's window holding `ms`, if any.
    pub fn window_end(&self, ms: i64) -> Option<i64> {
        let off = self.utc_offset_minutes as i64 * 60_000;
        let day = local_day(ms, self.utc_offset_minutes);
        let midnight = day * 86_400_000 - off;
        let minute = ((ms - midnight) / 60_000) as u16;
        self.windows.iter().find_map(|&(s, e)| {
            let at = |d: i64, m: u16| midnight + d * 86_400_000 + m as i64 * 60_000;
            if s < e {
                (s <= minute && minute < e).then(|| at(0, e))
            } else if minute >= s {
                Some(at(1, e))
            } else {
                (minute < e).then(|| at(0, e))
            }
        })
    }

    /// The first moment after `ms` at which one of its windows begins.
    pub fn next_start(&self, ms: i64) -> Option<i64> {
        let off = self.utc_offset_minutes as i64 * 60_000;
        let midnight = local_day(ms, self.utc_offset_minutes) * 86_400_000 - off;
        (0..2)
            .flat_map(|d| {
                self.windows
                    .iter()
                    .map(move |&(s, _)| midnight + d * 86_400_000 + s as i64 * 60_000)
            })
            .filter(|t| *t > ms)
            .min()
    }

    fn encode_into(&self, w: &mut Writer) {
        w.u8(QUIET_VERSION)
            .u64(self.number)
            .i64(self.issued_at_ms)
            .u16(self.targets.len() as u16);
        for t in &self.targets {
            w.u64(t.as_u64());
        }
        w.u16(self.utc_offset_minutes as u16)
            .u8(self.mode.code())
            .u8(self.windows.len() as u8);
        for (s, e) in &self.windows {
            w.u16(*s).u16(*e);
        }
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("quiet hours version")? {
            QUIET_VERSION => {}
            v => return Err(DecodeError::UnsupportedVersion(v)),
        }
        let number = r.u64("policy number")?;
        let issued_at_ms = r.i64("issued at")?;
        let n = r.count16(MAX_QUIET_TARGETS, "quiet areas")?;
        let mut targets = Vec::with_capacity(n);
        for _ in 0..n {
            targets.push(
                AreaCode::from_u64(r.u64("quiet area")?)
                    .map_err(|e| DecodeError::invalid("quiet area", e.to_string()))?,
            );
        }
        let utc_offset_minutes = r.u16("utc offset")? as i16;
        let mode = QuietMode::from_code(r.u8("quiet mode")?)?;
        let n = r.u8("quiet windows")? as usize;
        if n > MAX_QUIET_WINDOWS {
            return Err(DecodeError::TooLong {
                field: "quiet windows",
                len: n,
                max: MAX_QUIET_WINDOWS,
            });
        }
        let mut windows = Vec::with_capacity(n);
        for _ in 0..n {
            windows.push((r.u16("window start")?, r.u16("window end")?));
        }
        Ok(QuietHours {
            number,
            issued_at_ms,
            targets,
            utc_offset_minutes,
            mode,
            windows,
        })
    }
}

/// The quiet hours in force for `area` at `ms` under `policies`: windows
/// of every policy covering the area count, those that meet or overlap as
/// one; skipping wins over holding.
pub fn quiet_at<'a>(
    policies: impl Iterator<Item = &'a QuietHours> + Clone,
    area: AreaCode,
    ms: i64,
) -> Option<Quiet> {
    let covering = policies.filter(|p| p.covers(area));
    let mut found: Option<Quiet> = None;
    let mut at = ms;
    // Chained windows (one policy's ends as another's begins) extend the
    // quiet; a day holds at most a few dozen windows.
    for _ in 0..(MAX_QUIET_WINDOWS * 8) {
        let next = covering
            .clone()
            .filter_map(|p| p.window_end(at).map(|end| (end, p.mode)))
            .max_by_key(|(end, _)| *end);
        match next {
            Some((end, mode)) if end > at => {
                let mode = match (found.map(|q| q.mode), mode) {
                    (Some(QuietMode::Skip), _) | (_, QuietMode::Skip) => QuietMode::Skip,
                    _ => QuietMode::Hold,
                };
                found = Some(Quiet {
                    until_ms: end,
                    mode,
                });
                at = end;
            }
            _ => break,
        }
    }
    found
}

/// The next moment after `ms` at which quiet hours begin for `area`.
pub fn next_quiet_start<'a>(
    policies: impl Iterator<Item = &'a QuietHours>,
    area: AreaCode,
    ms: i64,
) -> Option<i64> {
    policies
        .filter(|p| p.covers(area))
        .filter_map(|p| p.next_start(ms))
        .min()
}

/// A policy with its signer's chain and signature, as received.
pub type SignedQuietHours = crate::Signed<QuietHours>;

impl crate::Sealable for QuietHours {
    const CONTEXT: SignContext = SignContext::QuietHours;
    const MAX_BYTES: usize = MAX_QUIET_BYTES;
    const WHAT: &'static str = "quiet hours";

    fn check(&self) -> Result<(), &'static str> {
        QuietHours::check(self)
    }

    fn encode_into(&self, w: &mut Writer) {
        QuietHours::encode_into(self, w)
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        QuietHours::decode_from(r)
    }

    fn capacity(&self) -> usize {
        256
    }
}

impl SignedQuietHours {
    pub fn policy(&self) -> &QuietHours {
        self.message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{days_from_civil, instant};

    fn area(s: &str) -> AreaCode {
        s.parse().unwrap()
    }

    fn policy(windows: Vec<(u16, u16)>, mode: QuietMode, target: &str) -> QuietHours {
        QuietHours {
            number: 1,
            issued_at_ms: 0,
            targets: vec![area(target)],
            utc_offset_minutes: 480,
            mode,
            windows,
        }
    }

    #[test]
    fn a_night_window_runs_past_midnight_in_china_time() {
        let day = days_from_civil(2026, 12, 7).unwrap();
        let p = policy(vec![(22 * 60, 6 * 60)], QuietMode::Hold, "360101001000");
        p.check().unwrap();
        let at = |d: i64, m: u16| instant(day + d, m, 480);
        assert_eq!(p.window_end(at(0, 21 * 60 + 59)), None);
        assert_eq!(p.window_end(at(0, 22 * 60)), Some(at(1, 360)));
        assert_eq!(p.window_end(at(1, 0)), Some(at(1, 360)));
        assert_eq!(p.window_end(at(1, 5 * 60 + 59)), Some(at(1, 360)));
        assert_eq!(p.window_end(at(1, 6 * 60)), None);
        assert_eq!(p.next_start(at(0, 12 * 60)), Some(at(0, 22 * 60)));
        assert_eq!(p.next_start(at(0, 23 * 60)), Some(at(1, 22 * 60)));
    }

    #[test]
    fn policies_of_several_tiers_add_up_and_skip_wins() {
        let day = days_from_civil(2026, 12, 7).unwrap();
        let at = |m: u16| instant(day, m, 480);
        let village = "360101001001";
        let district = policy(vec![(12 * 60, 13 * 60)], QuietMode::Hold, "360101000000");
        let own = policy(vec![(13 * 60, 14 * 60)], QuietMode::Skip, village);
        let elsewhere = policy(vec![(10 * 60, 11 * 60)], QuietMode::Skip, "360101002000");
        let all = [district, own, elsewhere];
        let q = quiet_at(all.iter(), area(village), at(12 * 60 + 30)).unwrap();
        assert_eq!(q.until_ms, at(14 * 60), "the two windows meet: one quiet");
        assert_eq!(q.mode, QuietMode::Skip);
        assert_eq!(quiet_at(all.iter(), area(village), at(10 * 60 + 30)), None);
        assert_eq!(
            next_quiet_start(all.iter(), area(village), at(9 * 60)),
            Some(at(12 * 60))
        );
    }

    #[test]
    fn bad_windows_are_refused() {
        for w in [vec![(600, 600)], vec![(1440, 10)], vec![(0, 1440)]] {
            assert!(policy(w, QuietMode::Hold, "360101001000").check().is_err());
        }
        let p = policy(vec![(1, 2); 9], QuietMode::Hold, "360101001000");
        assert!(p.check().is_err());
    }
}
