//! The lobby, moderation and attendance through real signalling: the command room joins with
//! its host link, sites with their invitation links wait in the lobby until the operator admits
//! (or refuses) them over the API; a reconnect of an admitted site skips the lobby; moderation
//! reaches the sites; the attendance register merges the reconnect and survives `kill -9`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Result;
use rakor_client::{Client, ClientError, ClientOptions};
use rakor_e2e::session::{add_rakor, add_site, token_of, Api, Persistent};
use rakor_proto::{ErrorCode, LeaveReason, ServerMessage};
use serde_json::json;
use std::time::Duration;

async fn wait_lobby(api: &Api, id: i64, n: usize) -> Result<Vec<serde_json::Value>> {
    for _ in 0..100 {
        let live = api.get(&format!("/api/v1/rakor/{id}/live"))?.json()?;
        let lobby = live["lobby"].as_array().cloned().unwrap_or_default();
        if lobby.len() >= n {
            return Ok(lobby);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("lobby never had {n} entries")
}

fn opts(url: &str, token: &str) -> ClientOptions {
    let mut o = ClientOptions::new(url, token).receive_only();
    o.join_timeout = Duration::from_secs(30);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_admit_refuse_moderate_and_attendance() -> Result<()> {
    let p = Persistent::new()?;
    let (server, api) = tokio::task::block_in_place(|| p.start_logged_in())?;
    let host = add_site(&api, "Command Room", "other")?;
    let dishub = add_site(&api, "Dinas Perhubungan", "opd")?;
    let bank = add_site(&api, "Bank Jateng", "other")?;
    let absent = add_site(&api, "Puskesmas Taman", "puskesmas")?;
    let v = add_rakor(
        &api,
        "Rakor COVID-19",
        host,
        &[dishub, bank, absent],
        600,
        60,
    )?;
    let id = v["id"].as_i64().unwrap();
    let links = api
        .get(&format!("/api/v1/rakor/{id}/invitations"))?
        .json()?;
    let link = |site: i64| {
        token_of(
            links
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["site_id"] == site)
                .unwrap()["link"]
                .as_str()
                .unwrap(),
        )
    };
    let url = server.ws_url();

    // The command room enters directly with its host link; the rakor goes live.
    let mut command = Client::connect(opts(&url, &link(host)?)).await?;
    let mut state = String::new();
    for _ in 0..50 {
        state = api.get(&format!("/api/v1/rakor/{id}"))?.json()?["state"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if state == "live" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "live");

    // Dishub waits in the lobby until admitted.
    let t = link(dishub)?;
    let u = url.clone();
    let dishub_join = tokio::spawn(async move { Client::connect(opts(&u, &t)).await });
    let lobby = wait_lobby(&api, id, 1).await?;
    assert_eq!(lobby[0]["identity"], format!("site-{dishub}"));
    assert_eq!(lobby[0]["name"], "Dinas Perhubungan");
    assert!(!dishub_join.is_finished(), "still waiting");
    let entry = lobby[0]["id"].as_u64().unwrap();
    api.expect(
        "POST",
        &format!("/api/v1/rakor/{id}/lobby/{entry}/admit"),
        Some(json!({})),
        200,
    )?;
    let mut site = dishub_join.await??;
    assert_eq!(site.joined().identity, format!("site-{dishub}"));

    // The bank is refused.
    let t = link(bank)?;
    let u = url.clone();
    let bank_join = tokio::spawn(async move { Client::connect(opts(&u, &t)).await });
    wait_lobby(&api, id, 1).await?;
    api.expect(
        "POST",
        &format!("/api/v1/rakor/{id}/lobby/refuse-all"),
        Some(json!({})),
        200,
    )?;
    match bank_join.await? {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::Refused),
        other => panic!(
            "expected refused, got {:?}",
            other.map(|c| c.joined().clone())
        ),
    }
    assert_eq!(
        api.post(&format!("/api/v1/rakor/{id}/lobby/99/admit"), json!({}))?
            .status,
        404
    );

    // Moderation: mute reaches the site, spotlight reaches everyone.
    let pid = site.participant_id().to_string();
    api.expect(
        "POST",
        &format!("/api/v1/rakor/{id}/participants/{pid}/mute"),
        Some(json!({"muted": true})),
        204,
    )?;
    site.wait_for(
        |m| matches!(m, ServerMessage::ModeratorMute { muted: true }),
        Duration::from_secs(5),
    )
    .await?;
    let live = api.get(&format!("/api/v1/rakor/{id}/live"))?.json()?;
    let me = live["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["participant_id"] == pid.as_str())
        .unwrap()
        .clone();
    assert_eq!(me["audio_muted"], true);
    assert_eq!(me["site_id"], dishub);
    api.expect(
        "POST",
        &format!("/api/v1/rakor/{id}/spotlight"),
        Some(json!({"participant_id": pid})),
        204,
    )?;
    command
        .wait_for(
            |m| matches!(m, ServerMessage::Spotlight { participant_id: Some(p), .. } if p.0 == pid),
            Duration::from_secs(5),
        )
        .await?;
    assert_eq!(
        api.post(
            &format!("/api/v1/rakor/{id}/participants/PA_nobody/mute"),
            json!({"muted": true})
        )?
        .status,
        404
    );

    // The site drops and comes back: no lobby the second time (already admitted).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    site.leave().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut site = Client::connect(opts(&url, &link(dishub)?)).await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Removing the site: it is told, and it would have to wait in the lobby again.
    let pid2 = site.participant_id().to_string();
    api.expect(
        "POST",
        &format!("/api/v1/rakor/{id}/participants/{pid2}/remove"),
        Some(json!({})),
        204,
    )?;
    assert_eq!(
        site.closed(Duration::from_secs(5)).await?,
        Some(LeaveReason::Removed)
    );
    let t = link(dishub)?;
    let u = url.clone();
    let again = tokio::spawn(async move { Client::connect(opts(&u, &t)).await });
    wait_lobby(&api, id, 1).await?;
    api.expect(
        "POST",
        &format!("/api/v1/rakor/{id}/lobby/admit-all"),
        Some(json!({})),
        200,
    )?;
    let site = again.await??;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // End for everyone.
    api.expect(
        "POST",
        &format!("/api/v1/rakor/{id}/end"),
        Some(json!({})),
        200,
    )?;
    assert_eq!(
        command.closed(Duration::from_secs(5)).await?,
        Some(LeaveReason::RoomEnded)
    );
    drop(site);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The register: the host, Dishub (3 joins merged: 2 reconnects), the bank never joined
    // (refused), the puskesmas absent.
    let reg = api.get(&format!("/api/v1/rakor/{id}/attendance"))?.json()?;
    let rows = reg["rows"].as_array().unwrap();
    let row = |site: i64| rows.iter().find(|r| r["site_id"] == site).unwrap().clone();
    let d = row(dishub);
    assert_eq!(d["joins"], 3, "{d}");
    assert_eq!(d["reconnects"], 2);
    assert_eq!(d["status"], "attended");
    assert!(d["total_seconds"].as_i64().unwrap() >= 2, "{d}");
    assert!(d["first_join_utc"].as_str().is_some() && d["last_leave_utc"].as_str().is_some());
    assert_eq!(row(host)["role"], "host");
    assert_eq!(row(host)["status"], "attended");
    assert_eq!(row(bank)["status"], "absent");
    assert_eq!(row(absent)["status"], "absent");
    let csv = api.get(&format!("/api/v1/rakor/{id}/attendance.csv"))?;
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv
        .header("content-disposition")
        .unwrap()
        .contains("daftar-hadir"));
    assert!(csv.body.starts_with('\u{feff}'), "BOM for Excel");
    let line = csv
        .body
        .split("\r\n")
        .find(|l| l.contains("Dinas Perhubungan"))
        .unwrap()
        .to_owned();
    let cells: Vec<&str> = line.split(',').collect();
    assert_eq!(cells[2], "opd");
    assert_eq!(cells[4], "participant");
    assert_eq!(cells[8], "2", "reconnects: {line}");
    assert_eq!(cells[9], "hadir");

    // kill -9 keeps the register.
    let mut server = server;
    tokio::task::block_in_place(|| server.signal_and_wait(libc::SIGKILL, Duration::from_secs(5)))?;
    let server = tokio::task::block_in_place(|| p.start())?;
    let mut api2 = Api::new(server.http);
    api2.auth = api.auth.clone();
    let csv2 = api2.get(&format!("/api/v1/rakor/{id}/attendance.csv"))?;
    assert_eq!(csv2.body, csv.body);
    assert_eq!(
        api2.get(&format!("/api/v1/rakor/{id}"))?.json()?["state"],
        "ended"
    );
    Ok(())
}
