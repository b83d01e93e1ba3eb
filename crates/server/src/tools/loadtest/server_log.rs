//! The server's forwarding latency, read from its log (`--server-log FILE`): the media worker
//! logs every 10 s, at info level from target `rakor_sfu`, a `media stats` line whose fields
//! include `fwd_p50_us`, `fwd_p99_us` and `fwd_samples` (tracing's plain `key=value` format).
//! After the run the tool takes the last such line written during the measured window.

use serde::Serialize;
use std::time::{Duration, SystemTime};

/// The message of the server's periodic stats line.
const MEDIA_STATS: &str = "media stats";
/// The target (module path prefix) that logs it.
const TARGET: &str = "rakor_sfu";

/// Forwarding latency added by the server, from one `media stats` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FwdLatency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub samples: u64,
    /// From the kernel's receive stamp instead of the socket read (`fwd_kernel_p50_us`,
    /// `fwd_kernel_p99_us`: includes the wait in the socket), and that wait alone
    /// (`rx_wait_p99_us`, every datagram); absent from servers without kernel stamps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_p50_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_p99_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_wait_p99_us: Option<u64>,
    /// The line's timestamp as written (RFC 3339, UTC).
    pub logged_at: String,
}

/// Remove ANSI escape sequences (`ESC [ … letter`), which a server logging to a terminal
/// wraps around levels, targets and field names.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of field `key` in a `key=value key=value` line (the first match preceded by
/// a space).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// One `media stats` line of the server's log: its timestamp (the first word, RFC 3339) and
/// the latency fields. `None` for any other line, or one without all three fields.
pub fn parse_media_stats(raw: &str) -> Option<(SystemTime, FwdLatency)> {
    let line = strip_ansi(raw);
    let mut words = line.split_whitespace();
    let ts_text = words.next()?;
    let at = humantime::parse_rfc3339_weak(ts_text).ok()?;
    // The target comes before the message: "INFO rakor_sfu::worker: media stats …".
    let (head, rest) = line.split_once(MEDIA_STATS)?;
    let target_ok = head
        .split_whitespace()
        .any(|w| w == TARGET || w.starts_with(&format!("{TARGET}:")));
    if !target_ok {
        return None;
    }
    let num = |k: &str| field(rest, k)?.parse::<u64>().ok();
    Some((
        at,
        FwdLatency {
            p50_us: num("fwd_p50_us")?,
            p99_us: num("fwd_p99_us")?,
            samples: num("fwd_samples")?,
            kernel_p50_us: num("fwd_kernel_p50_us"),
            kernel_p99_us: num("fwd_kernel_p99_us"),
            rx_wait_p99_us: num("rx_wait_p99_us"),
            logged_at: ts_text.to_owned(),
        },
    ))
}

/// The last `media stats` line of `log` stamped within `[from, to + slack]` (the server logs
/// the figures of the 10 s before the line; `slack` allows for the clocks of two processes
/// read a moment apart).
pub fn last_in_window(
    log: &str,
    from: SystemTime,
    to: SystemTime,
    slack: Duration,
) -> Option<FwdLatency> {
    let until = to + slack;
    log.lines()
        .rev()
        .filter_map(parse_media_stats)
        .find(|(at, _)| *at >= from && *at <= until)
        .map(|(_, l)| l)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const SAMPLE: &str = "2026-11-23T20:30:00.123456Z  INFO rakor_sfu::worker: media stats \
                          rtp_in=1200 rtp_out=5400 fwd_p50_us=41 fwd_p99_us=380 fwd_samples=1200";

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339_weak(text).unwrap()
    }

    #[test]
    fn parses_the_media_stats_line() {
        let (when, l) = parse_media_stats(SAMPLE).unwrap();
        assert_eq!(when, at("2026-11-23T20:30:00.123456Z"));
        assert_eq!(
            l,
            FwdLatency {
                p50_us: 41,
                p99_us: 380,
                samples: 1200,
                kernel_p50_us: None,
                kernel_p99_us: None,
                rx_wait_p99_us: None,
                logged_at: "2026-11-23T20:30:00.123456Z".into()
            }
        );
        // A server with kernel receive stamps adds the figures from the kernel's arrival.
        let (_, k) = parse_media_stats(&format!(
            "{SAMPLE} fwd_kernel_p50_us=60 fwd_kernel_p99_us=900 rx_wait_p50_us=5 \
             rx_wait_p99_us=700"
        ))
        .unwrap();
        assert_eq!(
            (k.p99_us, k.kernel_p50_us, k.kernel_p99_us, k.rx_wait_p99_us),
            (380, Some(60), Some(900), Some(700))
        );
        // The same line as a terminal shows it (ANSI colours), and with a span prefix.
        let ansi = "\u{1b}[2m2026-11-23T20:30:00.123456Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
                    \u{1b}[2mrakor_sfu::worker\u{1b}[0m\u{1b}[2m:\u{1b}[0m media stats \
                    \u{1b}[3mfwd_p50_us\u{1b}[0m\u{1b}[2m=\u{1b}[0m41 \u{1b}[3mfwd_p99_us\u{1b}[0m\
                    \u{1b}[2m=\u{1b}[0m380 \u{1b}[3mfwd_samples\u{1b}[0m\u{1b}[2m=\u{1b}[0m1200";
        assert_eq!(parse_media_stats(ansi).unwrap().1.p99_us, 380);
        let span = "2026-11-23T20:30:00.1Z  INFO worker{id=0}: rakor_sfu::worker: media stats \
                    fwd_p50_us=7 fwd_p99_us=9 fwd_samples=3";
        assert_eq!(parse_media_stats(span).unwrap().1.p50_us, 7);
    }

    #[test]
    fn ignores_other_lines() {
        let other = [
            "",
            "garbage",
            // another message
            "2026-11-23T20:30:00.1Z  INFO rakor_sfu::worker: room opened room=R",
            // another target
            "2026-11-23T20:30:00.1Z  INFO rakor_server::http: media stats fwd_p50_us=1 \
             fwd_p99_us=2 fwd_samples=3",
            // a field missing or not a number
            "2026-11-23T20:30:00.1Z  INFO rakor_sfu::worker: media stats fwd_p50_us=1 \
             fwd_samples=3",
            "2026-11-23T20:30:00.1Z  INFO rakor_sfu::worker: media stats fwd_p50_us=1 \
             fwd_p99_us=x fwd_samples=3",
            // no timestamp
            "INFO rakor_sfu::worker: media stats fwd_p50_us=1 fwd_p99_us=2 fwd_samples=3",
        ];
        for line in other {
            assert_eq!(parse_media_stats(line), None, "{line:?}");
        }
        // A longer field name is not the field.
        let l = "2026-11-23T20:30:00.1Z  INFO rakor_sfu: media stats xfwd_p50_us=5 \
                 fwd_p50_us=6 fwd_p99_us=7 fwd_samples=8";
        assert_eq!(parse_media_stats(l).unwrap().1.p50_us, 6);
    }

    #[test]
    fn takes_the_last_line_inside_the_window() {
        let line = |t: &str, p99: u32| {
            format!(
                "{t}  INFO rakor_sfu::worker: media stats fwd_p50_us=10 fwd_p99_us={p99} \
                 fwd_samples=100\n"
            )
        };
        let log = [
            line("2026-11-23T20:29:50Z", 1),
            "2026-11-23T20:29:55Z  INFO rakor_server: joined\n".to_owned(),
            line("2026-11-23T20:30:00Z", 2),
            line("2026-11-23T20:30:10Z", 3),
            line("2026-11-23T20:30:20Z", 4),
        ]
        .concat();
        let slack = Duration::from_secs(1);
        let got =
            |from: &str, to: &str| last_in_window(&log, at(from), at(to), slack).map(|l| l.p99_us);
        assert_eq!(got("2026-11-23T20:29:58Z", "2026-11-23T20:30:15Z"), Some(3));
        assert_eq!(
            got("2026-11-23T20:29:58Z", "2026-11-23T20:30:19.5Z"),
            Some(4)
        );
        assert_eq!(got("2026-11-23T20:29:40Z", "2026-11-23T20:29:52Z"), Some(1));
        assert_eq!(got("2026-11-23T20:30:21Z", "2026-11-23T20:30:40Z"), None);
    }
}
