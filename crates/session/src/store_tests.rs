//! Every [`Store`] method, on every back end ([`TestDb::all`]: SQLite, and PostgreSQL when
//! `RAKOR_TEST_POSTGRES_URL` is set): the same calls give the same answers, and what was
//! committed is there after the store is opened again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::access::{AuditEntry, InvitationLink};
use crate::model::{
    AttendanceEvent, AttendanceKind, Personal, RakorDraft, RakorState, SiteInput, SiteKind,
};
use crate::record::{ChatRecord, TimelineRecord};
use crate::test_db::TestDb;
use crate::SessionError;

fn site(name: &str) -> SiteInput {
    SiteInput {
        name: name.into(),
        kind: SiteKind::Opd,
        contact_person: Personal("Bu Sri".into()),
        phone: Personal("0812".into()),
        active: None,
    }
}

fn draft(host: i64, invited: Vec<i64>, room: Option<&str>, start_at: i64) -> RakorDraft {
    RakorDraft {
        title: "Rakor banjir".into(),
        agenda: "1. laporan".into(),
        room: room.map(str::to_owned),
        start_at,
        end_at: start_at + 3600,
        host_site_id: host,
        invited,
        node: String::new(),
    }
}

fn event(participant: &str, kind: AttendanceKind, at_ms: i64) -> AttendanceEvent {
    AttendanceEvent {
        identity: "site-1".into(),
        name: Personal("Dinkes".into()),
        role: "participant".into(),
        participant: participant.into(),
        kind,
        reason: None,
        at_ms,
    }
}

#[tokio::test]
async fn operators_logins_and_api_tokens() {
    for db in TestDb::all() {
        let s = db.store().await;
        let name = db.name();
        assert_eq!(s.operator_count().await.unwrap(), 0, "{name}");
        let a = s.add_operator("admin", "hash-a").await.unwrap();
        let b = s.add_operator("Budi", "hash-b").await.unwrap();
        assert_ne!(a.id, b.id);
        assert!(
            matches!(
                s.add_operator("admin", "x").await,
                Err(SessionError::Conflict(_))
            ),
            "{name}"
        );
        assert_eq!(s.operator_count().await.unwrap(), 2);
        assert!(s.set_password("admin", "hash-a2").await.unwrap());
        assert!(!s.set_password("nobody", "x").await.unwrap());
        let (op, hash, disabled) = s.operator_record("admin").await.unwrap().unwrap();
        assert_eq!((op.id, hash.as_str(), disabled), (a.id, "hash-a2", false));
        assert!(s.operator_record("nobody").await.unwrap().is_none());
        // Byte order, as SQLite sorts: upper case first.
        let names: Vec<String> = s
            .list_operators()
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.username)
            .collect();
        assert_eq!(names, ["Budi", "admin"], "{name}");

        let now = crate::wib::now();
        s.create_login("login-1", a.id, now + 60).await.unwrap();
        s.create_login("login-old", a.id, now - 1).await.unwrap();
        assert_eq!(
            s.login_operator("login-1", now).await.unwrap().unwrap().id,
            a.id
        );
        assert!(s.login_operator("login-old", now).await.unwrap().is_none());
        let t1 = s.create_api_token(a.id, "ci", "tok-1").await.unwrap();
        let t2 = s.create_api_token(a.id, "cron", "tok-2").await.unwrap();
        assert!(t2.id > t1.id);
        assert_eq!(
            s.api_token_operator("tok-1").await.unwrap().unwrap().id,
            a.id
        );
        let labels: Vec<String> = s
            .list_api_tokens(a.id)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.label)
            .collect();
        assert_eq!(labels, ["ci", "cron"]);
        assert!(s.revoke_api_token(a.id, t1.id).await.unwrap());
        assert!(!s.revoke_api_token(a.id, t1.id).await.unwrap());
        assert!(!s.revoke_api_token(b.id, t2.id).await.unwrap(), "not b's");
        assert!(s.api_token_operator("tok-1").await.unwrap().is_none());

        // Disabled: logins and tokens stop working; enabled again, they work.
        assert!(s.set_operator_disabled(a.id, true).await.unwrap());
        assert!(s.login_operator("login-1", now).await.unwrap().is_none());
        assert!(s.api_token_operator("tok-2").await.unwrap().is_none());
        assert!(s.set_operator_disabled(a.id, false).await.unwrap());
        assert!(s.api_token_operator("tok-2").await.unwrap().is_some());
        s.end_operator_sessions(a.id).await.unwrap();
        assert!(s.login_operator("login-1", now).await.unwrap().is_none());
        assert!(s.api_token_operator("tok-2").await.unwrap().is_none());
        s.create_login("login-2", a.id, now + 60).await.unwrap();
        s.delete_login("login-2").await.unwrap();
        assert!(s.login_operator("login-2", now).await.unwrap().is_none());

        // Deleting an operator takes its logins and tokens with it.
        s.create_login("login-b", b.id, now + 60).await.unwrap();
        assert!(s.delete_operator(b.id).await.unwrap());
        assert!(!s.delete_operator(b.id).await.unwrap());
        assert!(s.login_operator("login-b", now).await.unwrap().is_none());
        assert_eq!(s.operator_count().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn sites_and_rakor_with_conflicts_and_all_or_nothing_import() {
    for db in TestDb::all() {
        let s = db.store().await;
        let name = db.name();
        let host = s.insert_site(&site("Command Room")).await.unwrap();
        assert_eq!(host.contact_person.expose(), "Bu Sri");
        assert!(host.active);
        assert!(
            matches!(
                s.insert_site(&site(" command  ROOM ")).await,
                Err(SessionError::Conflict(_))
            ),
            "{name}"
        );
        // A duplicate in the batch stores none of it.
        assert!(s
            .insert_sites(&[site("Dinkes"), site("Dishub"), site("dinkes")])
            .await
            .is_err());
        assert_eq!(s.list_sites().await.unwrap().len(), 1, "{name}");
        let batch = s
            .insert_sites(&[site("dinkes"), site("Dishub")])
            .await
            .unwrap();
        assert_eq!(batch.len(), 2);
        let (dinkes, dishub) = (batch[0].id, batch[1].id);
        let names: Vec<String> = s
            .list_sites()
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.name)
            .collect();
        assert_eq!(names, ["Command Room", "dinkes", "Dishub"], "{name}");
        let mut renamed = site("Dinas Kesehatan");
        renamed.active = Some(false);
        let updated = s.update_site(dinkes, &renamed).await.unwrap();
        assert_eq!(
            (updated.name.as_str(), updated.active),
            ("Dinas Kesehatan", false)
        );
        assert!(matches!(
            s.update_site(dinkes, &site("Dishub")).await,
            Err(SessionError::Conflict(_))
        ));
        assert!(matches!(
            s.update_site(999_999, &site("X")).await,
            Err(SessionError::NotFound { .. })
        ));
        assert!(s.get_site(999_999).await.unwrap().is_none());

        let t0 = crate::wib::now() + 600;
        let r = s
            .insert_rakor(&draft(host.id, vec![dishub, dinkes], None, t0))
            .await
            .unwrap();
        assert_eq!(r.room, format!("rakor-{}", r.id));
        assert_eq!(r.invited, vec![dinkes, dishub]);
        assert_eq!(r.node, "", "{name}");
        assert_eq!(r.stored_state, RakorState::Scheduled);
        // Same room at an overlapping time (the 30 minutes before count): refused.
        assert!(
            matches!(
                s.insert_rakor(&draft(host.id, vec![], Some(&r.room), t0 + 3000))
                    .await,
                Err(SessionError::Conflict(_))
            ),
            "{name}"
        );
        let later = s
            .insert_rakor(&draft(host.id, vec![], Some(&r.room), t0 + 3600 + 1801))
            .await
            .unwrap();
        let moved = s
            .update_rakor(
                r.id,
                &RakorDraft {
                    node: "kab-semarang".into(),
                    ..draft(host.id, vec![dishub], None, t0 - 60)
                },
            )
            .await
            .unwrap();
        assert_eq!(moved.node, "kab-semarang", "{name}");
        assert_eq!(
            s.rakor_for_room(&r.room, t0 - 60)
                .await
                .unwrap()
                .unwrap()
                .node,
            "kab-semarang",
            "{name}"
        );
        assert_eq!(
            (moved.room.as_str(), moved.invited.as_slice()),
            (r.room.as_str(), &[dishub][..])
        );
        let listed: Vec<i64> = s.list_rakor().await.unwrap().iter().map(|x| x.id).collect();
        assert_eq!(listed, vec![later.id, r.id], "newest start first");
        assert_eq!(
            s.rakor_for_room(&r.room, t0 - 60)
                .await
                .unwrap()
                .unwrap()
                .id,
            r.id
        );
        assert!(s
            .rakor_for_room(&r.room, t0 - 60 - 1801)
            .await
            .unwrap()
            .is_none());
        s.set_rakor_state(r.id, RakorState::Ended).await.unwrap();
        assert_eq!(
            s.get_rakor(r.id).await.unwrap().unwrap().stored_state,
            RakorState::Ended
        );
        assert!(
            s.rakor_for_room(&r.room, t0).await.unwrap().is_none(),
            "ended"
        );
        assert!(s.delete_rakor(later.id).await.unwrap());
        assert!(!s.delete_rakor(later.id).await.unwrap());
        assert!(s.get_rakor(later.id).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn attendance_admissions_links_bans_audit_and_record_survive_reopen() {
    for db in TestDb::all() {
        let name = db.name();
        let s = db.store().await;
        let host = s.insert_site(&site("Command Room")).await.unwrap();
        let r = s
            .insert_rakor(&draft(host.id, vec![], None, crate::wib::now() + 600))
            .await
            .unwrap();
        let t = crate::wib::now_ms();
        s.record_attendance(r.id, "", &event("PA_1", AttendanceKind::Join, t))
            .await
            .unwrap();
        s.record_attendance(r.id, "", &event("PA_1", AttendanceKind::Leave, t + 5))
            .await
            .unwrap();
        s.record_attendance(r.id, "", &event("PA_2", AttendanceKind::Join, t + 10))
            .await
            .unwrap();

        // Links, oldest first (inserted in the same second: insertion order).
        for id in ["LK_b", "LK_a", "LK_c"] {
            s.insert_link(&InvitationLink {
                id: id.into(),
                rakor_id: r.id,
                site_id: if id == "LK_c" { 8 } else { 7 },
                created_at: 1_700_000_000,
                revoked_at: None,
            })
            .await
            .unwrap();
        }
        let ids: Vec<String> = s
            .links(r.id)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(ids, ["LK_b", "LK_a", "LK_c"], "{name}");
        assert_eq!(s.revoke_links(r.id, 7, 1_700_000_100).await.unwrap(), 2);
        assert_eq!(s.revoke_links(r.id, 7, 1_700_000_200).await.unwrap(), 0);
        assert_eq!(
            s.link("LK_a").await.unwrap().unwrap().revoked_at,
            Some(1_700_000_100)
        );
        assert!(s.link("LK_zz").await.unwrap().is_none());

        // Admission is idempotent and per link.
        s.admit(r.id, "site-8", "LK_c").await.unwrap();
        s.admit(r.id, "site-8", "LK_c").await.unwrap();
        assert!(s.is_admitted(r.id, "site-8", "LK_c").await.unwrap());
        assert!(!s.is_admitted(r.id, "site-8", "LK_b").await.unwrap());

        let ban = s.add_ban("rakor-1", "site-9", "admin").await.unwrap();
        assert!(matches!(
            s.add_ban("rakor-1", "site-9", "admin").await,
            Err(SessionError::Conflict(_))
        ));
        s.add_ban("Rakor-0", "site-9", "admin").await.unwrap();
        assert!(s.is_banned("rakor-1", "site-9").await.unwrap());
        assert!(!s.is_banned("rakor-2", "site-9").await.unwrap());
        let rooms: Vec<String> = s
            .list_bans()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.room)
            .collect();
        assert_eq!(rooms, ["Rakor-0", "rakor-1"], "{name}");

        for i in 0..5 {
            s.append_audit(
                t + i,
                &AuditEntry {
                    actor: "admin".into(),
                    address: "10.0.0.1".into(),
                    action: "login",
                    target: format!("n{i}"),
                    detail: "x".repeat(500),
                },
            )
            .await
            .unwrap();
        }
        let page = s.audit(2, None).await.unwrap();
        assert_eq!(
            page.iter().map(|a| a.target.as_str()).collect::<Vec<_>>(),
            ["n4", "n3"]
        );
        assert_eq!(
            page[0].detail.chars().count(),
            crate::access::AUDIT_TEXT_CHARS
        );
        let next = s.audit(10, Some(page[1].id)).await.unwrap();
        assert_eq!(next.len(), 3);
        assert_eq!(next[0].target, "n2");

        let chat = ChatRecord {
            msg_id: "CH_1".into(),
            from_participant: "PA_2".into(),
            from_identity: "site-1".into(),
            from_name: "Dinkes".into(),
            to_participant: None,
            to_identity: None,
            to_name: None,
            text: "halo, semua — ✓".into(),
            at_ms: t,
        };
        s.record_chat(r.id, &chat).await.unwrap();
        s.record_timeline(
            r.id,
            &TimelineRecord {
                kind: "hand_raised".into(),
                participant: Some("PA_2".into()),
                identity: None,
                name: Some("Dinkes".into()),
                by: None,
                detail: None,
                at_ms: t + 1,
            },
        )
        .await
        .unwrap();

        // Opened again (a restart): everything committed is there, and the join without a
        // leave is closed once.
        drop(s);
        let s = db.store().await;
        // Another node of a cluster sharing the database closes only its own joins.
        assert_eq!(
            s.close_open_attendance("node-b", t + 3).await.unwrap(),
            0,
            "{name}"
        );
        assert_eq!(
            s.close_open_attendance("", t + 3).await.unwrap(),
            1,
            "{name}"
        );
        assert_eq!(s.close_open_attendance("", t + 4).await.unwrap(), 0);
        let att = s.attendance(r.id).await.unwrap();
        assert_eq!(att.len(), 4);
        let last = att.last().unwrap();
        assert_eq!(
            (
                last.participant.as_str(),
                last.kind,
                last.reason.as_deref(),
                last.at_ms
            ),
            (
                "PA_2",
                AttendanceKind::Leave,
                Some("server_restart"),
                t + 10
            ),
            "{name}: a leave is never before its join"
        );
        assert!(s.is_admitted(r.id, "site-8", "LK_c").await.unwrap());
        s.revoke_admission(r.id, "site-8").await.unwrap();
        assert!(!s.is_admitted(r.id, "site-8", "LK_c").await.unwrap());
        assert_eq!(s.chat(r.id).await.unwrap(), vec![chat]);
        assert_eq!(s.timeline(r.id).await.unwrap().len(), 1);
        assert_eq!(s.audit(100, None).await.unwrap().len(), 5);
        assert_eq!(
            s.remove_ban(ban.id).await.unwrap().unwrap().identity,
            "site-9"
        );
        assert!(s.remove_ban(ban.id).await.unwrap().is_none());
        // Deleting the rakor takes its record with it.
        assert!(s.delete_rakor(r.id).await.unwrap());
        assert!(s.attendance(r.id).await.unwrap().is_empty());
        assert!(s.chat(r.id).await.unwrap().is_empty());
        assert!(s.links(r.id).await.unwrap().is_empty());
    }
}

/// The two migration sets have the same versions and describe the same tables and columns (PostgreSQL's `seq` on
/// invitation links stands in for SQLite's rowid).
#[tokio::test]
async fn sqlite_and_postgres_schemas_match() {
    use sqlx::Row as _;
    let dbs = TestDb::all();
    let Some(pg) = dbs.iter().find(|d| d.name() == "postgres") else {
        eprintln!(
            "{} not set: schema comparison skipped",
            crate::test_db::POSTGRES_URL_VAR
        );
        return;
    };
    assert_eq!(
        crate::sqlite::MIGRATIONS
            .iter()
            .map(|m| m.0)
            .collect::<Vec<_>>(),
        crate::postgres::MIGRATIONS
            .iter()
            .map(|m| m.0)
            .collect::<Vec<_>>()
    );
    let lite = crate::sqlite::SqliteStore::open(&dbs[0].sqlite_dir().unwrap().join("s.db"))
        .await
        .unwrap();
    let mut want = Vec::new();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&lite.pool)
            .await
            .unwrap();
    for t in tables {
        let rows = sqlx::query(&format!("PRAGMA table_info({t})"))
            .fetch_all(&lite.pool)
            .await
            .unwrap();
        for r in rows {
            let col: String = r.get("name");
            want.push(format!("{t}.{col}"));
        }
    }
    want.sort();
    let TestDb::Postgres { url, schema } = pg else {
        unreachable!()
    };
    let store = crate::postgres::PgStore::open_in_schema(url, Some(schema))
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns WHERE table_schema = $1",
    )
    .bind(schema)
    .fetch_all(&store.pool)
    .await
    .unwrap();
    let mut got: Vec<String> = rows
        .iter()
        .map(|r| format!("{}.{}", r.get::<String, _>("t"), r.get::<String, _>("c")))
        .filter(|s| s != "invitation_links.seq")
        .collect();
    got.sort();
    assert_eq!(got, want);
}
