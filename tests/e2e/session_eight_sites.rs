//! Issue 5's "done when", played as a new operator would: the Pemalang command room and the
//! eight sites of the seed (Dishub, Disdukcapil, Disperindag, Mall Yogya, SMP Negeri 4, Bapeda,
//! RSUD dr. Ashari, Bank Jateng). An operator created with `rakor operator add` logs in over the
//! HTTP API, adds the sites, schedules a rakor, fetches the invitation links (JSON and CSV); the
//! command room joins with its host link, the eight sites with theirs wait in the lobby until
//! the operator admits them; every site receives the command room's audio and video; one site
//! reconnects; everyone leaves; the attendance register (JSON and CSV) has one row per site with
//! the reconnect merged. Real binary, real SQLite file, real WebRTC clients on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{anyhow, bail, Result};
use rakor_client::{Client, ClientOptions, Report};
use rakor_e2e::session::{add_rakor, add_site, token_of, Api, Persistent, Resp};
use rakor_proto::{ParticipantId, TrackKind};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const MEDIA_WAIT: Duration = Duration::from_secs(20);

/// The command room and the eight points the Bupati called (seed: pemalang-command-room.txt).
const COMMAND_ROOM: (&str, &str) = ("Command Room Diskominfo Pemalang", "opd");
const SITES: [(&str, &str); 8] = [
    ("Dinas Perhubungan", "opd"),
    ("Dinas Kependudukan dan Catatan Sipil", "opd"),
    ("Dinas Perindustrian dan Perdagangan", "opd"),
    ("Mall Yogya Pemalang", "other"),
    ("SMP Negeri 4 Pemalang", "other"),
    ("Bapeda", "opd"),
    ("RSUD dr. Ashari", "other"),
    ("Bank Jateng", "other"),
];
/// The site that drops and comes back (index into `SITES`).
const RECONNECTING: usize = 7;

/// Blocking HTTP from inside the runtime without stalling the WebRTC tasks on this worker.
fn get(api: &Api, path: &str) -> Result<Resp> {
    tokio::task::block_in_place(|| api.get(path))
}
fn get_json(api: &Api, path: &str) -> Result<Value> {
    let r = get(api, path)?;
    if r.status != 200 {
        bail!("GET {path}: {} {}", r.status, r.body);
    }
    r.json()
}
fn expect(api: &Api, method: &str, path: &str, body: Value, want: u16) -> Result<Value> {
    tokio::task::block_in_place(|| api.expect(method, path, Some(body), want))
}

/// Poll `f` every 100 ms until it returns `Some`, at most `limit`.
async fn poll<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn opts(url: &str, token: &str) -> ClientOptions {
    let mut o = ClientOptions::new(url, token).receive_only();
    o.join_timeout = Duration::from_secs(30);
    o
}

/// The host's audio and video arrived: packets, a keyframe, exact payload bytes.
fn has_media_from(r: &Report, from: &ParticipantId, min_video: u64, min_audio: u64) -> bool {
    let v = r.received_track(from, TrackKind::Video);
    let a = r.received_track(from, TrackKind::Audio);
    v.is_some_and(|v| v.packets >= min_video && v.keyframes >= 1 && v.payload_matches >= min_video)
        && a.is_some_and(|a| a.packets >= min_audio && a.payload_matches >= min_audio)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_sites_lobby_media_reconnect_attendance() -> Result<()> {
    let started = Instant::now();
    // Operator from the real CLI, server on its own SQLite file, login over the API.
    let p = Persistent::new()?;
    let (server, api) = tokio::task::block_in_place(|| p.start_logged_in())?;
    let db = p.dir.path().join("rakor.sqlite3");
    assert!(db.exists(), "the SQLite file {} exists", db.display());
    let url = server.ws_url();

    // The directory: the command room and the eight sites.
    let host = tokio::task::block_in_place(|| add_site(&api, COMMAND_ROOM.0, COMMAND_ROOM.1))?;
    let mut ids = Vec::new();
    for (name, kind) in SITES {
        ids.push(tokio::task::block_in_place(|| add_site(&api, name, kind))?);
    }
    let name_of: BTreeMap<i64, &str> = ids.iter().copied().zip(SITES.iter().map(|s| s.0)).collect();
    let kind_of: BTreeMap<i64, &str> = ids.iter().copied().zip(SITES.iter().map(|s| s.1)).collect();
    let dir = get_json(&api, "/api/v1/sites")?;
    assert_eq!(dir.as_array().unwrap().len(), 9, "{dir}");

    // The rakor: starts in 3 minutes (WIB), one hour; links are valid from 30 min before.
    let v = tokio::task::block_in_place(|| {
        add_rakor(&api, "Rakor Penanganan COVID-19", host, &ids, 180, 60)
    })?;
    let id = v["id"].as_i64().unwrap();
    assert_eq!(
        v["state"], "open",
        "links open 30 min before the start: {v}"
    );
    assert!(v["start_wib"].as_str().unwrap().ends_with("+07:00"), "{v}");

    // Invitation links: the host first, then one per site.
    let links = get_json(&api, &format!("/api/v1/rakor/{id}/invitations"))?;
    let links = links.as_array().unwrap().clone();
    assert_eq!(links.len(), 9, "8 sites + host: {links:?}");
    assert_eq!(links[0]["site_id"], host);
    assert_eq!(links[0]["role"], "host");
    let mut token: BTreeMap<i64, String> = BTreeMap::new();
    for l in &links {
        let site = l["site_id"].as_i64().unwrap();
        let link = l["link"].as_str().unwrap();
        assert!(link.contains("/join?token="), "{l}");
        if site != host {
            assert_eq!(l["role"], "participant", "{l}");
            assert_eq!(l["site"], name_of[&site], "{l}");
            assert_eq!(l["kind"], kind_of[&site], "{l}");
        }
        assert!(
            token.insert(site, token_of(link)?).is_none(),
            "one link per site"
        );
    }
    assert_eq!(
        token.keys().copied().collect::<BTreeSet<_>>(),
        ids.iter().copied().chain([host]).collect::<BTreeSet<_>>()
    );

    // The CSV export: BOM, CRLF, a header and 9 rows (host + 8 sites), each with a link.
    let csv = get(&api, &format!("/api/v1/rakor/{id}/invitations.csv"))?;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv.body.starts_with('\u{feff}'), "BOM");
    let lines: Vec<&str> = csv
        .body
        .trim_start_matches('\u{feff}')
        .trim_end()
        .split("\r\n")
        .collect();
    assert_eq!(lines.len(), 10, "header + 9 rows: {}", csv.body);
    assert!(
        lines[0].starts_with("Lokasi,Jenis,Peran,Tautan"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!(
            "{},{},host,http://",
            COMMAND_ROOM.0, COMMAND_ROOM.1
        )),
        "{}",
        lines[1]
    );
    for (name, kind) in SITES {
        let row = lines
            .iter()
            .find(|l| l.starts_with(&format!("{name},")))
            .unwrap_or_else(|| panic!("no CSV row for {name}: {}", csv.body));
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[1], kind, "{row}");
        assert_eq!(cells[2], "participant", "{row}");
        assert!(
            cells[3].starts_with("http://") && cells[3].contains("/join?token="),
            "{row}"
        );
    }

    // The command room enters directly with its host link and publishes; the rakor goes live.
    let command = Client::connect(opts(&url, &token[&host]).publish(true, true)).await?;
    let host_pid = command.participant_id().clone();
    poll("rakor live", Duration::from_secs(10), || {
        Ok((get_json(&api, &format!("/api/v1/rakor/{id}"))?["state"] == "live").then_some(()))
    })
    .await?;

    // The eight sites join with their links: all wait in the lobby.
    let mut joins = Vec::new();
    for &site in &ids {
        let (u, t) = (url.clone(), token[&site].clone());
        joins.push((
            site,
            tokio::spawn(async move { Client::connect(opts(&u, &t)).await }),
        ));
    }
    let lobby = poll("8 sites in the lobby", Duration::from_secs(20), || {
        let live = get_json(&api, &format!("/api/v1/rakor/{id}/live"))?;
        let lobby = live["lobby"].as_array().cloned().unwrap_or_default();
        Ok((lobby.len() >= 8).then_some(lobby))
    })
    .await?;
    assert_eq!(lobby.len(), 8, "{lobby:?}");
    for e in &lobby {
        let site = e["site_id"].as_i64().unwrap();
        assert_eq!(e["identity"], format!("site-{site}"));
        assert_eq!(e["name"], name_of[&site]);
    }
    assert_eq!(
        lobby
            .iter()
            .map(|e| e["site_id"].as_i64().unwrap())
            .collect::<BTreeSet<_>>(),
        ids.iter().copied().collect::<BTreeSet<_>>()
    );
    assert!(
        joins.iter().all(|(_, j)| !j.is_finished()),
        "nobody in before admission"
    );

    // The operator admits them one by one.
    for e in &lobby {
        let entry = e["id"].as_u64().unwrap();
        expect(
            &api,
            "POST",
            &format!("/api/v1/rakor/{id}/lobby/{entry}/admit"),
            json!({}),
            200,
        )?;
    }
    let mut sites: BTreeMap<i64, Client> = BTreeMap::new();
    for (site, j) in joins {
        let c = j
            .await?
            .map_err(|e| anyhow!("{} could not join: {e}", name_of[&site]))?;
        assert_eq!(c.joined().identity, format!("site-{site}"));
        sites.insert(site, c);
    }
    let live = get_json(&api, &format!("/api/v1/rakor/{id}/live"))?;
    assert_eq!(live["lobby"].as_array().unwrap().len(), 0, "{live}");
    assert_eq!(live["participants"].as_array().unwrap().len(), 9, "{live}");

    // Every site receives the command room's audio and video, exact payloads.
    for (site, c) in &sites {
        let r = c
            .wait_media(|r| has_media_from(r, &host_pid, 30, 25), MEDIA_WAIT)
            .await
            .map_err(|e| anyhow!("{} did not receive the command room: {e}", name_of[site]))?;
        assert_eq!(
            r.total_mismatches(),
            0,
            "{}: {}",
            name_of[site],
            r.to_json()
        );
    }

    // One site drops and comes back: already admitted, so no lobby; media again.
    let again = ids[RECONNECTING];
    sites.remove(&again).unwrap().leave().await;
    poll("the site's leave is seen", Duration::from_secs(10), || {
        let live = get_json(&api, &format!("/api/v1/rakor/{id}/live"))?;
        Ok((live["participants"].as_array().unwrap().len() == 8).then_some(()))
    })
    .await?;
    let c = tokio::time::timeout(
        Duration::from_secs(15),
        Client::connect(opts(&url, &token[&again])),
    )
    .await
    .map_err(|_| anyhow!("the reconnect waited (lobby?)"))??;
    let r = c
        .wait_media(|r| has_media_from(r, &host_pid, 30, 25), MEDIA_WAIT)
        .await?;
    assert_eq!(r.total_mismatches(), 0);
    sites.insert(again, c);

    // Everyone leaves (the sites, then the command room).
    for (_, c) in std::mem::take(&mut sites) {
        c.leave().await;
    }
    command.leave().await;

    // The register: host + 8 site rows, all attended, the reconnect merged into one row.
    let reg = poll("every row closed", Duration::from_secs(10), || {
        let reg = get_json(&api, &format!("/api/v1/rakor/{id}/attendance"))?;
        let rows = reg["rows"].as_array().cloned().unwrap_or_default();
        Ok((rows.len() == 9 && rows.iter().all(|r| r["status"] == "attended")).then_some(reg))
    })
    .await?;
    let rows = reg["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 9, "{reg}");
    assert_eq!(rows[0]["site_id"], host, "host first: {reg}");
    assert_eq!(rows[0]["role"], "host");
    assert_eq!(rows[0]["site"], COMMAND_ROOM.0);
    assert_eq!(rows[0]["joins"], 1);
    assert_eq!(
        rows[1..]
            .iter()
            .map(|r| r["site_id"].as_i64().unwrap())
            .collect::<BTreeSet<_>>(),
        ids.iter().copied().collect::<BTreeSet<_>>(),
        "one row per site: {reg}"
    );
    for r in rows {
        let first = r["first_join_utc"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"));
        let last = r["last_leave_utc"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"));
        assert!(first <= last, "{r}");
        assert!(r["total_minutes"].as_i64().unwrap() >= 0, "{r}");
        assert!(r["total_seconds"].as_i64().unwrap() >= 0, "{r}");
        let site = r["site_id"].as_i64().unwrap();
        if site == host {
            continue;
        }
        assert_eq!(r["role"], "participant", "{r}");
        assert_eq!(r["site"], name_of[&site], "{r}");
        assert_eq!(r["kind"], kind_of[&site], "{r}");
        assert_eq!(r["identity"], format!("site-{site}"), "{r}");
        let (j, rc) = if site == again { (2, 1) } else { (1, 0) };
        assert_eq!(r["joins"], j, "{r}");
        assert_eq!(r["reconnects"], rc, "{r}");
    }

    // The CSV for Excel: BOM, CRLF, header + 9 rows; the reconnect counted in "Sambung ulang".
    let csv = get(&api, &format!("/api/v1/rakor/{id}/attendance.csv"))?;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv
        .header("content-disposition")
        .unwrap()
        .contains("daftar-hadir"));
    assert!(csv.body.starts_with('\u{feff}'), "BOM for Excel");
    let lines: Vec<&str> = csv
        .body
        .trim_start_matches('\u{feff}')
        .trim_end()
        .split("\r\n")
        .collect();
    assert_eq!(lines.len(), 10, "header + 9 rows: {}", csv.body);
    assert!(lines[0].contains("Sambung ulang"), "{}", lines[0]);
    for (i, line) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), 10, "{line}");
        assert_eq!(cells[0], (i + 1).to_string(), "{line}");
        assert!(
            !cells[5].is_empty() && !cells[6].is_empty(),
            "first join / last leave: {line}"
        );
        assert!(cells[7].parse::<i64>().unwrap() >= 0, "{line}");
        assert_eq!(cells[9], "hadir", "{line}");
        let want = if cells[1] == SITES[RECONNECTING].0 {
            "1"
        } else {
            "0"
        };
        assert_eq!(cells[8], want, "reconnects: {line}");
    }
    assert_eq!(lines[1].split(',').nth(4), Some("host"));
    for (name, kind) in SITES {
        let n = lines
            .iter()
            .filter(|l| l.split(',').nth(1) == Some(name))
            .count();
        assert_eq!(n, 1, "one CSV row for {name}: {}", csv.body);
        let l = lines
            .iter()
            .find(|l| l.split(',').nth(1) == Some(name))
            .unwrap();
        assert_eq!(l.split(',').nth(2), Some(kind), "{l}");
    }
    drop(server);
    eprintln!("{}\neight sites: {:?}", csv.body, started.elapsed());
    Ok(())
}
