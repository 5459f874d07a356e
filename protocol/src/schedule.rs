//! When a scheduled programme plays (R9): days of the week between two
//! dates, at start times of the local day. The one implementation of the
//! rule: terminals play by it, platforms show a day's plan by it.
//!
//! Days are counted from 1970-01-01 in the schedule's own local time (a
//! fixed offset from UTC: China has no daylight saving), so "08:00 every
//! weekday" means the same instants at every terminal whatever its own
//! time zone.

use certs::encoding::{DecodeError, Reader, Writer};

/// Most start times in one day.
pub const MAX_TIMES_PER_DAY: usize = 48;
/// Longest span from the first to the last day of a schedule.
pub const MAX_SCHEDULE_DAYS: u32 = 366;
/// Minutes in a day.
pub const DAY_MINUTES: u16 = 1440;
/// Seconds in a day.
pub const DAY_SECONDS: u32 = 86_400;
const DAY_MS: i64 = 86_400_000;
/// China Standard Time (UTC+8), the offset every platform of ours uses.
pub const CHINA_OFFSET_MINUTES: i16 = 480;

/// A weekly rule: on the days of `weekdays` from `first_day` to `last_day`
/// (inclusive), at each of `times`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The local time's offset from UTC, minutes (−720..=840).
    pub utc_offset_minutes: i16,
    /// First and last day it plays, local days since 1970-01-01.
    pub first_day: u32,
    pub last_day: u32,
    /// Bit 0 Monday … bit 6 Sunday.
    pub weekdays: u8,
    /// Start times, seconds after local midnight, ascending.
    pub times: Vec<u32>,
}

/// Every day of the week.
pub const EVERY_DAY: u8 = 0x7F;
/// Monday to Friday.
pub const WEEKDAYS: u8 = 0x1F;

/// Monday = 0 … Sunday = 6 of a day counted from 1970-01-01 (a Thursday).
pub fn weekday(day: u32) -> u8 {
    ((day as u64 + 3) % 7) as u8
}

/// The local day (since 1970-01-01) holding the instant `ms`, for a time
/// `utc_offset_minutes` from UTC.
pub fn local_day(ms: i64, utc_offset_minutes: i16) -> i64 {
    (ms + utc_offset_minutes as i64 * 60_000).div_euclid(DAY_MS)
}

/// The instant (unix ms) of `minute` after local midnight of `day`.
pub fn instant(day: i64, minute: u16, utc_offset_minutes: i16) -> i64 {
    at_second(day, minute as u32 * 60, utc_offset_minutes)
}

/// The instant (unix ms) of `second` after local midnight of `day`.
pub fn at_second(day: i64, second: u32, utc_offset_minutes: i16) -> i64 {
    day * DAY_MS + second as i64 * 1000 - utc_offset_minutes as i64 * 60_000
}

/// (year, month, day) of a day since 1970-01-01 (proleptic Gregorian).
pub fn civil_from_days(day: i64) -> (i32, u8, u8) {
    // Howard Hinnant's algorithm (days_from_civil inverse).
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((y + (m <= 2) as i64) as i32, m, d)
}

/// Days since 1970-01-01 of a civil date, or None if it is not a date.
pub fn days_from_civil(y: i32, m: u8, d: u8) -> Option<i64> {
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let y = y as i64 - (m <= 2) as i64;
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m as i64 - 3 } else { m as i64 + 9 };
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl Schedule {
    /// The rule's own consistency, and that no two of its plays of
    /// `duration_ms` overlap.
    pub fn check(&self, duration_ms: i64) -> Result<(), &'static str> {
        if !(-720..=840).contains(&self.utc_offset_minutes) {
            return Err("UTC offset outside -12:00..+14:00");
        }
        if self.weekdays == 0 || self.weekdays > EVERY_DAY {
            return Err("weekdays must name at least one day, bits 0-6");
        }
        if self.first_day > self.last_day {
            return Err("the first day is after the last day");
        }
        if self.last_day - self.first_day >= MAX_SCHEDULE_DAYS {
            return Err("a schedule spans at most 366 days");
        }
        if self.times.is_empty() || self.times.len() > MAX_TIMES_PER_DAY {
            return Err("1 to 48 start times a day");
        }
        if self.times.iter().any(|t| *t >= DAY_SECONDS) {
            return Err("a start time lies past the end of the day");
        }
        if self.times.windows(2).any(|w| w[0] >= w[1]) {
            return Err("start times must be ascending and distinct");
        }
        let (first, last) = (self.times[0], self.times[self.times.len() - 1]);
        let wrap = first + DAY_SECONDS - last;
        let gap = self
            .times
            .windows(2)
            .map(|w| w[1] - w[0])
            .chain([wrap])
            .min()
            .unwrap_or(DAY_SECONDS);
        if duration_ms > gap as i64 * 1000 {
            return Err(
                "plays would overlap: the audio is longer than the gap between start times",
            );
        }
        Ok(())
    }

    /// The instant the last play starts (unix ms), or None if no day of the
    /// span is one of its weekdays.
    pub fn last_start_ms(&self) -> Option<i64> {
        let last_time = *self.times.last()?;
        (self.first_day..=self.last_day)
            .rev()
            .take(7)
            .find(|d| self.plays_on(*d))
            .map(|d| at_second(d as i64, last_time, self.utc_offset_minutes))
    }

    /// The instant the first play starts.
    pub fn first_start_ms(&self) -> Option<i64> {
        let first_time = *self.times.first()?;
        (self.first_day..=self.last_day)
            .take(7)
            .find(|d| self.plays_on(*d))
            .map(|d| at_second(d as i64, first_time, self.utc_offset_minutes))
    }

    fn plays_on(&self, day: u32) -> bool {
        self.weekdays & (1 << weekday(day)) != 0
    }

    /// Start instants (unix ms) of the plays starting in `[from_ms, to_ms)`,
    /// ascending. Bounded: at most `limit`.
    pub fn starts_between(&self, from_ms: i64, to_ms: i64, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        if from_ms >= to_ms {
            return out;
        }
        let off = self.utc_offset_minutes;
        let first = local_day(from_ms, off).max(self.first_day as i64);
        let last = local_day(to_ms, off).min(self.last_day as i64);
        let mut day = first;
        while day <= last && out.len() < limit {
            if day >= 0 && self.plays_on(day as u32) {
                for t in &self.times {
                    let at = at_second(day, *t, off);
                    if at >= from_ms && at < to_ms && out.len() < limit {
                        out.push(at);
                    }
                }
            }
            day += 1;
        }
        out
    }

    /// The first play starting at or after `from_ms`.
    pub fn next_start(&self, from_ms: i64) -> Option<i64> {
        let off = self.utc_offset_minutes;
        let mut day = local_day(from_ms, off).max(self.first_day as i64);
        // A week holds every weekday: eight days always find one, if any.
        let stop = (day + 8).min(self.last_day as i64);
        while day <= stop {
            if day >= 0 && self.plays_on(day as u32) {
                for t in &self.times {
                    let at = at_second(day, *t, off);
                    if at >= from_ms {
                        return Some(at);
                    }
                }
            }
            day += 1;
        }
        None
    }

    /// The play under way at `at_ms` (its start), for plays of
    /// `duration_ms`.
    pub fn current_start(&self, at_ms: i64, duration_ms: i64) -> Option<i64> {
        self.starts_between(at_ms - duration_ms + 1, at_ms + 1, MAX_TIMES_PER_DAY)
            .last()
            .copied()
    }

    pub(crate) fn encode_into(&self, w: &mut Writer) {
        w.u16(self.utc_offset_minutes as u16)
            .u32(self.first_day)
            .u32(self.last_day)
            .u8(self.weekdays)
            .u8(self.times.len() as u8);
        for t in &self.times {
            w.u32(*t);
        }
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let utc_offset_minutes = r.u16("utc offset")? as i16;
        let first_day = r.u32("first day")?;
        let last_day = r.u32("last day")?;
        let weekdays = r.u8("weekdays")?;
        let n = r.u8("start times")? as usize;
        if n > MAX_TIMES_PER_DAY {
            return Err(DecodeError::TooLong {
                field: "start times",
                len: n,
                max: MAX_TIMES_PER_DAY,
            });
        }
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            times.push(r.u32("start time")?);
        }
        Ok(Schedule {
            utc_offset_minutes,
            first_day,
            last_day,
            weekdays,
            times,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u8, d: u8) -> u32 {
        days_from_civil(y, m, d).unwrap() as u32
    }

    #[test]
    fn civil_dates_round_trip_and_weekdays_are_right() {
        for d in [-1000i64, 0, 1, 59, 60, 365, 10_957, 20_000, 20_789, 100_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), Some(d), "{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2026-12-07 is a Monday; 2024-02-29 exists, 2026-02-29 does not.
        assert_eq!(weekday(day(2026, 12, 7)), 0);
        assert_eq!(weekday(day(2026, 12, 13)), 6);
        assert!(days_from_civil(2024, 2, 29).is_some());
        assert!(days_from_civil(2026, 2, 29).is_none());
        assert!(days_from_civil(2026, 13, 1).is_none());
    }

    #[test]
    fn a_weekday_schedule_plays_monday_to_friday_at_china_times() {
        let s = Schedule {
            utc_offset_minutes: CHINA_OFFSET_MINUTES,
            first_day: day(2026, 12, 7),
            last_day: day(2026, 12, 20),
            weekdays: WEEKDAYS,
            times: vec![7 * 3600, 18 * 3600 + 1800],
        };
        s.check(10 * 60_000).unwrap();
        let from = instant(day(2026, 12, 7) as i64, 0, CHINA_OFFSET_MINUTES);
        let starts = s.starts_between(from, from + 14 * DAY_MS, 100);
        assert_eq!(starts.len(), 20, "10 weekdays, twice a day");
        // 07:00 in Beijing is 23:00 UTC the day before.
        assert_eq!(starts[0], from + 7 * 3_600_000);
        let (y, m, d) = civil_from_days(local_day(starts[0], 0));
        assert_eq!((y, m, d), (2026, 12, 6));
        // Saturday the 12th has none.
        let sat = instant(day(2026, 12, 12) as i64, 0, CHINA_OFFSET_MINUTES);
        assert!(s.starts_between(sat, sat + 2 * DAY_MS, 10).is_empty());
        assert_eq!(
            s.next_start(sat),
            Some(instant(day(2026, 12, 14) as i64, 420, 480))
        );
        assert_eq!(
            s.last_start_ms(),
            Some(instant(day(2026, 12, 18) as i64, 1110, 480))
        );
        assert_eq!(s.first_start_ms(), Some(starts[0]));
        // A play under way is found from inside it.
        assert_eq!(
            s.current_start(starts[1] + 60_000, 600_000),
            Some(starts[1])
        );
        assert_eq!(s.current_start(starts[1] + 600_000, 600_000), None);
    }

    #[test]
    fn overlapping_plays_and_bad_rules_are_refused() {
        let ok = Schedule {
            utc_offset_minutes: 480,
            first_day: 20_000,
            last_day: 20_006,
            weekdays: EVERY_DAY,
            times: vec![36_000, 37_800],
        };
        assert!(ok.check(30 * 60_000).is_ok());
        assert!(
            ok.check(30 * 60_000 + 1).is_err(),
            "10:00 and 10:30, 31 min"
        );
        let wrap = Schedule {
            times: vec![600, 85_800],
            ..ok.clone()
        };
        assert!(wrap.check(20 * 60_000).is_ok());
        assert!(wrap.check(21 * 60_000).is_err(), "23:50 runs into 00:10");
        for bad in [
            Schedule {
                weekdays: 0,
                ..ok.clone()
            },
            Schedule {
                weekdays: 0x80,
                ..ok.clone()
            },
            Schedule {
                times: vec![],
                ..ok.clone()
            },
            Schedule {
                times: vec![37_800, 36_000],
                ..ok.clone()
            },
            Schedule {
                times: vec![86_400],
                ..ok.clone()
            },
            Schedule {
                first_day: 20_007,
                ..ok.clone()
            },
            Schedule {
                last_day: 20_000 + MAX_SCHEDULE_DAYS,
                ..ok.clone()
            },
            Schedule {
                utc_offset_minutes: 900,
                ..ok.clone()
            },
        ] {
            assert!(bad.check(60_000).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_span_with_none_of_its_weekdays_never_plays() {
        // Saturday and Sunday only, over Monday to Wednesday.
        let s = Schedule {
            utc_offset_minutes: 480,
            first_day: day(2026, 12, 7),
            last_day: day(2026, 12, 9),
            weekdays: 0x60,
            times: vec![36_000],
        };
        assert_eq!(s.first_start_ms(), None);
        assert_eq!(s.last_start_ms(), None);
        assert_eq!(s.next_start(0), None);
    }
}
