//! The real `rakor` binary with its session storage on a real PostgreSQL (`storage.database_url`):
//! `rakor operator add`, the operator API, a join recorded in the attendance register, and every
//! record surviving a `kill -9` and a restart. Needs `RAKOR_TEST_POSTGRES_URL` (tests/run.sh
//! starts a throw-away server and sets it); without it the test says so and does nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Result;
use rakor_e2e::session::{
    add_rakor, add_site, fresh_postgres_database, psql, test_postgres_url, token_of, Api,
    Persistent, PASSWORD,
};
use rakor_e2e::{raw_next_json, raw_ws};
use serde_json::json;
use std::time::Duration;

#[test]
fn operator_api_join_and_kill_9_on_postgres() -> Result<()> {
    let Some(server_url) = test_postgres_url() else {
        eprintln!("RAKOR_TEST_POSTGRES_URL not set: PostgreSQL e2e test skipped");
        return Ok(());
    };
    let db = fresh_postgres_database(&server_url)?;
    // A password in the URL (the test server trusts loopback, so any password works): it must
    // never be printed.
    let with_password = db.replacen("://rakor@", "://rakor:pg-secret-7c1d@", 1);
    assert_ne!(with_password, db, "{db}");
    let p = Persistent::on_postgres(&with_password)?;
    let out = p.add_operator("operator", PASSWORD)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("in postgres://rakor@127.0.0.1"), "{stdout}");
    assert!(!stdout.contains("pg-secret-7c1d"), "{stdout}");
    let mut server = p.start()?;
    let mut api = Api::new(server.http);
    api.login("operator", PASSWORD)?;
    // Nothing went to SQLite.
    assert!(!p.dir.path().join("rakor.sqlite3").exists());
    assert_eq!(psql(&db, "SELECT username FROM operators")?, "operator");

    let host = add_site(&api, "Command Room", "other")?;
    let dinkes = add_site(&api, "Dinkes", "opd")?;
    let v = add_rakor(&api, "Rakor banjir", host, &[dinkes], 600, 60)?;
    let id = v["id"].as_i64().unwrap();
    let token = api.expect(
        "POST",
        "/api/v1/tokens",
        Some(json!({"label": "script"})),
        201,
    )?["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let links = api
        .get(&format!("/api/v1/rakor/{id}/invitations"))?
        .json()?;
    let host_link = links[0]["link"].as_str().unwrap();
    assert_eq!(links[0]["role"], "host");

    // The host joins (no lobby for the host); the join is in PostgreSQL.
    let rt = tokio::runtime::Runtime::new()?;
    let ws_url = server.ws_url();
    let host_token = token_of(host_link)?;
    let ws = rt.block_on(async {
        use futures_util::SinkExt;
        let mut s = raw_ws(&ws_url).await?;
        s.send(tokio_tungstenite::tungstenite::Message::text(
            json!({"type": "join", "version": 1, "token": host_token}).to_string(),
        ))
        .await?;
        let m = raw_next_json(&mut s, Duration::from_secs(5)).await?;
        anyhow::Ok((s, m))
    })?;
    let (ws, joined) = ws;
    let joined = joined.unwrap();
    assert_eq!(joined["type"], "joined", "{joined}");
    // Attendance is written by the event queue a moment after `joined`: poll (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reg = api.get(&format!("/api/v1/rakor/{id}/attendance"))?.json()?;
        if reg["rows"][0]["status"] == "present" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "join not recorded: {reg}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        psql(
            &db,
            &format!("SELECT kind FROM attendance_events WHERE rakor_id = {id}")
        )?,
        "join"
    );
    // A change right before kill -9.
    let log: Vec<String> = std::iter::from_fn(|| server.output.try_recv().ok()).collect();
    assert!(
        !log.iter().any(|l| l.contains("pg-secret-7c1d")),
        "{log:#?}"
    );
    api.call(
        "PATCH",
        &format!("/api/v1/sites/{dinkes}"),
        Some(&json!({"active": false})),
    )?;
    let sites_before = api.get("/api/v1/sites")?.body;
    let rakor_before = api.get(&format!("/api/v1/rakor/{id}"))?.json()?;
    server.signal_and_wait(libc::SIGKILL, Duration::from_secs(5))?;
    drop(ws);

    let server = p.start()?;
    let mut script = Api::new(server.http);
    script.auth = Some(("Authorization".into(), format!("Bearer {token}")));
    assert_eq!(script.get("/api/v1/sites")?.body, sites_before);
    let rakor_after = script.get(&format!("/api/v1/rakor/{id}"))?.json()?;
    assert_eq!(rakor_after, rakor_before);
    // The login cookie of before still works (logins are stored).
    let mut again = Api::new(server.http);
    again.auth = api.auth.clone();
    assert_eq!(again.get("/api/v1/sites")?.status, 200);
    // The host's join is closed by the restart, not left present for ever.
    let reg = script
        .get(&format!("/api/v1/rakor/{id}/attendance"))?
        .json()?;
    assert_eq!(reg["rows"][0]["status"], "attended", "{reg}");
    assert_eq!(
        psql(
            &db,
            &format!(
                "SELECT reason FROM attendance_events WHERE rakor_id = {id} AND kind = 'leave'"
            )
        )?,
        "server_restart"
    );
    Ok(())
}
