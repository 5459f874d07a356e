//! Wall-clock helpers. Library code takes `now` as a parameter (sans-IO);
//! only the edges read the system clock.

use time::{format_description::well_known::Rfc3339, OffsetDateTime, UtcOffset};

/// China Standard Time: Asia/Shanghai has had no daylight saving since 1991.
pub const CHINA_OFFSET: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(o) => o,
    Err(_) => UtcOffset::UTC,
};

/// Current unix time in seconds.
pub fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Current unix time in milliseconds.
pub fn unix_now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Formats unix seconds as local China time, RFC 3339 (e.g. 2026-11-28T20:30:00+08:00).
pub fn format_local(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.to_offset(CHINA_OFFSET).format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{unix}"))
}

/// Parses RFC 3339 (any offset) into unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}
