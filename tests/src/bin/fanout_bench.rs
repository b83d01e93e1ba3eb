//! Fan-out benchmark: P publishers → S receive-only subscribers in one room on the real
//! `rakor` binary (loopback), measuring the server process's CPU per forwarded packet (from
//! /proc) and delivery (received vs sent × subscribers), next to the cost of a bare UDP send
//! of a packet of the same size measured in the same run.
//!
//! ```text
//! cargo build --release --bin rakor --bin fanout-bench
//! target/release/fanout-bench --publishers 1 --subscribers 20 --seconds 20 --runs 3
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{bail, Result};
use rakor_client::{Client, ClientOptions};
use rakor_e2e::{http_get, Server};
use std::time::{Duration, Instant};

struct Args {
    publishers: usize,
    subscribers: usize,
    seconds: u64,
    runs: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        publishers: 1,
        subscribers: 20,
        seconds: 20,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--publishers" => a.publishers = v.parse()?,
            "--subscribers" => a.subscribers = v.parse()?,
            "--seconds" => a.seconds = v.parse()?,
            "--runs" => a.runs = v.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if a.seconds == 0 || a.seconds > 600 || a.runs == 0 || a.runs > 20 {
        bail!("--seconds must be 1..=600 and --runs 1..=20 (bounded by design)");
    }
    Ok(a)
}

fn metric(server: &Server, name: &str) -> u64 {
    let (_, body) = http_get(server.http, "/metrics").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn thread_cpu() -> Duration {
    // SAFETY: getrusage with a valid out pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(us(ru.ru_utime) + us(ru.ru_stime))
}

/// CPU µs per `send_to` of a `size`-byte datagram to a loopback socket drained by a thread.
fn bare_udp_send_us(size: usize, count: usize) -> f64 {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dst = rx.local_addr().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut n = 0usize;
        while rx.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let payload = vec![0x80u8; size];
    let t0 = thread_cpu();
    for i in 0..count {
        let _ = tx.send_to(&payload, dst);
        if i % 64 == 63 {
            std::thread::yield_now(); // let the drain keep up; counted in neither side's send cost
        }
    }
    let spent = thread_cpu() - t0;
    let _ = drain.join();
    spent.as_secs_f64() * 1e6 / count as f64
}

struct RunResult {
    cpu_us_per_forwarded: f64,
    idle_cpu_pct: f64,
    busy_cpu_pct: f64,
    forwarded: u64,
    delivered_pct: f64,
    udp_send_us: f64,
    avg_video_payload: f64,
}

async fn one_run(a: &Args) -> Result<RunResult> {
    let server = Server::start()?;
    let mut subs = Vec::new();
    for i in 0..a.subscribers {
        let t = server.token("bench", &format!("sub-{i}"), "participant")?;
        subs.push(Client::connect(ClientOptions::new(server.ws_url(), t).receive_only()).await?);
    }
    // Baseline: the server with S idle subscribers, no media.
    let idle_window = Duration::from_secs(3);
    let c0 = server.cpu_time()?;
    tokio::time::sleep(idle_window).await;
    let idle_cpu = server.cpu_time()? - c0;

    let mut pubs = Vec::new();
    for i in 0..a.publishers {
        let t = server.token("bench", &format!("pub-{i}"), "participant")?;
        pubs.push(Client::connect(ClientOptions::new(server.ws_url(), t)).await?);
    }
    // Warm-up: every subscriber receives every publisher's video.
    let pub_ids: Vec<_> = pubs.iter().map(|p| p.participant_id().clone()).collect();
    for s in &subs {
        s.wait_media(
            |r| {
                pub_ids
                    .iter()
                    .all(|p| r.received_from(p).map(|t| t.packets).sum::<u64>() > 20)
            },
            Duration::from_secs(60),
        )
        .await?;
    }
    let sent0: u64 = pubs
        .iter()
        .map(|p| p.stats().sent.values().map(|t| t.packets).sum::<u64>())
        .sum();
    let recv0: u64 = subs
        .iter()
        .map(|s| s.stats().total_received_packets())
        .sum();
    let fwd0 = metric(&server, "rakor_rtp_packets_forwarded_total");
    let cpu0 = server.cpu_time()?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let cpu = server.cpu_time()? - cpu0;
    let wall = t0.elapsed();
    let fwd = metric(&server, "rakor_rtp_packets_forwarded_total") - fwd0;
    let sent: u64 = pubs
        .iter()
        .map(|p| p.stats().sent.values().map(|t| t.packets).sum::<u64>())
        .sum::<u64>()
        - sent0;
    // Sent is read before received at both ends of the window, so packets in flight (about a
    // millisecond on loopback) are counted consistently.
    let recv: u64 = subs
        .iter()
        .map(|s| s.stats().total_received_packets())
        .sum::<u64>()
        - recv0;
    let video_bytes: u64 = pubs
        .iter()
        .filter_map(|p| p.stats().sent.get("video").map(|t| (t.bytes, t.packets)))
        .map(|(b, n)| b / n.max(1))
        .sum();
    let avg_video_payload = video_bytes as f64 / a.publishers as f64;
    let idle_per_sec = idle_cpu.as_secs_f64() / idle_window.as_secs_f64();
    let busy = cpu.as_secs_f64();
    let expected = sent * a.subscribers as u64;
    for c in subs.into_iter().chain(pubs) {
        let _ = tokio::time::timeout(Duration::from_secs(3), c.leave()).await;
    }
    Ok(RunResult {
        cpu_us_per_forwarded: busy * 1e6 / fwd.max(1) as f64,
        idle_cpu_pct: idle_per_sec * 100.0,
        busy_cpu_pct: busy / wall.as_secs_f64() * 100.0,
        forwarded: fwd,
        delivered_pct: if expected == 0 {
            0.0
        } else {
            recv as f64 * 100.0 / expected as f64
        },
        udp_send_us: bare_udp_send_us(avg_video_payload.max(100.0) as usize + 40, 20_000),
        avg_video_payload,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = parse_args()?;
    println!(
        "fan-out {} publisher(s) → {} subscriber(s), {} s window, {} run(s), binary {}",
        a.publishers,
        a.subscribers,
        a.seconds,
        a.runs,
        rakor_e2e::rakor_bin().display()
    );
    let mut results = Vec::new();
    for run in 1..=a.runs {
        let r = one_run(&a).await?;
        println!(
            "run {run}: {:.2} µs CPU/forwarded pkt (all-in), forwarded {} pkts, delivered {:.2}%, server CPU {:.1}% busy / {:.1}% idle, bare UDP send {:.2} µs ({:.0} B payload)",
            r.cpu_us_per_forwarded, r.forwarded, r.delivered_pct, r.busy_cpu_pct, r.idle_cpu_pct, r.udp_send_us, r.avg_video_payload
        );
        results.push(r);
    }
    let m = |f: fn(&RunResult) -> f64| median(results.iter().map(f).collect());
    let cpu = m(|r| r.cpu_us_per_forwarded);
    let udp = m(|r| r.udp_send_us);
    println!(
        "MEDIAN: {:.2} µs CPU per forwarded packet (all-in), bare UDP send {:.2} µs, ratio {:.1}x, delivered {:.2}%, server CPU {:.1}% busy / {:.1}% idle",
        cpu,
        udp,
        cpu / udp.max(0.001),
        m(|r| r.delivered_pct),
        m(|r| r.busy_cpu_pct),
        m(|r| r.idle_cpu_pct)
    );
    Ok(())
}
