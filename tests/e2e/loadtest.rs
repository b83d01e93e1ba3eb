//! `rakor loadtest` end to end: the real server, the real `rakor loadtest` binary as a
//! subprocess, and its `--report-json` checked. Mesh (3 publishers, 2 subscribers, 6 s): every
//! subscriber received every publisher with little loss, join times are sane, and the server's
//! CPU and memory were measured. Rakor scenario (the host + 4 sites, 5 s): the host's wall gets
//! every site at the low layer only, the sites get the host at the high layer and the
//! spotlight at the middle one and no other site's video, and audio comes from at most 3
//! sites plus the host.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_e2e::{rakor_bin, Server};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longer than the tool's own bound (6 s + 60 s join budget + 30 s leave budget + 2 s).
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Run `rakor loadtest` against `server` with `args` (plus --url, --server-pid, --data-dir,
/// --report-json); assert it exited 0; return (stdout, stderr, the JSON report).
fn run_loadtest(server: &Server, args: &[&str]) -> (String, String, serde_json::Value) {
    run_loadtest_within(server, args, RUN_LIMIT)
}

fn run_loadtest_within(
    server: &Server,
    args: &[&str],
    limit: Duration,
) -> (String, String, serde_json::Value) {
    let pid = server.pid().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("loadtest.json");
    let mut child = Command::new(rakor_bin())
        .args(["loadtest", "--url", &server.ws_url()])
        .args(["--server-pid", &pid.to_string()])
        .args(args)
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
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("rakor loadtest still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let text = std::fs::read_to_string(&report).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    (stdout, stderr, j)
}

#[test]
fn loadtest_measures_a_small_room() {
    let server = Server::start().unwrap();
    let pid = server.pid().unwrap();
    let (stdout, stderr, j) = run_loadtest(
        &server,
        &[
            "--room",
            "lt",
            "--publishers",
            "3",
            "--subscribers",
            "2",
            "--duration",
            "6s",
        ],
    );
    let text = j.to_string();
    assert!(stdout.contains("| publishers "), "{stdout}");
    assert!(stdout.contains("| subscribers "), "{stdout}");
    assert!(
        stderr.contains("] joined 5/5"),
        "no progress line:\n{stderr}"
    );

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

/// Video packets per layer `[q, h, f]` that `bot` received from `from` in the window.
fn layers(bot: &serde_json::Value, from: &str) -> [u64; 3] {
    let l = &bot["received"][from]["video_layers"];
    [0, 1, 2].map(|i| l[i].as_u64().unwrap_or(0))
}

#[test]
fn loadtest_rakor_scenario_forwards_what_each_screen_shows() {
    let server = Server::start().unwrap();
    let server_log = server.data_dir.path().join("no-such.log");
    let (stdout, stderr, j) = run_loadtest(
        &server,
        &[
            "--room",
            "rakor",
            "--scenario",
            "rakor",
            "--publishers",
            "4",
            "--talkers",
            "2",
            "--duration",
            "5s",
            "--server-log",
            server_log.to_str().unwrap(),
        ],
    );
    let text = j.to_string();
    assert_eq!(j["outcome"], "completed", "{text}");
    assert_eq!(j["scenario"], "rakor");
    assert!(stderr.contains("layers settled"), "{stderr}");
    assert!(stdout.contains("video from host q/h/f"), "{stdout}");
    assert!(
        stdout.contains("forwarding latency: not measured (reading"),
        "{stdout}"
    );
    let bots = j["bots"].as_array().unwrap();
    let by_identity = |id: &str| {
        bots.iter()
            .find(|b| b["identity"] == id)
            .unwrap_or_else(|| panic!("no bot {id}: {text}"))
    };
    let sites = ["site-001", "site-002", "site-003", "site-004"];
    let spotlight = "site-001";

    // The host's wall: every site, at the low layer only.
    let host = by_identity("command-room");
    assert_eq!(host["role"], "host");
    assert_eq!(host["rakor"]["settings_sent"], 4, "{host}");
    for site in sites {
        let [q, h, f] = layers(host, site);
        assert!(
            q > 0 && h == 0 && f == 0,
            "host got {site} at {:?}",
            [q, h, f]
        );
    }
    // Each site: the host at the high layer, the spotlight at the middle one, nobody else.
    for me in sites {
        let b = by_identity(me);
        assert_eq!(b["role"], "site");
        let [q, h, f] = layers(b, "command-room");
        assert!(
            q == 0 && h == 0 && f > 0,
            "{me} got the host at {:?}",
            [q, h, f]
        );
        for other in sites.iter().filter(|s| **s != me) {
            let got = layers(b, other);
            if *other == spotlight {
                assert!(
                    got[0] == 0 && got[1] > 0 && got[2] == 0,
                    "{me} got the spotlight at {got:?}"
                );
            } else {
                assert_eq!(got, [0, 0, 0], "{me} got hidden {other}'s video");
            }
        }
        assert_eq!(b["rakor"]["server_errors"], 0, "{b}");
    }
    // Audio: at most 3 sites at once (the 4th, quiet, is never forwarded) plus the host's.
    let audio_from = |b: &serde_json::Value, from: &str| {
        b["received"][from]["audio_packets"].as_u64().unwrap_or(0)
    };
    let host_hears: Vec<&str> = sites
        .iter()
        .copied()
        .filter(|s| audio_from(host, s) > 0)
        .collect();
    assert!(
        !host_hears.is_empty() && host_hears.len() <= 3,
        "the host heard {host_hears:?}"
    );
    for b in bots {
        let max = b["rakor"]["audio_sites_max"].as_u64().unwrap();
        assert!(max <= 3, "{}: {max} sites' audio at once", b["identity"]);
        if b["role"] == "site" {
            assert!(
                audio_from(b, "command-room") > 0,
                "{} did not hear the host",
                b["identity"]
            );
        }
    }
    let sites_role = j["rakor_roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == "sites")
        .unwrap();
    let f = &sites_role[1];
    assert!(
        f["host_audio_samples"].as_u64().unwrap() + 4 >= f["host_audio_expected"].as_u64().unwrap(),
        "{f}"
    );
    // Loss on loopback: gaps that stayed gaps are (next to) none.
    for role in j["roles"].as_array().unwrap() {
        let unrecovered = role["unrecovered"].as_u64().unwrap();
        let packets = role["packets_received"].as_u64().unwrap();
        assert!(
            unrecovered * 100 <= packets,
            "{}: {unrecovered} of {packets} lost",
            role["role"]
        );
        assert_eq!(role["pairs_with_media"], role["pairs_expected"], "{role}");
    }
    let sv = &j["server"];
    assert!(sv["rss_peak_kib"].as_u64().unwrap() >= sv["rss_start_kib"].as_u64().unwrap());
    assert!(
        j["machine"]["loadtest_cpu_cores_avg"].as_f64().is_some(),
        "{}",
        j["machine"]
    );
}

/// Presentation packets per layer `[q, h, f]` that `bot` received from `from` in the window.
fn screen_layers(bot: &serde_json::Value, from: &str) -> [u64; 3] {
    let l = &bot["received"][from]["screen_layers"];
    [0, 1, 2].map(|i| l[i].as_u64().unwrap_or(0))
}

/// The rakor scenario with `--presenter`: the spotlighted site also shares its screen (slides,
/// three simulcast layers). Everyone shows the presentation in a 640x360 tile, where a camera
/// gets the middle layer; the presentation arrives at its top layer only, while the host's wall
/// keeps every site's camera at the bottom layer.
#[test]
fn loadtest_rakor_scenario_presentation_at_its_top_layer() {
    let server = Server::start().unwrap();
    let (_stdout, _stderr, j) = run_loadtest(
        &server,
        &[
            "--room",
            "rakor",
            "--scenario",
            "rakor",
            "--publishers",
            "4",
            "--talkers",
            "2",
            "--presenter",
            "--duration",
            "6s",
        ],
    );
    let text = j.to_string();
    assert_eq!(j["outcome"], "completed", "{text}");
    let bots = j["bots"].as_array().unwrap();
    let by_identity = |id: &str| {
        bots.iter()
            .find(|b| b["identity"] == id)
            .unwrap_or_else(|| panic!("no bot {id}: {text}"))
    };
    let sites = ["site-001", "site-002", "site-003", "site-004"];
    let presenter = "site-001";
    let host = by_identity("command-room");
    let [q, h, f] = screen_layers(host, presenter);
    assert!(
        q == 0 && h == 0 && f > 0,
        "host got the presentation at {:?}",
        [q, h, f]
    );
    for site in sites {
        let [q, h, f] = layers(host, site);
        assert!(
            q > 0 && h == 0 && f == 0,
            "host's wall got {site}'s camera at {:?}",
            [q, h, f]
        );
    }
    for me in sites.iter().filter(|s| **s != presenter) {
        let b = by_identity(me);
        let got = screen_layers(b, presenter);
        assert!(
            got[0] == 0 && got[1] == 0 && got[2] > 0,
            "{me} got the presentation at {got:?}"
        );
        // The presenter's camera is still the spotlight at the middle layer.
        let cam = layers(b, presenter);
        assert!(cam[1] > 0 && cam[2] == 0, "{me} got the camera at {cam:?}");
    }
    for b in bots {
        assert_eq!(b["rakor"]["server_errors"], 0, "{b}");
    }
}

/// Issue 14's load check: the rakor scenario with sixty sites and `--presenter`. The
/// presentation reaches the host and every site at its top layer only, while the host's wall
/// keeps all sixty cameras at the bottom layer and every site gets the presenter's camera (the
/// spotlight) at the middle one. Kept cheap for a shared 2-core machine: one talker (so at most
/// one site's audio is forwarded), joins four at a time, a 5 s window. Bounded: the tool's own
/// join budget (150 s) + 5 s + its 30 s leave budget, under a 240 s kill.
///
/// Ignored in the default (nextest) run, which runs two tests at a time and kills a test at
/// 180 s: tests/run.sh runs it alone after the main suite, `cargo test --release -p rakor-e2e
/// --test loadtest -- --ignored --exact
/// loadtest_rakor_sixty_sites_presentation_at_the_top_cameras_at_the_bottom --nocapture`
/// (figures in docs/benchmarks.md, "Presentation with sixty sites"). On a quiet machine it
/// first failed because two bots' legs stayed `connecting` forever (the `webrtc` crate's ICE
/// agent never fails a connection that is still checking); rakor-client's `connect_timeout`
/// now resumes those with a media reset (crates/client/tests/connect_timeout.rs). Then 2 of 6
/// quiet runs still failed with one or two bots whose layers never settled: exactly the bots
/// that had been reset. The server subscribes a reset site afresh (every leg visible at its
/// top layer) and the load tool's director, which sent a `track_settings` only when the
/// wanted one changed, never sent them again for the same track ids; it now forgets them on
/// `joined {media_reset}` (`settings_are_sent_again_after_a_media_reset` in
/// crates/server/src/tools/loadtest/scenario.rs). On a machine with a load average of 10–19
/// (other builds) sixty sites still lose their media (docs/benchmarks.md, "What fails from
/// 40–60 sites"), so CI must run tests/run.sh alone.
#[test]
#[ignore = "60 sites need the machine to themselves: tests/run.sh runs it alone"]
fn loadtest_rakor_sixty_sites_presentation_at_the_top_cameras_at_the_bottom() {
    const SITES: usize = 60;
    let server = Server::start_with_env(
        &[],
        &[("RAKOR_LIMITS_JOIN_ATTEMPTS_PER_IP_PER_MINUTE", "0")],
    )
    .unwrap();
    let started = Instant::now();
    let (_stdout, stderr, j) = run_loadtest_within(
        &server,
        &[
            "--room",
            "rakor60",
            "--scenario",
            "rakor",
            "--publishers",
            &SITES.to_string(),
            "--talkers",
            "1",
            "--presenter",
            "--join-concurrency",
            "4",
            "--join-budget",
            "150s",
            "--duration",
            "5s",
        ],
        Duration::from_secs(240),
    );
    let text = j.to_string();
    assert_eq!(j["outcome"], "completed", "{text}");
    assert!(
        stderr.contains("layers settled"),
        "the layers did not settle before the window: {stderr}"
    );
    let bots = j["bots"].as_array().unwrap();
    assert_eq!(bots.len(), SITES + 1, "the host and {SITES} sites");
    let by_identity = |id: &str| {
        bots.iter()
            .find(|b| b["identity"] == id)
            .unwrap_or_else(|| panic!("no bot {id}: {text}"))
    };
    let sites: Vec<String> = (1..=SITES).map(|i| format!("site-{i:03}")).collect();
    let presenter = "site-001";
    let host = by_identity("command-room");
    let got = screen_layers(host, presenter);
    assert!(
        got[0] == 0 && got[1] == 0 && got[2] > 0,
        "host got the presentation at {got:?}"
    );
    for site in &sites {
        let got = layers(host, site);
        assert!(
            got[0] > 0 && got[1] == 0 && got[2] == 0,
            "host's wall got {site}'s camera at {got:?}"
        );
    }
    for me in sites.iter().filter(|s| *s != presenter) {
        let b = by_identity(me);
        let got = screen_layers(b, presenter);
        assert!(
            got[0] == 0 && got[1] == 0 && got[2] > 0,
            "{me} got the presentation at {got:?}"
        );
        let cam = layers(b, presenter);
        assert!(
            cam[0] == 0 && cam[1] > 0 && cam[2] == 0,
            "{me} got the presenter's camera at {cam:?}"
        );
        for other in sites.iter().filter(|s| *s != me && *s != presenter) {
            assert_eq!(
                layers(b, other),
                [0, 0, 0],
                "{me} got hidden {other}'s video"
            );
        }
    }
    for b in bots {
        assert_eq!(b["rakor"]["server_errors"], 0, "{b}");
    }
    println!(
        "60 sites + host: run {:.0} s; join {} ; server cpu {} cores, rss peak {} KiB; tool cpu {} cores",
        started.elapsed().as_secs_f64(),
        j["join"],
        j["server"]["cpu_cores_avg"],
        j["server"]["rss_peak_kib"],
        j["machine"]["loadtest_cpu_cores_avg"]
    );
}

/// A counter from the server's `/metrics`.
fn metric(server: &Server, name: &str) -> u64 {
    let (status, body) = rakor_e2e::http_get(server.http, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
}

/// Issue 12's regression check for relayed media at scale: ten sites in a mesh, every bot
/// relay-only (`--ice-transport relay`), so every packet goes through the built-in TURN
/// server (over TCP here: on loopback without TLS, the same relay sockets, batching and
/// client bridge as TURN/TLS on 443). Each subscriber allocation carries nine streams
/// (~600 datagrams/s). Before the relay sockets got large buffers and the stream writes were
/// batched, 20 such sites lost 46.8 % of their packets (docs/benchmarks.md); here the server
/// counts the datagrams its relay sockets dropped, and that count must stay 0, and the bots'
/// loss must be near 0.
#[test]
fn ten_relay_only_sites_lose_nothing_in_the_turn_server() {
    let server = Server::start_with_env(
        &[],
        &[
            ("RAKOR_TURN_ENABLED", "true"),
            ("RAKOR_TURN_LISTEN", "127.0.0.1:0"),
            ("RAKOR_LIMITS_JOIN_ATTEMPTS_PER_IP_PER_MINUTE", "0"),
        ],
    )
    .unwrap();
    let (_, _, j) = run_loadtest(
        &server,
        &[
            "--room",
            "relay",
            "--publishers",
            "10",
            "--subscribers",
            "0",
            "--duration",
            "8s",
            "--join-budget",
            "60s",
            "--ice-transport",
            "relay",
        ],
    );
    let text = j.to_string();
    assert_eq!(j["outcome"], "completed", "{text}");
    let role = &j["roles"][0];
    assert_eq!(role["joined"], 10, "{text}");
    assert_eq!(role["pairs_with_media"], role["pairs_expected"], "{text}");
    let received = role["packets_received"].as_u64().unwrap();
    let loss = role["loss_pct"].as_f64().unwrap();
    let to_client = metric(&server, "rakor_turn_packets_to_client_total");
    let dropped = metric(&server, "rakor_turn_relay_datagrams_dropped_total");
    let writes = metric(&server, "rakor_turn_client_writes_total");
    // The media port's own drops (reported, not asserted: a worker starved of CPU on a
    // loaded machine may drop some, which the bots' loss then shows).
    let media_drops = metric(&server, "rakor_media_socket_drops_total");
    eprintln!(
        "10 relay-only sites: {received} packets received, loss {loss} %; TURN: {to_client} \
         datagrams to clients in {writes} stream writes, {dropped} dropped on relay sockets; \
         {media_drops} dropped on the media socket"
    );
    // The media went through the relay: at least what the bots received came from it.
    assert!(
        to_client >= received && received > 10_000,
        "relayed {to_client}, received {received}"
    );
    assert_eq!(dropped, 0, "the relay sockets overflowed");
    assert!(loss < 1.0, "loss {loss} %: {text}");
}

/// The shape of a JSON value: objects by their keys (recursively), arrays element by element;
/// scalars and null are all "value" (an optional figure may be absent in one run).
fn shape(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as V;
    match v {
        V::Object(m) => V::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        V::Array(a) => V::Array(a.iter().map(shape).collect()),
        _ => V::from("value"),
    }
}

/// Arrays whose length is a count of events (differs run to run): shape of the first only.
fn shape_top(j: &serde_json::Value) -> serde_json::Value {
    let mut s = shape(j);
    for key in ["notes", "not_measured"] {
        s[key] = serde_json::Value::from("array");
    }
    // Which sites a bot received from depends on who was among the loudest speakers at the
    // time (two talkers, timing-dependent): compare the shape of one entry, not the senders.
    if let Some(bots) = s["bots"].as_array_mut() {
        for bot in bots {
            let entry = bot["received"]
                .as_object()
                .and_then(|m| m.values().next().cloned())
                .unwrap_or(serde_json::Value::Null);
            bot["received"] = entry;
        }
    }
    s
}

/// `--procs 2` spreads the bots over two processes and adds their reports up: the report has
/// the shape of a one-process run's and the same counts (bots in the same order, joins,
/// pairs with media, what each screen receives), and the server sees every bot.
#[test]
fn loadtest_procs_2_reports_like_one_process() {
    let server = Server::start().unwrap();
    let args = |room: &'static str, procs: &'static str| {
        [
            "--room",
            room,
            "--scenario",
            "rakor",
            "--publishers",
            "4",
            "--talkers",
            "2",
            "--duration",
            "4s",
            "--procs",
            procs,
        ]
    };
    let (_, _, one) = run_loadtest(&server, &args("one", "1"));
    let (stdout, stderr, two) = run_loadtest(&server, &args("two", "2"));
    let text = two.to_string();
    assert_eq!(two["outcome"], "completed", "{text}");
    assert!(
        stderr.contains("spreading 5 bots over 2 loadtest processes"),
        "{stderr}"
    );
    assert!(stdout.contains("video from host q/h/f"), "{stdout}");
    // Same shape, bots and roles. Per-bot `rakor` figures are compared by their shape only
    // (loss and timings differ run to run).
    assert_eq!(
        shape_top(&one),
        shape_top(&two),
        "one process:\n{one}\ntwo processes:\n{text}"
    );
    let ids = |j: &serde_json::Value| -> Vec<(String, String)> {
        j["bots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["identity"].as_str().unwrap().to_owned(),
                    b["role"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(ids(&one), ids(&two));
    for (r1, r2) in one["roles"]
        .as_array()
        .unwrap()
        .iter()
        .zip(two["roles"].as_array().unwrap())
    {
        for key in [
            "role",
            "bots",
            "joined",
            "pairs_expected",
            "pairs_with_media",
        ] {
            assert_eq!(r1[key], r2[key], "{key} of {}: {text}", r1["role"]);
        }
        assert_eq!(r2["pairs_with_media"], r2["pairs_expected"], "{text}");
    }
    assert_eq!(two["server"]["participants"], 5, "{text}");
    assert_eq!(one["server"]["participants"], 5);
    // What each screen receives, from the bots of both processes: the host every site at q
    // only, each site the host at f.
    let bots = two["bots"].as_array().unwrap();
    let by_identity = |id: &str| bots.iter().find(|b| b["identity"] == id).unwrap();
    let host = by_identity("command-room");
    for site in ["site-001", "site-002", "site-003", "site-004"] {
        let [q, h, f] = layers(host, site);
        assert!(
            q > 0 && h == 0 && f == 0,
            "host got {site} at {:?}",
            [q, h, f]
        );
        let [_, _, f] = layers(by_identity(site), "command-room");
        assert!(f > 0, "{site} got no f from the host: {text}");
    }
    let cores = two["machine"]["loadtest_cpu_cores_avg"].as_f64().unwrap();
    assert!(cores > 0.0, "{text}");
    assert!(two["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains("2 loadtest processes")));
}
