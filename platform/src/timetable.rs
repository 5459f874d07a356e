//! A programme's timetable as people write it (R9, 定时广播): once, every
//! day, weekdays or chosen days of the week, at start times of the day,
//! from one date to another, all in China time. Each field is checked
//! against its rule and named when it fails; `to_schedule` gives the
//! signed form (`protocol::Schedule`), the one rule terminals play by.

use protocol::schedule::{
    civil_from_days, days_from_civil, local_day, Schedule, CHINA_OFFSET_MINUTES, EVERY_DAY,
    MAX_SCHEDULE_DAYS, MAX_TIMES_PER_DAY, WEEKDAYS,
};
use serde::{Deserialize, Serialize};

use crate::drafts::FieldError;

/// How often a programme repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Repeat {
    Once,
    Daily,
    Weekdays,
    Weekly,
}

impl Repeat {
    pub fn name(self) -> &'static str {
        match self {
            Repeat::Once => "once",
            Repeat::Daily => "daily",
            Repeat::Weekdays => "weekdays",
            Repeat::Weekly => "weekly",
        }
    }
}

/// A timetable, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timetable {
    pub repeat: Repeat,
    /// Days of the week it plays, Monday = 1 … Sunday = 7.
    pub weekdays: Vec<u8>,
    /// Start times, "HH:MM" (or "HH:MM:SS") China time, ascending.
    pub times: Vec<String>,
    /// First and last day it plays, "YYYY-MM-DD" (China).
    pub first_date: String,
    pub last_date: String,
}

fn err(field: &'static str, en: impl Into<String>, zh: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: en.into(),
        message_zh: zh.into(),
    }
}

/// "YYYY-MM-DD" as a day since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut parts = s.trim().splitn(3, '-');
    let y: i32 = parts.next()?.parse().ok()?;
    let m: u8 = parts.next()?.parse().ok()?;
    let d: u8 = parts.next()?.parse().ok()?;
    if !(2000..=2200).contains(&y) {
        return None;
    }
    days_from_civil(y, m, d)
}

pub fn format_date(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// "HH:MM" or "HH:MM:SS" as seconds after midnight.
pub fn parse_time(s: &str) -> Option<u32> {
    let mut parts = s.trim().split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next().unwrap_or("00"));
    if parts.next().is_some() || h.is_empty() || h.len() > 2 || m.len() != 2 || sec.len() != 2 {
        return None;
    }
    let (h, m, sec): (u32, u32, u32) = (h.parse().ok()?, m.parse().ok()?, sec.parse().ok()?);
    (h < 24 && m < 60 && sec < 60).then_some(h * 3600 + m * 60 + sec)
}

/// "HH:MM", or "HH:MM:SS" when it is not on a whole minute.
pub fn format_time(second: u32) -> String {
    let (h, m, s) = (second / 3600, second / 60 % 60, second % 60);
    if s == 0 {
        format!("{h:02}:{m:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

impl Timetable {
    /// The timetable a form gives (None when it names no `schedule`):
    /// `schedule` once|daily|weekdays|weekly, `times` "07:00,18:30",
    /// `weekdays` "1,3,5" (weekly only), `first_date` (default today),
    /// `last_date` (the first date for once). `now_ms` is today.
    pub fn parse(
        get: &dyn Fn(&str) -> Option<String>,
        now_ms: i64,
    ) -> Result<Option<Timetable>, FieldError> {
        let text = |k: &str| get(k).unwrap_or_default().trim().to_string();
        let repeat = match text("schedule").as_str() {
            "" => return Ok(None),
            "once" => Repeat::Once,
            "daily" => Repeat::Daily,
            "weekdays" => Repeat::Weekdays,
            "weekly" => Repeat::Weekly,
            other => {
                return Err(err(
                    "schedule",
                    format!("{other:?} is not one of once, daily, weekdays, weekly"),
                    "重复方式只能是：单次、每天、工作日、每周",
                ))
            }
        };
        let mut minutes = Vec::new();
        for t in text("times")
            .split([',', ' ', '，'])
            .filter(|t| !t.is_empty())
        {
            let m = parse_time(t).ok_or_else(|| {
                err(
                    "times",
                    format!("{t:?} is not a time of day HH:MM"),
                    format!("{t:?} 不是有效的时间（时:分）"),
                )
            })?;
            minutes.push(m);
        }
        minutes.sort_unstable();
        minutes.dedup();
        if minutes.is_empty() || minutes.len() > MAX_TIMES_PER_DAY {
            return Err(err(
                "times",
                format!("1 to {MAX_TIMES_PER_DAY} start times, e.g. 07:00,18:30"),
                format!("请填写 1 到 {MAX_TIMES_PER_DAY} 个播出时间，如 07:00,18:30"),
            ));
        }
        let weekdays: Vec<u8> = match repeat {
            Repeat::Weekly => {
                let mut days = Vec::new();
                for d in text("weekdays")
                    .split([',', ' ', '，'])
                    .filter(|d| !d.is_empty())
                {
                    match d.parse::<u8>() {
                        Ok(n) if (1..=7).contains(&n) => days.push(n),
                        _ => {
                            return Err(err(
                                "weekdays",
                                format!("{d:?}: days of the week are 1 (Monday) to 7 (Sunday)"),
                                "星期应为 1（周一）到 7（周日）",
                            ))
                        }
                    }
                }
                days.sort_unstable();
                days.dedup();
                if days.is_empty() {
                    return Err(err(
                        "weekdays",
                        "a weekly programme names its days, e.g. 1,3,5",
                        "每周播出须选择星期几",
                    ));
                }
                days
            }
            Repeat::Weekdays => (1..=5).collect(),
            Repeat::Daily | Repeat::Once => (1..=7).collect(),
        };
        let today = local_day(now_ms, CHINA_OFFSET_MINUTES);
        let first = match text("first_date").as_str() {
            "" => today,
            s => parse_date(s).ok_or_else(|| {
                err(
                    "first_date",
                    format!("{s:?} is not a date YYYY-MM-DD"),
                    "开始日期格式应为 年-月-日",
                )
            })?,
        };
        if first < today {
            return Err(err(
                "first_date",
                format!(
                    "{} is in the past (today is {})",
                    format_date(first),
                    format_date(today)
                ),
                "开始日期不能早于今天",
            ));
        }
        let last = match (repeat, text("last_date").as_str()) {
            (Repeat::Once, "") => first,
            (_, "") => {
                return Err(err(
                    "last_date",
                    "a repeating programme needs its last date (YYYY-MM-DD)",
                    "重复播出须填写结束日期",
                ))
            }
            (_, s) => parse_date(s).ok_or_else(|| {
                err(
                    "last_date",
                    format!("{s:?} is not a date YYYY-MM-DD"),
                    "结束日期格式应为 年-月-日",
                )
            })?,
        };
        if repeat == Repeat::Once && last != first {
            return Err(err(
                "last_date",
                "a programme played once has one date",
                "单次播出只有一个日期",
            ));
        }
        if last < first {
            return Err(err(
                "last_date",
                "the last date is before the first",
                "结束日期早于开始日期",
            ));
        }
        if last - first >= MAX_SCHEDULE_DAYS as i64 || last - today > MAX_SCHEDULE_DAYS as i64 {
            return Err(err(
                "last_date",
                format!("a schedule runs at most {MAX_SCHEDULE_DAYS} days, ending within a year"),
                "定时播出最长一年",
            ));
        }
        let t = Timetable {
            repeat,
            weekdays,
            times: minutes.into_iter().map(format_time).collect(),
            first_date: format_date(first),
            last_date: format_date(last),
        };
        let s = t.to_schedule();
        if s.first_start_ms().is_none() {
            return Err(err(
                "weekdays",
                "none of those days of the week falls between the dates",
                "所选星期不在起止日期之内",
            ));
        }
        if s.last_start_ms().is_some_and(|t| t < now_ms) {
            return Err(err(
                "times",
                "its only play time has passed",
                "播出时间已过",
            ));
        }
        Ok(Some(t))
    }

    /// The signed form of the rule.
    pub fn to_schedule(&self) -> Schedule {
        let day = |s: &str| parse_date(s).unwrap_or(0).clamp(0, u32::MAX as i64) as u32;
        let weekdays = match self.repeat {
            Repeat::Once | Repeat::Daily => EVERY_DAY,
            Repeat::Weekdays => WEEKDAYS,
            Repeat::Weekly => self
                .weekdays
                .iter()
                .filter(|d| (1..=7).contains(*d))
                .fold(0u8, |m, d| m | 1 << (d - 1)),
        };
        Schedule {
            utc_offset_minutes: CHINA_OFFSET_MINUTES,
            first_day: day(&self.first_date),
            last_day: day(&self.last_date),
            weekdays,
            times: self.times.iter().filter_map(|t| parse_time(t)).collect(),
        }
    }

    /// The timetable of a signed rule (a programme from above).
    pub fn of(s: &Schedule) -> Timetable {
        let weekdays: Vec<u8> = (1..=7u8)
            .filter(|d| s.weekdays & (1 << (d - 1)) != 0)
            .collect();
        let repeat = if s.first_day == s.last_day && s.times.len() == 1 {
            Repeat::Once
        } else if s.weekdays == EVERY_DAY {
            Repeat::Daily
        } else if s.weekdays == WEEKDAYS {
            Repeat::Weekdays
        } else {
            Repeat::Weekly
        };
        Timetable {
            repeat,
            weekdays,
            times: s.times.iter().map(|t| format_time(*t)).collect(),
            first_date: format_date(s.first_day as i64),
            last_date: format_date(s.last_day as i64),
        }
    }

    /// In Chinese, e.g. "每周一、三、五 07:00、18:30（2026-12-08 至 2027-01-31）".
    pub fn describe_zh(&self) -> String {
        const DAYS: [&str; 7] = ["一", "二", "三", "四", "五", "六", "日"];
        let when = match self.repeat {
            Repeat::Once => self.first_date.clone(),
            Repeat::Daily => "每天".into(),
            Repeat::Weekdays => "工作日".into(),
            Repeat::Weekly => {
                let days: Vec<&str> = self
                    .weekdays
                    .iter()
                    .filter_map(|d| DAYS.get(*d as usize - 1).copied())
                    .collect();
                format!("每周{}", days.join("、"))
            }
        };
        let range = match self.repeat {
            Repeat::Once => String::new(),
            _ => format!("（{} 至 {}）", self.first_date, self.last_date),
        };
        format!("{when} {}{range}", self.times.join("、"))
    }

    /// In English, e.g. "Mon, Wed, Fri at 07:00, 18:30 (2026-12-08 to 2027-01-31)".
    pub fn describe_en(&self) -> String {
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        let when = match self.repeat {
            Repeat::Once => format!("on {}", self.first_date),
            Repeat::Daily => "every day".into(),
            Repeat::Weekdays => "weekdays".into(),
            Repeat::Weekly => self
                .weekdays
                .iter()
                .filter_map(|d| DAYS.get(*d as usize - 1).copied())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let range = match self.repeat {
            Repeat::Once => String::new(),
            _ => format!(" ({} to {})", self.first_date, self.last_date),
        };
        format!("{when} at {}{range}", self.times.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drafts::tests::form;

    /// 2026-12-07 10:00 in China.
    fn now() -> i64 {
        protocol::schedule::instant(days_from_civil(2026, 12, 7).unwrap(), 600, 480)
    }

    #[test]
    fn a_weekly_timetable_becomes_the_signed_rule() {
        let f = [
            ("schedule", "weekly"),
            ("times", "18:30, 07:00"),
            ("weekdays", "5,1,3"),
            ("first_date", "2026-12-08"),
            ("last_date", "2027-01-31"),
        ];
        let t = Timetable::parse(&form(&f), now()).unwrap().unwrap();
        assert_eq!(t.times, ["07:00", "18:30"]);
        assert_eq!(t.weekdays, [1, 3, 5]);
        let s = t.to_schedule();
        assert_eq!(s.weekdays, 0b10101);
        assert_eq!(s.times, [25_200, 66_600]);
        s.check(10 * 60_000).unwrap();
        assert_eq!(Timetable::of(&s), t);
        assert_eq!(
            t.describe_zh(),
            "每周一、三、五 07:00、18:30（2026-12-08 至 2027-01-31）"
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let bad = |pairs: &[(&str, &str)]| Timetable::parse(&form(pairs), now()).unwrap_err().field;
        assert_eq!(bad(&[("schedule", "hourly")]), "schedule");
        assert_eq!(bad(&[("schedule", "daily"), ("times", "25:00")]), "times");
        assert_eq!(bad(&[("schedule", "daily"), ("times", "")]), "times");
        assert_eq!(
            bad(&[("schedule", "daily"), ("times", "07:00")]),
            "last_date"
        );
        assert_eq!(
            bad(&[
                ("schedule", "weekly"),
                ("times", "07:00"),
                ("last_date", "2027-01-01")
            ]),
            "weekdays"
        );
        assert_eq!(
            bad(&[
                ("schedule", "once"),
                ("times", "07:00"),
                ("first_date", "2026-12-01")
            ]),
            "first_date"
        );
        assert_eq!(
            bad(&[
                ("schedule", "daily"),
                ("times", "07:00"),
                ("last_date", "2028-01-01")
            ]),
            "last_date"
        );
        assert_eq!(
            bad(&[("schedule", "once"), ("times", "07:00")]),
            "times",
            "07:00 today has passed at 10:00"
        );
        assert!(Timetable::parse(&form(&[]), now()).unwrap().is_none());
        let once = [("schedule", "once"), ("times", "20:00")];
        let t = Timetable::parse(&form(&once), now()).unwrap().unwrap();
        assert_eq!(
            (t.first_date.as_str(), t.last_date.as_str()),
            ("2026-12-07", "2026-12-07")
        );
    }
}
