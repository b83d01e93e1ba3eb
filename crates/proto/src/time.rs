//! UTC RFC 3339 timestamps for the wire (`chat.at`, `hands[].at`), without a date library.

use std::time::{SystemTime, UNIX_EPOCH};

/// `t` as UTC RFC 3339 with milliseconds, e.g. `2030-05-01T02:00:00.123Z`. Times before 1970
/// are shown as the epoch.
pub fn rfc3339_utc_ms(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_utc_ms(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2030-05-01T02:00:00Z = 1903831200.
        let t = UNIX_EPOCH + Duration::from_millis(1_903_831_200_123);
        assert_eq!(rfc3339_utc_ms(t), "2030-05-01T02:00:00.123Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_164_800 + 3661);
        assert_eq!(rfc3339_utc_ms(t), "2024-02-29T01:01:01.000Z");
    }
}
