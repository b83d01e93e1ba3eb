//! The session manager's HTTP API against the real `rakor` binary and a real SQLite file:
//! authentication on every route, bad input stores nothing, WIB ⇄ UTC, invitation links and
//! their validity window, restart and `kill -9` keep every record.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Result;
use rakor_e2e::session::{
    add_rakor, add_site, jwt_payload, token_of, wib_in, Api, Persistent, PASSWORD,
};
use rakor_e2e::{raw_next_json, raw_ws, sign_claims, unix_now};
use serde_json::json;
use std::time::Duration;

fn drain(server: &rakor_e2e::Server) -> String {
    let mut out = String::new();
    while let Ok(l) = server.output.try_recv() {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[test]
fn fresh_server_explains_first_operator_and_every_route_needs_login() -> Result<()> {
    let p = Persistent::new()?;
    let server = p.start()?;
    std::thread::sleep(Duration::from_millis(300));
    let banner = drain(&server);
    assert!(
        banner.contains("operator add") && banner.contains("--username"),
        "{banner}"
    );

    let anon = Api::new(server.http);
    let doc = anon.get("/api/openapi.json")?.json()?;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{}", paths.len());
    let mut checked = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            if path == "/api/v1/auth/login" {
                continue;
            }
            let concrete = path
                .replace("{id}", "1")
                .replace("{entry}", "1")
                .replace("{pid}", "PA_x");
            for auth in [
                None,
                Some(("Cookie", "rakor_session=forged")),
                Some(("Authorization", "Bearer rk_forged")),
            ] {
                let mut api = Api::new(server.http);
                api.auth = auth.map(|(k, v)| (k.to_owned(), v.to_owned()));
                let body = (method != "get" && method != "delete").then(|| json!({}));
                let r = api.call(&method.to_uppercase(), &concrete, body.as_ref())?;
                assert_eq!(
                    r.status, 401,
                    "{method} {concrete} with {auth:?}: {}",
                    r.body
                );
                assert_eq!(r.error_code(), "unauthorized");
                checked += 1;
            }
        }
    }
    assert!(checked >= 60, "{checked}");
    // The console page itself is public; its data is not.
    let (status, body) = rakor_e2e::http_get(server.http, "/console")?;
    assert_eq!(status, 200);
    assert!(body.contains("/static/js/console/main.js"));
    Ok(())
}

#[test]
fn login_cookie_rate_limit_and_no_secrets_in_logs() -> Result<()> {
    let p = Persistent::with_extra("login_max_failures = 3")?;
    let out = p.add_operator("operator", PASSWORD)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dup = p.add_operator("operator", PASSWORD)?;
    assert_eq!(dup.status.code(), Some(2), "duplicate operator");
    let short = p.add_operator("other", "short")?;
    assert_eq!(short.status.code(), Some(2), "short password");
    let server = p.start()?;
    let mut api = Api::new(server.http);
    let r = api.login("operator", PASSWORD)?;
    let cookie = r.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert_eq!(
        api.get("/api/v1/auth/me")?.json()?["operator"]["username"],
        "operator"
    );

    // API token for scripts.
    let t = api.expect(
        "POST",
        "/api/v1/tokens",
        Some(json!({"label": "backup"})),
        201,
    )?;
    let secret = t["token"].as_str().unwrap().to_owned();
    let mut script = Api::new(server.http);
    script.auth = Some(("Authorization".into(), format!("Bearer {secret}")));
    assert_eq!(script.get("/api/v1/sites")?.status, 200);

    // Wrong passwords: 401, then 429 (even with the right one).
    let anon = Api::new(server.http);
    for _ in 0..3 {
        let r = anon.post(
            "/api/v1/auth/login",
            json!({"username": "operator", "password": "salah-sekali"}),
        )?;
        assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    }
    let r = anon.post(
        "/api/v1/auth/login",
        json!({"username": "operator", "password": PASSWORD}),
    )?;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "rate_limited"),
        "{}",
        r.body
    );
    assert!(r.header("retry-after").is_some());

    // Logout ends the login.
    assert_eq!(
        api.call("POST", "/api/v1/auth/logout", Some(&json!({})))?
            .status,
        204
    );
    assert_eq!(api.get("/api/v1/auth/me")?.status, 401);

    std::thread::sleep(Duration::from_millis(200));
    let logs = drain(&server);
    for secret_text in [PASSWORD, "salah-sekali", secret.as_str(), "0811-3373-119"] {
        assert!(
            !logs.contains(secret_text),
            "{secret_text} leaked into the log:\n{logs}"
        );
    }
    Ok(())
}

#[test]
fn bad_input_is_refused_and_stores_nothing() -> Result<()> {
    let p = Persistent::new()?;
    let (server, api) = p.start_logged_in()?;
    let host = add_site(&api, "Command Room Diskominfo", "other")?;
    let dishub = add_site(&api, "Dinas Perhubungan", "opd")?;

    let long = "x".repeat(121);
    let site_cases: Vec<(String, &str, u16, &str)> = vec![
        (
            json!({"name": "", "kind": "opd"}).to_string(),
            "application/json",
            400,
            "invalid_input",
        ),
        (
            json!({"name": long, "kind": "opd"}).to_string(),
            "application/json",
            400,
            "invalid_input",
        ),
        (
            json!({"name": "Bank", "kind": "bank"}).to_string(),
            "application/json",
            400,
            "invalid_input",
        ),
        (
            json!({"name": "Bank", "kind": "other", "phone": "call me"}).to_string(),
            "application/json",
            400,
            "invalid_input",
        ),
        (
            json!({"name": "Bank", "kind": "other", "colour": "red"}).to_string(),
            "application/json",
            400,
            "invalid_input",
        ),
        (
            json!({"name": " dinas  PERHUBUNGAN ", "kind": "opd"}).to_string(),
            "application/json",
            409,
            "conflict",
        ),
        (
            "{\"name\": \"Bank\", ".to_owned(),
            "application/json",
            400,
            "malformed_json",
        ),
        (
            json!({"name": "Bank", "kind": "other"}).to_string(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
    ];
    for (body, ct, status, code) in &site_cases {
        let r = api.raw("POST", "/api/v1/sites", Some((ct, body.as_bytes())))?;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (*status, *code),
            "{body}: {}",
            r.body
        );
        assert!(!r.json()?["error"]["message"]
            .as_str()
            .unwrap_or("")
            .is_empty());
    }
    // CSV import: one bad line stores none of the file.
    let csv = "nama;jenis\nKecamatan Taman;kecamatan\nPuskesmas X;klinik\n";
    let r = api.raw(
        "POST",
        "/api/v1/sites/import",
        Some(("text/csv", csv.as_bytes())),
    )?;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("line 3"), "{}", r.body);
    assert_eq!(
        api.get("/api/v1/sites")?.json()?.as_array().unwrap().len(),
        2
    );
    // ... and a good file is imported whole.
    let csv = "\u{feff}nama;jenis;kontak;telepon\nKecamatan Taman;kecamatan;Pak Camat;0812\nPuskesmas Taman;puskesmas;;\n";
    let r = api.raw(
        "POST",
        "/api/v1/sites/import",
        Some(("text/csv", csv.as_bytes())),
    )?;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        api.get("/api/v1/sites")?.json()?.as_array().unwrap().len(),
        4
    );
    assert_eq!(api.get("/api/v1/sites/99999")?.status, 404);
    assert_eq!(api.get("/api/v1/sites/abc")?.status, 404);

    let rk = |start: &str, end: &str, host: i64, invited: serde_json::Value| json!({"title": "Rakor", "start": start, "end": end, "host_site_id": host, "invited_site_ids": invited});
    let (s, e) = (wib_in(86_400), wib_in(90_000));
    let rakor_cases = vec![
        (rk(&e, &s, host, json!([dishub])), 400, "end"),
        (rk(&s, &s, host, json!([dishub])), 400, "end"),
        (
            rk("2030-02-30T09:00", &e, host, json!([dishub])),
            400,
            "start",
        ),
        (rk("besok pagi", &e, host, json!([dishub])), 400, "start"),
        (
            rk(&wib_in(-7200), &wib_in(-3600), host, json!([dishub])),
            400,
            "start",
        ),
        (rk(&s, &e, 4242, json!([dishub])), 400, "host_site_id"),
        (
            rk(&s, &e, host, json!([dishub, 4242])),
            400,
            "invited_site_ids",
        ),
        (
            json!({"title": "x".repeat(121), "start": s, "end": e, "host_site_id": host}),
            400,
            "title",
        ),
        (
            json!({"title": "Rakor", "start": s, "end": e, "host_site_id": host, "agenda": "a".repeat(4001)}),
            400,
            "agenda",
        ),
        (
            json!({"title": "Rakor", "start": s, "end": e, "host_site_id": "one"}),
            400,
            "",
        ),
        (
            json!({"title": "Rakor", "start": s, "end": e, "host_site_id": host, "node": "node a"}),
            400,
            "node",
        ),
    ];
    for (body, status, field) in &rakor_cases {
        let r = api.post("/api/v1/rakor", body.clone())?;
        assert_eq!(r.status, *status, "{body}: {}", r.body);
        if !field.is_empty() {
            assert_eq!(r.json()?["error"]["field"], *field, "{body}: {}", r.body);
        }
    }
    let r = api.raw(
        "POST",
        "/api/v1/rakor",
        Some(("application/json", b"{not json")),
    )?;
    assert_eq!((r.status, r.error_code().as_str()), (400, "malformed_json"));
    assert!(
        api.get("/api/v1/rakor")?
            .json()?
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing stored"
    );

    // Overlapping use of the same room name.
    let mut first = rk(&s, &e, host, json!([dishub]));
    first["room"] = json!("ruang-rakor");
    api.expect("POST", "/api/v1/rakor", Some(first.clone()), 201)?;
    let r = api.post("/api/v1/rakor", first)?;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "conflict"),
        "{}",
        r.body
    );
    assert_eq!(
        api.get("/api/v1/rakor")?.json()?.as_array().unwrap().len(),
        1
    );
    assert_eq!(api.get("/api/v1/rakor/777")?.status, 404);
    assert_eq!(api.get("/api/v1/rakor/777/attendance")?.status, 404);
    let r = api.post("/api/v1/rakor/777/end", json!({}))?;
    assert_eq!(r.status, 404);
    drop(server);
    Ok(())
}

#[test]
fn wib_times_and_the_invitation_window() -> Result<()> {
    let p = Persistent::new()?;
    let (server, api) = p.start_logged_in()?;
    let host = add_site(&api, "Command Room", "other")?;
    let dishub = add_site(&api, "Dishub", "opd")?;
    let dinkes = add_site(&api, "Dinkes", "opd")?;

    // 09:00 WIB is 02:00 UTC.
    let year = 2035;
    let v = api.expect("POST", "/api/v1/rakor", Some(json!({
        "title": "Rakor pagi", "start": format!("{year}-05-01T09:00"), "end": format!("{year}-05-01T11:00"),
        "host_site_id": host, "invited_site_ids": [dishub]})), 201)?;
    assert_eq!(v["start_utc"], format!("{year}-05-01T02:00:00Z"));
    assert_eq!(v["end_utc"], format!("{year}-05-01T04:00:00Z"));
    assert_eq!(v["start_wib"], format!("{year}-05-01T09:00:00+07:00"));
    assert_eq!(v["links_valid_from_utc"], format!("{year}-05-01T01:30:00Z"));
    assert_eq!(v["state"], "scheduled");
    assert_eq!(v["node"], "", "not pinned by default");
    let id = v["id"].as_i64().unwrap();
    // Pinned to a region of a cluster (stored; a single node ignores it), then deleted again.
    let pinned = api.expect("POST", "/api/v1/rakor", Some(json!({
        "title": "Rakor provinsi", "start": format!("{year}-06-01T09:00"), "end": format!("{year}-06-01T11:00"),
        "host_site_id": host, "invited_site_ids": [dishub], "node": "kab-semarang"})), 201)?;
    let pinned_id = pinned["id"].as_i64().unwrap();
    assert_eq!(pinned["node"], "kab-semarang");
    assert_eq!(
        api.get(&format!("/api/v1/rakor/{pinned_id}"))?.json()?["node"],
        "kab-semarang"
    );
    assert_eq!(
        api.call("DELETE", &format!("/api/v1/rakor/{pinned_id}"), None)?
            .status,
        204
    );

    // One link per invited site plus the host's; valid from 30 min before the start to the end.
    let links = api
        .get(&format!("/api/v1/rakor/{id}/invitations"))?
        .json()?;
    let links = links.as_array().unwrap();
    assert_eq!(links.len(), 2);
    assert_eq!(links[0]["role"], "host");
    let site_link = links.iter().find(|l| l["site_id"] == dishub).unwrap();
    let claims = jwt_payload(&token_of(site_link["link"].as_str().unwrap())?)?;
    let start = v["start_utc"].as_str().unwrap();
    assert_eq!(start, format!("{year}-05-01T02:00:00Z"));
    let start_unix = 2_061_597_600_i64; // 2035-05-01T02:00:00Z
    assert_eq!(claims["nbf"], start_unix - 1800);
    assert_eq!(claims["exp"], start_unix + 7200);
    assert_eq!(claims["lobby"], true);
    assert_eq!(claims["sid"], id.to_string());
    assert_eq!(claims["sub"], format!("site-{dishub}"));
    let host_claims = jwt_payload(&token_of(links[0]["link"].as_str().unwrap())?)?;
    assert!(host_claims.get("lobby").is_none() && host_claims["role"] == "host");
    // The CSV export: BOM, header, one row per link.
    let csv = api.get(&format!("/api/v1/rakor/{id}/invitations.csv"))?;
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv.body.starts_with('\u{feff}'));
    assert_eq!(csv.body.trim_end().lines().count(), 3);
    assert!(
        csv.body.contains("Dishub,opd,participant,http://"),
        "{}",
        csv.body
    );

    let rt = tokio::runtime::Runtime::new()?;
    let ws = server.ws_url();
    let join = |token: String| {
        let ws = ws.clone();
        rt.block_on(async move {
            let mut s = raw_ws(&ws).await?;
            use futures_util::SinkExt;
            s.send(tokio_tungstenite::tungstenite::Message::text(
                json!({"type": "join", "version": 1, "token": token}).to_string(),
            ))
            .await?;
            raw_next_json(&mut s, Duration::from_secs(5)).await
        })
    };
    // Too early: the link opens 30 minutes before the start.
    let m = join(token_of(site_link["link"].as_str().unwrap())?)?.unwrap();
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str()),
        (Some("error"), Some("not_yet_valid")),
        "{m}"
    );

    // A rakor starting in 20 minutes: links are valid now; a site waits in the lobby.
    let soon = add_rakor(&api, "Rakor siang", host, &[dishub], 1200, 60)?;
    let sid = soon["id"].as_i64().unwrap();
    assert_eq!(soon["state"], "open");
    let links = api
        .get(&format!("/api/v1/rakor/{sid}/invitations"))?
        .json()?;
    let dishub_token = token_of(links[1]["link"].as_str().unwrap())?;
    let m = join(dishub_token.clone())?.unwrap();
    assert_eq!(m, json!({"type": "lobby", "status": "waiting"}));
    // Expired (forged with the real key, exp in the past): token_expired.
    let now = unix_now();
    let mut expired = jwt_payload(&dishub_token)?;
    expired["iat"] = json!(now - 7200);
    expired["nbf"] = json!(now - 7200);
    expired["exp"] = json!(now - 60);
    let m = join(sign_claims(&p.key, &expired)?)?.unwrap();
    assert_eq!(m["code"], "token_expired", "{m}");
    // A link of another rakor (sid of the first, room of the second): not_invited.
    let mut other = jwt_payload(&dishub_token)?;
    other["sid"] = json!(id.to_string());
    let m = join(sign_claims(&p.key, &other)?)?.unwrap();
    assert_eq!(m["code"], "not_invited", "{m}");
    // An uninvited site with a well-signed token for this rakor: not_invited.
    let mut uninvited = jwt_payload(&dishub_token)?;
    uninvited["sub"] = json!(format!("site-{dinkes}"));
    let m = join(sign_claims(&p.key, &uninvited)?)?.unwrap();
    assert_eq!(m["code"], "not_invited", "{m}");
    // After the operator ends it: session_ended, and no links any more.
    api.expect(
        "POST",
        &format!("/api/v1/rakor/{sid}/end"),
        Some(json!({})),
        200,
    )?;
    let m = join(dishub_token)?.unwrap();
    assert_eq!(m["code"], "session_ended", "{m}");
    assert_eq!(
        api.get(&format!("/api/v1/rakor/{sid}/invitations"))?.status,
        409
    );
    // Plain `rakor token` tokens still join directly (no lobby).
    let plain = sign_claims(
        &p.key,
        &json!({"sub": "command-room", "room": "rakor-demo", "name": "Command Room",
        "role": "host", "iat": now, "exp": now + 600, "iss": "rakor"}),
    )?;
    let m = join(plain)?.unwrap();
    assert_eq!(m["type"], "joined", "{m}");
    Ok(())
}

#[test]
fn restart_and_kill_9_keep_every_record() -> Result<()> {
    let p = Persistent::new()?;
    let (mut server, api) = p.start_logged_in()?;
    let host = add_site(&api, "Command Room", "other")?;
    let mut invited = Vec::new();
    for name in [
        "Dishub",
        "Disdukcapil",
        "Disperindag",
        "Mall Yogya",
        "SMP Negeri 4",
        "Bapeda",
        "RSUD dr. Ashari",
        "Bank Jateng",
    ] {
        invited.push(add_site(&api, name, "opd")?);
    }
    let v = add_rakor(&api, "Rakor COVID-19", host, &invited, 3600, 90)?;
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
    let sites_before = api.get("/api/v1/sites")?.body;
    let rakor_before = api.get(&format!("/api/v1/rakor/{id}"))?.json()?;

    // Graceful restart.
    server.signal_and_wait(libc::SIGTERM, Duration::from_secs(10))?;
    let server = p.start()?;
    let mut api2 = Api::new(server.http);
    api2.auth = api.auth.clone();
    assert_eq!(
        api2.get("/api/v1/sites")?.body,
        sites_before,
        "login cookie and sites survive"
    );
    // A change right before kill -9.
    api2.call(
        "PATCH",
        &format!("/api/v1/sites/{}", invited[3]),
        Some(&json!({"active": false})),
    )?;
    let mut server = server;
    server.signal_and_wait(libc::SIGKILL, Duration::from_secs(5))?;
    let server = p.start()?;
    let mut script = Api::new(server.http);
    script.auth = Some(("Authorization".into(), format!("Bearer {token}")));
    let sites = script.get("/api/v1/sites")?.json()?;
    assert_eq!(sites.as_array().unwrap().len(), 9);
    let mall = sites
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == invited[3])
        .unwrap();
    assert_eq!(
        mall["active"], false,
        "the last change before kill -9 is kept"
    );
    let rakor_after = script.get(&format!("/api/v1/rakor/{id}"))?.json()?;
    assert_eq!(rakor_after, rakor_before);
    Ok(())
}
