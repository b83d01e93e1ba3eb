//! Recording through the real binary: bots (`rakor-client`) publish audio and video, the room
//! is recorded (by the host over signalling, by the HTTP API, or `recording.auto`), and the
//! files are checked with ffprobe/ffmpeg (Debian package `ffmpeg`, installed by tests/run.sh):
//! audio and video for each participant, durations within 1 s of the call, no decode error,
//! a composite of the right length; a `kill -9` mid-recording leaves files ffprobe reads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rakor_client::{Client, ClientOptions};
use rakor_e2e::session::{add_rakor, add_site, token_of, Persistent};
use rakor_e2e::Server;
use rakor_proto::{ClientMessage, ErrorCode, RecordingAction, ServerMessage};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const EVENT_WAIT: Duration = Duration::from_secs(10);
const MEDIA_WAIT: Duration = Duration::from_secs(20);
/// The length of a recorded call.
const CALL: Duration = Duration::from_secs(15);

async fn join(server: &Server, room: &str, identity: &str, role: &str) -> Client {
    let token = server.token(room, identity, role).unwrap();
    let c = Client::connect(ClientOptions::new(server.ws_url(), token).publish(true, true))
        .await
        .unwrap_or_else(|e| panic!("{identity} could not join: {e}"));
    c.wait_published(MEDIA_WAIT)
        .await
        .unwrap_or_else(|e| panic!("{identity} did not publish: {e}"));
    c
}

async fn send(c: &Client, action: RecordingAction) {
    c.send(&ClientMessage::Recording { action }).await.unwrap();
}

async fn wait_recording(c: &mut Client, active: bool) -> ServerMessage {
    c.wait_for(
        |m| matches!(m, ServerMessage::Recording { active: a, .. } if *a == active),
        EVENT_WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("no recording {{active: {active}}}: {e}"))
}

async fn wait_error(c: &mut Client, want: ErrorCode) -> String {
    match c
        .wait_for(|m| matches!(m, ServerMessage::Error { .. }), EVENT_WAIT)
        .await
        .unwrap()
    {
        ServerMessage::Error { code, message, .. } => {
            assert_eq!(code, want, "{message}");
            message
        }
        _ => unreachable!(),
    }
}

/// The recordings of the server (`<data>/recordings/<room>/<start>/`).
fn recordings(server: &Server) -> Vec<PathBuf> {
    let root = server.data_dir.path().join("recordings");
    let mut out = Vec::new();
    for room in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for rec in std::fs::read_dir(room.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(rec.path());
        }
    }
    out
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Poll a file the recorder or ffmpeg writes (no event reaches the test) until `done`.
async fn wait_file(
    dir: &Path,
    name: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = std::fs::read(dir.join(name))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        {
            if done(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!("{name} in {}: {v}", dir.display());
            }
        } else if Instant::now() > deadline {
            panic!("no {name} in {}", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (Debian package ffmpeg; tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What `ffmpeg -v error -i FILE -f null -` prints (nothing for a clean file).
fn decode_errors(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The time of the last packet ffprobe can read (works without a Duration element).
fn readable_secs(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .fold(0.0, f64::max)
}

fn duration(probe: &Value) -> f64 {
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration: {probe}"))
}

/// Every participant of the manifest has playable audio and video of about `want` seconds
/// (per identity: the expected length, or the call's).
fn check_participants(dir: &Path, m: &Value, count: usize, want: &dyn Fn(&str) -> f64) {
    check_participants_within(dir, m, count, &|who| {
        let w = want(who);
        (w, w)
    });
}

/// As [`check_participants`], with the call's length known only within `(shortest, longest)`
/// seconds: from when its media was seen flowing, or from when the site started joining, to
/// its end. Recorded lengths must be within 1 s of that range.
fn check_participants_within(
    dir: &Path,
    m: &Value,
    count: usize,
    want: &dyn Fn(&str) -> (f64, f64),
) {
    let parts = m["participants"].as_array().unwrap();
    assert_eq!(parts.len(), count, "{m}");
    for p in parts {
        let who = p["identity"].as_str().unwrap();
        for kind in ["audio", "video"] {
            let files: Vec<&Value> = p["tracks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["kind"] == kind)
                .flat_map(|t| t["files"].as_array().unwrap())
                .collect();
            assert!(!files.is_empty(), "{who}: no {kind} file: {m}");
            let mut total = 0.0;
            for f in files {
                let path = dir.join(f["file"].as_str().unwrap());
                let probe = ffprobe(&path);
                let streams = probe["streams"].as_array().unwrap();
                assert_eq!(streams.len(), 1, "{probe}");
                assert_eq!(streams[0]["codec_type"], kind, "{probe}");
                let codec = if kind == "audio" { "opus" } else { "vp8" };
                assert_eq!(streams[0]["codec_name"], codec, "{probe}");
                total += duration(&probe);
                let errors = decode_errors(&path);
                assert!(errors.is_empty(), "{}: {errors}", path.display());
            }
            let (shortest, longest) = want(who);
            assert!(
                total >= shortest - 1.0 && total <= longest + 1.0,
                "{who} {kind}: {total:.2} s recorded, the call was {shortest:.2}..{longest:.2} s; manifest entry: {p}"
            );
        }
    }
}

async fn check_composite(dir: &Path, want: f64) {
    let c = wait_file(dir, "composite.json", Duration::from_secs(240), |v| {
        v["state"] != "running"
    })
    .await;
    assert_eq!(c["state"], "done", "{c}");
    let path = dir.join("composite.mp4");
    let probe = ffprobe(&path);
    let kinds: Vec<&str> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"video") && kinds.contains(&"audio"),
        "{probe}"
    );
    let d = duration(&probe);
    assert!(
        (d - want).abs() <= 1.0,
        "composite {d:.2} s, call {want:.2} s"
    );
    let errors = decode_errors(&path);
    assert!(errors.is_empty(), "composite: {errors}");
}

/// The host starts and stops over signalling; a participant may not; a stop when nothing
/// records is an error. Two sites, 15 s: audio and video for each, and the composite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_recorded_by_the_host() {
    let server = Server::start().unwrap();
    let mut host = join(&server, "rec-2", "command-room", "host").await;
    let mut site = join(&server, "rec-2", "dishub", "participant").await;

    send(&site, RecordingAction::Start).await;
    let msg = wait_error(&mut site, ErrorCode::Forbidden).await;
    assert!(msg.contains("host"), "{msg}");
    send(&host, RecordingAction::Stop).await;
    let msg = wait_error(&mut host, ErrorCode::InvalidState).await;
    assert!(msg.contains("not being recorded"), "{msg}");
    assert!(recordings(&server).is_empty());

    send(&host, RecordingAction::Start).await;
    let t0 = Instant::now();
    for c in [&mut host, &mut site] {
        match wait_recording(c, true).await {
            ServerMessage::Recording { started_at, .. } => assert!(started_at.is_some()),
            _ => unreachable!(),
        }
    }
    send(&host, RecordingAction::Start).await;
    wait_error(&mut host, ErrorCode::InvalidState).await;
    // A site joining now is told at once.
    let mut late = Client::connect(
        ClientOptions::new(
            server.ws_url(),
            server.token("rec-2", "late", "participant").unwrap(),
        )
        .receive_only(),
    )
    .await
    .unwrap();
    wait_recording(&mut late, true).await;
    late.leave().await;
    // The host puts the site in the spotlight: the manifest's timeline says when (the
    // composite shows it large from then on).
    let site_id = site.participant_id().clone();
    host.send(&ClientMessage::Spotlight {
        participant_id: Some(site_id.clone()),
    })
    .await
    .unwrap();
    site.wait_for(
        |m| matches!(m, ServerMessage::Spotlight { participant_id: Some(p), .. } if *p == site_id),
        EVENT_WAIT,
    )
    .await
    .unwrap();
    let spot_ms = t0.elapsed().as_millis() as i64;

    tokio::time::sleep(CALL.saturating_sub(t0.elapsed())).await;
    send(&host, RecordingAction::Stop).await;
    let call = t0.elapsed().as_secs_f64();
    for c in [&mut host, &mut site] {
        wait_recording(c, false).await;
    }
    let recs = recordings(&server);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let dir = &recs[0];
    let m = wait_file(dir, "manifest.json", EVENT_WAIT, |v| {
        v["state"] == "stopped"
    })
    .await;
    check_participants(dir, &m, 2, &|_| call);
    let spot: Vec<&Value> = m["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kind"] == "spotlight")
        .collect();
    assert_eq!(spot.len(), 1, "{m}");
    assert_eq!(spot[0]["participant_id"], site_id.as_str(), "{m}");
    let at = spot[0]["at_ms"].as_i64().unwrap();
    assert!(
        at > 0 && at <= spot_ms + 500,
        "spotlight at {at} ms, seen at {spot_ms} ms"
    );
    check_composite(dir, call).await;
    // Media went on while recording: nothing was dropped at the hand-off.
    host.leave().await;
    site.leave().await;
}

/// `recording.auto`: eight sites, recorded from the first participant to the room's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_sites_recorded_automatically() {
    let server = Server::start_with_env(&[], &[("RAKOR_RECORDING_AUTO", "true")]).unwrap();
    let mut joins = Vec::new();
    for i in 0..8 {
        let url = server.ws_url();
        let role = if i == 0 { "host" } else { "participant" };
        let token = server.token("rec-8", &format!("site-{i}"), role).unwrap();
        joins.push(tokio::spawn(async move {
            let c = Client::connect(ClientOptions::new(url, token).publish(true, true))
                .await
                .unwrap();
            c.wait_published(MEDIA_WAIT).await.unwrap();
            (Instant::now(), c)
        }));
    }
    let mut bots = Vec::new();
    for j in joins {
        bots.push(j.await.unwrap());
    }
    for (_, c) in &mut bots {
        wait_recording(c, true).await;
    }
    tokio::time::sleep(CALL).await;
    let mut lengths = std::collections::HashMap::new();
    for (t, c) in bots {
        let who = c.joined().identity.clone();
        c.leave().await;
        lengths.insert(who, t.elapsed().as_secs_f64());
    }
    let recs = recordings(&server);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let dir = &recs[0];
    // The room ended with its last participant: so did the recording.
    let m = wait_file(dir, "manifest.json", EVENT_WAIT, |v| {
        v["state"] == "stopped"
    })
    .await;
    check_participants(dir, &m, 8, &|who| lengths[who]);
    let longest = lengths.values().copied().fold(0.0, f64::max);
    check_composite(dir, longest).await;
}

/// `kill -9` of the server mid-recording (after a site left and came back): every file
/// ffprobe reads up to the last few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_recording_leaves_readable_files() {
    let mut server = Server::start_with_env(&[], &[("RAKOR_RECORDING_AUTO", "true")]).unwrap();
    let mut host = join(&server, "rec-k", "command-room", "host").await;
    wait_recording(&mut host, true).await;
    let site = join(&server, "rec-k", "dishub", "participant").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    site.leave().await;
    let site = join(&server, "rec-k", "dishub", "participant").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    server
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(5))
        .unwrap();
    let recs = recordings(&server);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let dir = &recs[0];
    let m = manifest(dir);
    assert_eq!(m["state"], "recording", "{m}");
    let parts = m["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "host, the site, the site again: {m}");
    let mut files = 0;
    for p in parts {
        for t in p["tracks"].as_array().unwrap() {
            for f in t["files"].as_array().unwrap() {
                let path = dir.join(f["file"].as_str().unwrap());
                let probe = ffprobe(&path);
                assert_eq!(probe["streams"][0]["codec_type"], t["kind"], "{probe}");
                // Up to the last few seconds: what the manifest promised, less 3 s.
                let listed = (f["end_ms"].as_i64().unwrap() - f["start_ms"].as_i64().unwrap())
                    as f64
                    / 1000.0;
                let got = readable_secs(&path);
                assert!(
                    got >= listed - 3.0 && got > 0.5,
                    "{}: {got:.2} s readable, manifest {listed:.2} s",
                    path.display()
                );
                files += 1;
            }
        }
    }
    assert_eq!(files, 6, "{m}");
    drop(host);
    drop(site);
}

/// The HTTP API: operators start and stop, list with download links, download with Range;
/// a room nobody is in cannot be recorded; a stop when not recording is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_record_through_the_api() {
    let p = Persistent::new().unwrap();
    let (server, api) = p.start_logged_in().unwrap();
    let host_site = add_site(&api, "Command Room", "opd").unwrap();
    let v = add_rakor(&api, "Rakor banjir", host_site, &[], -60, 60).unwrap();
    let id = v["id"].as_i64().unwrap();
    let base = format!("/api/v1/rakor/{id}");
    let r = api
        .post(&format!("{base}/recording/start"), Value::Null)
        .unwrap();
    assert_eq!(
        (r.status, r.error_code()),
        (409, "not_live".to_owned()),
        "{}",
        r.body
    );

    let links = api
        .get(&format!("{base}/invitations"))
        .unwrap()
        .json()
        .unwrap();
    let link = links.as_array().unwrap()[0]["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut host = Client::connect(
        ClientOptions::new(server.ws_url(), token_of(&link).unwrap()).publish(true, true),
    )
    .await
    .unwrap();
    host.wait_published(MEDIA_WAIT).await.unwrap();

    let r = api
        .post(&format!("{base}/recording/stop"), Value::Null)
        .unwrap();
    assert_eq!(
        (r.status, r.error_code()),
        (409, "not_recording".to_owned()),
        "{}",
        r.body
    );
    let v = api
        .expect(
            "POST",
            &format!("{base}/recording/start"),
            Some(Value::Null),
            200,
        )
        .unwrap();
    assert_eq!(v["active"], true, "{v}");
    wait_recording(&mut host, true).await;
    let r = api
        .post(&format!("{base}/recording/start"), Value::Null)
        .unwrap();
    assert_eq!(
        (r.status, r.error_code()),
        (409, "already_recording".to_owned())
    );
    let v = api
        .expect("GET", &format!("{base}/recordings"), None, 200)
        .unwrap();
    assert_eq!(v["now"]["active"], true, "{v}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    api.expect(
        "POST",
        &format!("{base}/recording/stop"),
        Some(Value::Null),
        200,
    )
    .unwrap();
    wait_recording(&mut host, false).await;

    // The list: one recording, its files with links; the manifest becomes final.
    let deadline = Instant::now() + EVENT_WAIT;
    let rec = loop {
        let v = api
            .expect("GET", &format!("{base}/recordings"), None, 200)
            .unwrap();
        let rec = v["recordings"][0].clone();
        if rec["state"] == "stopped" || Instant::now() > deadline {
            assert_eq!(v["now"]["active"], false, "{v}");
            break rec;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rec["state"], "stopped", "{rec}");
    let files = rec["files"].as_array().unwrap();
    let webm = files
        .iter()
        .find(|f| f["name"].as_str().unwrap().ends_with("-video.webm"))
        .unwrap_or_else(|| panic!("no video file: {rec}"));
    let url = webm["url"].as_str().unwrap();
    let full = api.get(url).unwrap();
    assert_eq!(full.status, 200);
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    let part = rakor_e2e::session::request(
        server.http,
        "GET",
        url,
        &[
            (
                api.auth.as_ref().unwrap().0.as_str(),
                api.auth.as_ref().unwrap().1.as_str(),
            ),
            ("Range", "bytes=0-3"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(part.status, 206, "{}", part.body);
    assert_eq!(
        part.header("content-range")
            .map(|h| h.starts_with("bytes 0-3/")),
        Some(true)
    );
    assert_eq!(part.header("content-length"), Some("4"));
    // Operators only; only files of the recording.
    let anon = rakor_e2e::session::Api::new(server.http);
    assert_eq!(anon.get(url).unwrap().status, 401);
    let bad = format!(
        "{base}/recordings/{}/..%2Fmanifest.json",
        rec["id"].as_str().unwrap()
    );
    assert_eq!(api.get(&bad).unwrap().status, 404);
    host.leave().await;
}

/// Below `recording.min_free` a recording does not start: the host gets a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_recording_without_free_disk_space() {
    let server =
        Server::start_with_env(&[], &[("RAKOR_RECORDING_MIN_FREE", "9000000000000000000")])
            .unwrap();
    let mut host = join(&server, "rec-d", "command-room", "host").await;
    send(&host, RecordingAction::Start).await;
    let msg = wait_error(&mut host, ErrorCode::LimitExceeded).await;
    assert!(msg.contains("recording.min_free"), "{msg}");
    assert!(recordings(&server).is_empty());
    host.leave().await;
}

/// 20 % loss (both ways) on one site's link, in network namespaces (root and nft; skips
/// otherwise): its files still play without a decode error and cover the call.
///
/// Once failed on a loaded CI machine with 8 s of a 15 s call recorded: the server's dead-peer
/// detection had removed the lossy site (docs/operations.md, "Recordings"); the timeout is
/// raised here, a removal fails with its own message, and a short file prints the manifest
/// entry and the site's own send counters.
#[test]
fn lossy_site_is_still_recorded_playably() {
    use rakor_e2e::netns::{self, mint_token, Netns, Probe, ProbeLine, ServerProc};
    const PROBE: &str = env!("CARGO_BIN_EXE_probe-client");
    if let Err(why) = netns::available() {
        eprintln!("SKIP: network namespaces unavailable: {why}");
        return;
    }
    if !netns::have_nft() {
        eprintln!("SKIP: nft is not installed (tests/run.sh installs nftables)");
        return;
    }
    let srv = Netns::new("rsrv").unwrap();
    let site = Netns::new("rsite").unwrap();
    srv.veth("rk-rsrv", "10.78.0.1/24", &site, "rk-rsite", "10.78.0.2/24")
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(
        Some(&srv),
        "10.78.0.1",
        data.path(),
        &[
            ("RAKOR_RECORDING_AUTO", "true"),
            ("RAKOR_SERVER_RESUME_GRACE", "0s"),
            // This test is about the recorder: the site must stay for the whole call. Under
            // 20 % loss both ways on a loaded machine the server once removed a site whose
            // media was flowing (it counted only ICE checks as life; it now counts every
            // accepted packet — tested in crates/sfu core scenarios,
            // `media_keeps_a_site_whose_consent_checks_are_lost_in_the_room`); the long
            // dead-peer timeout keeps a starved CI machine from removing it anyway.
            ("RAKOR_LIMITS_DEAD_PEER_TIMEOUT", "60s"),
        ],
    )
    .unwrap();
    let url = server.ws_url();
    let tok = |id: &str| mint_token(data.path(), "rec-loss", id, "participant").unwrap();
    let mut clean = Probe::start(
        Some(&srv),
        Path::new(PROBE),
        &url,
        &tok("clean-site"),
        "10.78.0.1",
        &["audio", "video"],
        "clean",
    )
    .unwrap();
    let t_clean = Instant::now();
    let mut weak = Probe::start(
        Some(&site),
        Path::new(PROBE),
        &url,
        &tok("weak-site"),
        "10.78.0.2",
        &["audio", "video"],
        "weak",
    )
    .unwrap();
    let t_weak = Instant::now();
    // The loss starts once both sites get each other's media (ICE and DTLS are done on a clean
    // link, so the recording's start is the same for both): what is measured is a recording
    // that goes on through 20 % loss, not a handshake slowed down by it.
    let weak_id = weak.participant_id.clone();
    let clean_id = clean.participant_id.clone();
    rakor_e2e::netns::wait_media(&mut clean, &weak_id, 1, Duration::from_secs(30));
    let t_weak_media = Instant::now();
    rakor_e2e::netns::wait_media(&mut weak, &clean_id, 1, Duration::from_secs(30));
    let t_clean_media = Instant::now();
    // 20 % of UDP lost each way on the weak site's link: arriving at the site, and arriving
    // at the server from the site.
    site.udp_loss(20).unwrap();
    srv.exec("nft", &["add", "table", "inet", "rkrec"]).unwrap();
    srv.exec(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            "rkrec",
            "in",
            "{ type filter hook input priority 0; }",
        ],
    )
    .unwrap();
    srv.exec(
        "nft",
        &[
            "add",
            "rule",
            "inet",
            "rkrec",
            "in",
            "ip",
            "saddr",
            "10.78.0.2",
            "meta",
            "l4proto",
            "udp",
            "numgen",
            "random",
            "mod",
            "100",
            "<",
            "20",
            "drop",
        ],
    )
    .unwrap();
    std::thread::sleep(CALL);
    let weak_report = weak.latest_report(Duration::from_secs(2)).ok();
    let gone: Vec<String> = weak
        .seen
        .iter()
        .filter_map(|(t, l)| match l {
            ProbeLine::Closed(why) => Some(format!("{t}: closed: {why}")),
            ProbeLine::Event(e) if e["type"] == "leave" => Some(format!("{t}: {e}")),
            _ => None,
        })
        .collect();
    assert!(
        gone.is_empty(),
        "the lossy site was removed during the call (not a recording problem): {gone:?}"
    );
    eprintln!(
        "weak site's last report: {}",
        serde_json::to_string(&weak_report).unwrap_or_default()
    );
    weak.proc.kill9();
    let weak_len = (
        t_weak_media.elapsed().as_secs_f64(),
        t_weak.elapsed().as_secs_f64(),
    );
    clean.proc.kill9();
    let clean_len = (
        t_clean_media.elapsed().as_secs_f64(),
        t_clean.elapsed().as_secs_f64(),
    );
    let root = data.path().join("recordings");
    let recs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .flat_map(|room| {
            std::fs::read_dir(room.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
        })
        .collect();
    assert_eq!(recs.len(), 1, "{recs:?}");
    let dir = &recs[0];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let m = rt.block_on(wait_file(
        dir,
        "manifest.json",
        Duration::from_secs(20),
        |v| v["state"] == "stopped",
    ));
    check_participants_within(dir, &m, 2, &|who| {
        if who == "weak-site" {
            weak_len
        } else {
            clean_len
        }
    });
    let _ = (weak.participant_id.clone(), server.http);
}

/// A counter from `/metrics`.
fn metric(server: &Server, name: &str) -> u64 {
    let (_, body) = rakor_e2e::http_get(server.http, "/metrics").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// The figures for docs/benchmarks.md (run by hand, `--ignored`; `RAKOR_REC_BENCH_SITES`,
/// default 20): one run, sites publishing audio and video; 10 s without recording, then 10 s
/// recording. Prints the media thread's CPU per forwarded packet in both windows and the
/// recorder thread's CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn bench_recording_cost() {
    let n: usize = std::env::var("RAKOR_REC_BENCH_SITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let server = Server::start().unwrap();
    let mut bots = Vec::new();
    for i in 0..n {
        let role = if i == 0 { "host" } else { "participant" };
        bots.push(join(&server, "bench", &format!("site-{i}"), role).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window = Duration::from_secs(10);
    let snap = |s: &Server| {
        (
            metric(s, "rakor_media_thread_cpu_microseconds_total"),
            metric(s, "rakor_rtp_packets_forwarded_total"),
            metric(s, "rakor_rtp_packets_received_total"),
            metric(s, "rakor_recorder_thread_cpu_microseconds_total"),
            metric(s, "rakor_recording_packets_total"),
            metric(s, "rakor_recording_packets_dropped_total"),
        )
    };
    let a0 = snap(&server);
    tokio::time::sleep(window).await;
    let a1 = snap(&server);
    send(&bots[0], RecordingAction::Start).await;
    wait_recording(&mut bots[0], true).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // the recorder's first second of measuring
    let b0 = snap(&server);
    tokio::time::sleep(window).await;
    let b1 = snap(&server);
    let per =
        |c0: u64, c1: u64, p0: u64, p1: u64| (c1 - c0) as f64 * 1000.0 / (p1 - p0).max(1) as f64;
    eprintln!(
        "MEASURED {n} sites: without recording: media thread {:.0} ns per forwarded packet ({} forwarded, {} received in {window:?}, media thread {:.1}% of a core)",
        per(a0.0, a1.0, a0.1, a1.1),
        a1.1 - a0.1,
        a1.2 - a0.2,
        (a1.0 - a0.0) as f64 / window.as_micros() as f64 * 100.0
    );
    eprintln!(
        "MEASURED {n} sites: recording: media thread {:.0} ns per forwarded packet ({} forwarded, {} received, {} handed to the recorder, {} dropped; media thread {:.1}% of a core); recorder thread {:.1}% of a core ({:.1} µs per packet)",
        per(b0.0, b1.0, b0.1, b1.1),
        b1.1 - b0.1,
        b1.2 - b0.2,
        b1.4 - b0.4,
        b1.5 - b0.5,
        (b1.0 - b0.0) as f64 / window.as_micros() as f64 * 100.0,
        (b1.3 - b0.3) as f64 / window.as_micros() as f64 * 100.0,
        (b1.3 - b0.3) as f64 / (b1.4 - b0.4).max(1) as f64,
    );
    for b in bots {
        b.leave().await;
    }
}
