//! `rakor loadtest` end to end: the real server, the real `rakor loadtest` binary as a
//! subprocess (3 publishers, 2 subscribers, 6 s), and its `--report-json` checked: every
//! subscriber received every publisher with little loss, join times are sane, and the server's
//! CPU and memory were measured.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_e2e::{rakor_bin, Server};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longer than the tool's own bound (6 s + 60 s join budget + 30 s leave budget + 2 s).
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn loadtest_measures_a_small_room() {
    let server = Server::start().unwrap();
    let pid = server.pid().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("loadtest.json");
    let mut child = Command::new(rakor_bin())
        .args([
            "loadtest",
            "--url",
            &server.ws_url(),
            "--room",
            "lt",
            "--publishers",
            "3",
            "--subscribers",
            "2",
            "--duration",
            "6s",
            "--server-pid",
            &pid.to_string(),
        ])
        .arg("--data-dir")
        .arg(server.data_dir.path())
        .arg("--report-json")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("rakor loadtest still running after {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("| publishers "), "{stdout}");
    assert!(stdout.contains("| subscribers "), "{stdout}");
    assert!(
        stderr.contains("] joined 5/5"),
        "no progress line:\n{stderr}"
    );

    let text = std::fs::read_to_string(&report).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["outcome"], "completed", "{text}");
    assert!(j["window_s"].as_f64().unwrap() >= 5.9);

    let bots = j["bots"].as_array().unwrap();
    assert_eq!(bots.len(), 5);
    let publishers: Vec<&str> = bots
        .iter()
        .filter(|b| b["role"] == "publisher")
        .map(|b| b["identity"].as_str().unwrap())
        .collect();
    assert_eq!(publishers, ["site-001", "site-002", "site-003"]);
    let subscribers: Vec<&serde_json::Value> =
        bots.iter().filter(|b| b["role"] == "subscriber").collect();
    assert_eq!(subscribers.len(), 2);
    for s in &subscribers {
        for p in &publishers {
            let r = &s["received"][*p];
            let packets = r["packets"].as_u64().unwrap_or(0);
            assert!(packets > 0, "{} got nothing from {p}: {s}", s["identity"]);
            let loss = r["loss_pct"].as_f64().unwrap();
            assert!(loss < 5.0, "{} lost {loss} % from {p}", s["identity"]);
        }
    }
    for role in j["roles"].as_array().unwrap() {
        let p50 = role["join_media_ms"]["p50"].as_f64().unwrap();
        assert!(
            p50 > 0.0 && p50 < 10_000.0,
            "{}: join p50 {p50} ms",
            role["role"]
        );
        assert_eq!(role["joined"], role["bots"]);
        assert_eq!(role["pairs_with_media"], role["pairs_expected"]);
    }
    assert_eq!(j["roles"][0]["role"], "publishers");
    assert!(j["roles"][0]["packets_sent"].as_u64().unwrap() > 0);

    let sv = &j["server"];
    assert_eq!(sv["pid"], pid);
    let cpu = sv["cpu_cores_avg"].as_f64().unwrap();
    assert!(cpu > 0.0 && cpu < 4.0, "server CPU {cpu} cores");
    for key in ["rss_start_kib", "rss_end_kib", "rss_after_leave_kib"] {
        assert!(sv[key].as_u64().unwrap() > 0, "{key}: {sv}");
    }
    assert!(
        sv["rss_per_participant_kib"].as_f64().unwrap() > 0.0,
        "{sv}"
    );
    assert_eq!(sv["participants"], 5);
}
