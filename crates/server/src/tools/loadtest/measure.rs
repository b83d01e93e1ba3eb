//! What `rakor loadtest` reads from outside itself, as plain functions: the server process's
//! CPU ticks and resident memory from `/proc/PID/stat` and `/proc/PID/status`, the clock tick
//! rate, finding a local `rakor serve` process, and the loopback check of the target URL.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// utime + stime (clock ticks, all threads of the process, children excluded) from the text of
/// `/proc/PID/stat`. The command name (field 2) may contain spaces and parentheses, so fields
/// are counted after its last `)`: state is the first, utime the 12th, stime the 13th.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// `VmRSS` in KiB from the text of `/proc/PID/status`.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    parse_status_kib(status, "VmRSS:")
}

/// A `Key:  N kB` line of `/proc/PID/status` (e.g. `VmHWM:`, the peak resident memory), in KiB.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The 1, 5 and 15 minute load averages from the text of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut f = text.split_whitespace().map(|w| w.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// This machine's load averages now.
pub fn loadavg() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// Average cores used over `wall`: `ticks / clk_tck / wall_seconds` (1.0 = one core busy the
/// whole time). `None` for a zero tick rate or a window under 100 ms (too short to mean much at
/// the usual 100 ticks/s).
pub fn cores_used(ticks_delta: u64, clk_tck: u64, wall: Duration) -> Option<f64> {
    let secs = wall.as_secs_f64();
    if clk_tck == 0 || secs < 0.1 {
        return None;
    }
    Some(ticks_delta as f64 / clk_tck as f64 / secs)
}

/// The kernel's clock tick rate (`sysconf(_SC_CLK_TCK)`, usually 100), the unit of
/// `/proc/PID/stat`'s CPU times.
pub fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf takes no pointers and has no preconditions; it only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0)
}

/// Reads one process's CPU and memory from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct ServerProbe {
    pub pid: u32,
    pub clk_tck: u64,
}

impl ServerProbe {
    pub fn new(pid: u32) -> Option<Self> {
        Some(Self {
            pid,
            clk_tck: clock_ticks_per_second()?,
        })
    }

    /// utime + stime so far, in clock ticks; `None` once the process is gone.
    pub fn cpu_ticks(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        parse_stat_cpu_ticks(&stat)
    }

    /// Resident memory in KiB; `None` once the process is gone.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        parse_vm_rss_kib(&status)
    }

    /// The process's peak resident memory so far (`VmHWM`) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        parse_status_kib(&status, "VmHWM:")
    }
}

/// Whether a `/proc/PID/cmdline` (NUL-separated arguments) is a `rakor serve`: the program's
/// file name contains `rakor` and the subcommand (the first argument; `rakor` has no global
/// flags) is `serve`. `cargo run --bin rakor -- serve` is not (its program is cargo; the `rakor`
/// it starts is), nor is `rakor loadtest --room serve`.
pub fn is_rakor_serve(cmdline: &[u8]) -> bool {
    let mut args = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy);
    let Some(program) = args.next() else {
        return false;
    };
    let file_name = Path::new(program.as_ref())
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    file_name.contains("rakor") && args.next().is_some_and(|a| a == "serve")
}

/// PIDs of local `rakor serve` processes (see [`is_rakor_serve`]), excluding this process.
pub fn find_rakor_serve_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| is_rakor_serve(&c))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The host part of a `ws://` or `wss://` URL (brackets of an IPv6 literal removed).
pub fn url_host(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("ws") || scheme.eq_ignore_ascii_case("wss")) {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

/// `Ok` when `url` names this machine: `localhost`, an address in 127.0.0.0/8, or `::1`
/// (also as `::ffff:127.x.y.z`). The error says what was found instead.
pub fn check_loopback_url(url: &str) -> Result<(), String> {
    let host = url_host(url).ok_or_else(|| format!("cannot read a ws:// host from {url:?}"))?;
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(());
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.to_canonical().is_loopback() => Ok(()),
        Ok(ip) => Err(format!("{ip} is not a loopback address")),
        Err(_) => Err(format!("{host:?} is not localhost or a loopback address")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn stat_ticks_are_utime_plus_stime_after_the_command_name() {
        // Fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime cutime cstime ...
        let stat = "4242 (rakor) S 1 4242 4242 0 -1 4194560 1500 0 3 0 730 215 9 9 20 0 9 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(945));
        // A command name with spaces and a parenthesis does not shift the fields.
        let odd = "77 (ra) kor (x) R 1 77 77 0 -1 0 0 0 0 0 12 30 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(odd), Some(42));
        for bad in ["", "77 (rakor) S 1 2", "77 (rakor) S 1 2 3 4 5 6 7 8 9 x 1"] {
            assert_eq!(parse_stat_cpu_ticks(bad), None, "{bad:?}");
        }
        let me = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_cpu_ticks(&me).is_some());
    }

    #[test]
    fn status_gives_vm_rss() {
        let status = "Name:\trakor\nVmPeak:\t  99999 kB\nVmHWM:\t   52000 kB\nVmRSS:\t   41234 kB\nThreads:\t7\n";
        assert_eq!(parse_vm_rss_kib(status), Some(41234));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(52000));
        assert_eq!(
            parse_loadavg("2.78 2.15 1.89 3/412 99\n"),
            Some([2.78, 2.15, 1.89])
        );
        assert_eq!(parse_loadavg("2.78 x 1.89"), None);
        assert_eq!(parse_loadavg("1 2"), None);
        assert!(loadavg().is_some());
        assert_eq!(parse_vm_rss_kib("Name:\tkthreadd\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\tlots kB\n"), None);
        let probe = ServerProbe::new(std::process::id()).unwrap();
        assert!(probe.rss_kib().unwrap() > 0);
        assert!(probe.peak_rss_kib().unwrap() >= probe.rss_kib().unwrap() / 2);
        assert!(probe.cpu_ticks().is_some());
        assert!(probe.clk_tck > 0);
    }

    #[test]
    fn cores_used_is_ticks_over_rate_over_wall_time() {
        let cases = [
            (100, 100, 1.0, Some(1.0)),
            (300, 100, 2.0, Some(1.5)),
            (0, 100, 5.0, Some(0.0)),
            (50, 100, 10.0, Some(0.05)),
            (100, 0, 1.0, None),
            (100, 100, 0.05, None),
        ];
        for (ticks, hz, secs, want) in cases {
            let got = cores_used(ticks, hz, Duration::from_secs_f64(secs));
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{ticks} {hz} {secs}: {g}"),
                (g, w) => assert_eq!(g, w, "{ticks} {hz} {secs}"),
            }
        }
    }

    #[test]
    fn recognises_rakor_serve_command_lines() {
        let cases: [(&[u8], bool); 8] = [
            (b"target/release/rakor\0serve\0--data-dir\0/tmp/x\0", true),
            (b"/usr/local/bin/rakor\0serve\0", true),
            (b"rakor-0.1\0serve\0--config\0r.toml\0", true),
            (b"cargo\0run\0--bin\0rakor\0--\0serve\0", false),
            (b"target/release/rakor\0loadtest\0--room\0serve\0", false),
            (b"target/release/rakor\0soak\0", false),
            (b"/usr/bin/vim\0rakor-serve.md\0", false),
            (b"", false),
        ];
        for (cmdline, want) in cases {
            assert_eq!(
                is_rakor_serve(cmdline),
                want,
                "{:?}",
                String::from_utf8_lossy(cmdline)
            );
        }
        // This test binary is not a rakor serve.
        assert!(!find_rakor_serve_pids().contains(&std::process::id()));
    }

    #[test]
    fn only_loopback_urls_pass() {
        let ok = [
            "ws://127.0.0.1:7880/rtc",
            "ws://127.8.9.10:1/rtc",
            "ws://localhost:7880/rtc",
            "WS://LOCALHOST/rtc",
            "wss://[::1]:7880/rtc",
            "ws://[::ffff:127.0.0.1]:7880/rtc",
            "ws://user:pw@127.0.0.1:7880/rtc",
            "ws://127.0.0.1",
        ];
        for url in ok {
            assert_eq!(check_loopback_url(url), Ok(()), "{url}");
        }
        let refused = [
            "ws://10.0.0.5:7880/rtc",
            "ws://0.0.0.0:7880/rtc",
            "ws://[2001:db8::1]:7880/rtc",
            "ws://rakor.example.go.id/rtc",
            "ws://localhost.example.com/rtc",
            "ws://127.0.0.1.nip.io/rtc",
            "ws://127.0.0.1@10.0.0.5/rtc",
            "http://127.0.0.1:7880/rtc",
            "127.0.0.1:7880",
            "ws:///rtc",
        ];
        for url in refused {
            assert!(check_loopback_url(url).is_err(), "{url}");
        }
        assert_eq!(url_host("ws://[::1]:80/x"), Some("::1"));
        assert_eq!(url_host("wss://h:443?x"), Some("h"));
    }
}
