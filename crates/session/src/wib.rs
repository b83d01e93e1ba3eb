//! Asia/Jakarta (WIB, UTC+7, no daylight saving) ⇄ UTC. Operators type times in WIB; storage
//! and the API's `*_utc` fields are UTC (Unix seconds inside, RFC 3339 with `Z` outside).

use crate::error::{Result, SessionError};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The operators' time zone.
pub const ZONE: &str = "Asia/Jakarta";

fn jakarta() -> TimeZone {
    // The bundled tzdb always has Asia/Jakarta; the fixed offset is the same rule (UTC+7 since
    // 1964, no DST) should a build lack it.
    TimeZone::get(ZONE).unwrap_or_else(|_| TimeZone::fixed(jiff::tz::offset(7)))
}

/// Parse a time given by an operator: `2030-05-01T09:00` (or with seconds, or a space instead of
/// `T`) is WIB; a value with an offset or `Z` (`2030-05-01T02:00:00Z`) is taken as that instant.
/// Returns Unix seconds.
pub fn parse(field: &str, text: &str) -> Result<i64> {
    let t = text.trim();
    if t.is_empty() {
        return Err(SessionError::invalid(
            field,
            "is required (e.g. \"2030-05-01T09:00\", WIB)",
        ));
    }
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts.as_second());
    }
    let civil = t.replacen(' ', "T", 1);
    match civil.parse::<DateTime>() {
        Ok(dt) => dt
            .to_zoned(jakarta())
            .map(|z| z.timestamp().as_second())
            .map_err(|e| SessionError::invalid(field, format!("\"{t}\": {e}"))),
        Err(_) => Err(SessionError::invalid(
            field,
            format!("\"{t}\" is not a date and time; write e.g. \"2030-05-01T09:00\" (WIB)"),
        )),
    }
}

/// `2030-05-01T02:00:00Z`.
pub fn utc_string(secs: i64) -> String {
    Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// `2030-05-01T09:00:00+07:00`.
pub fn wib_string(secs: i64) -> String {
    Timestamp::from_second(secs)
        .map(|t| {
            t.to_zoned(jakarta())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        })
        .unwrap_or_default()
}

/// `2030-05-01 09:00` (for CSV files and people).
pub fn wib_short(secs: i64) -> String {
    Timestamp::from_second(secs)
        .map(|t| t.to_zoned(jakarta()).strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// Now, Unix seconds.
pub fn now() -> i64 {
    Timestamp::now().as_second()
}

/// Now, Unix milliseconds.
pub fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn wib_is_utc_plus_seven() {
        let cases = [
            ("2030-05-01T09:00", "2030-05-01T02:00:00Z"),
            ("2030-05-01 09:00:00", "2030-05-01T02:00:00Z"),
            ("2030-05-01T03:30", "2030-04-30T20:30:00Z"),
            ("2030-05-01T02:00:00Z", "2030-05-01T02:00:00Z"),
            ("2030-05-01T09:00:00+07:00", "2030-05-01T02:00:00Z"),
            // No DST in Jakarta: July and January are the same offset.
            ("2030-01-15T09:00", "2030-01-15T02:00:00Z"),
        ];
        for (input, utc) in cases {
            assert_eq!(utc_string(parse("start", input).unwrap()), utc, "{input}");
        }
        let s = parse("start", "2030-05-01T09:00").unwrap();
        assert_eq!(wib_string(s), "2030-05-01T09:00:00+07:00");
        assert_eq!(wib_short(s), "2030-05-01 09:00");
    }

    #[test]
    fn bad_times_name_the_field() {
        for bad in [
            "",
            "tomorrow",
            "2030-13-01T09:00",
            "2030-02-30T09:00",
            "09:00",
        ] {
            let e = parse("end", bad).unwrap_err();
            assert!(e.to_string().starts_with("end: "), "{bad}: {e}");
        }
    }
}
