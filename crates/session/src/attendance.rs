//! The attendance register (*daftar hadir*) of a rakor, computed from the recorded joins and
//! leaves: one row per site, reconnects merged (overlapping or repeated connections of the same
//! identity count once), and the CSV file operators open in Excel (UTF-8 with a BOM).

use crate::model::{
    site_identity, site_of_identity, AttendanceEvent, AttendanceKind, Rakor, Site, SiteKind,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use utoipa::ToSchema;

/// Whether a site came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Joined and left.
    Attended,
    /// Joined and is still connected.
    Present,
    /// Invited, never joined.
    Absent,
}

/// One row of the register.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AttendanceRow {
    pub site_id: Option<i64>,
    /// The site's name from the directory (or the joining name for an identity outside it).
    pub site: String,
    pub kind: Option<SiteKind>,
    pub identity: String,
    pub role: String,
    /// The display names this identity joined with.
    pub joined_as: Vec<String>,
    /// First join, UTC RFC 3339.
    pub first_join_utc: Option<String>,
    /// Last leave, UTC RFC 3339 (none while still present).
    pub last_leave_utc: Option<String>,
    /// Time connected, overlapping connections counted once, in whole minutes (rounded).
    pub total_minutes: i64,
    pub total_seconds: i64,
    /// Number of joins.
    pub joins: u32,
    /// Joins after the first.
    pub reconnects: u32,
    pub status: Presence,
    #[serde(skip)]
    first_join_ms: Option<i64>,
    #[serde(skip)]
    last_leave_ms: Option<i64>,
}

/// The whole register.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Register {
    pub rakor_id: i64,
    pub title: String,
    pub rows: Vec<AttendanceRow>,
}

/// Union length of intervals, in ms.
fn union_ms(mut iv: Vec<(i64, i64)>) -> i64 {
    iv.sort();
    let mut total = 0;
    let mut cur: Option<(i64, i64)> = None;
    for (s, e) in iv {
        match cur {
            Some((cs, ce)) if s <= ce => cur = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                cur = Some((s, e));
            }
            None => cur = Some((s, e)),
        }
    }
    if let Some((cs, ce)) = cur {
        total += ce - cs;
    }
    total
}

/// Compute the register. `events` in any order; `sites` the directory (for names and kinds);
/// `now_ms` closes connections still open.
pub fn register(
    rakor: &Rakor,
    sites: &[Site],
    events: &[AttendanceEvent],
    now_ms: i64,
) -> Register {
    let by_id: HashMap<i64, &Site> = sites.iter().map(|s| (s.id, s)).collect();
    let mut sorted: Vec<&AttendanceEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.at_ms);

    struct Acc {
        role: String,
        names: Vec<String>,
        open: HashMap<String, i64>,
        intervals: Vec<(i64, i64)>,
        first: Option<i64>,
        last_leave: Option<i64>,
        joins: u32,
    }
    let mut accs: BTreeMap<String, Acc> = BTreeMap::new();
    for e in sorted {
        let acc = accs.entry(e.identity.clone()).or_insert_with(|| Acc {
            role: e.role.clone(),
            names: Vec::new(),
            open: HashMap::new(),
            intervals: Vec::new(),
            first: None,
            last_leave: None,
            joins: 0,
        });
        match e.kind {
            AttendanceKind::Join => {
                acc.joins += 1;
                acc.first.get_or_insert(e.at_ms);
                if !acc.names.iter().any(|n| n == e.name.expose()) {
                    acc.names.push(e.name.expose().to_owned());
                }
                acc.open.insert(e.participant.clone(), e.at_ms);
            }
            AttendanceKind::Leave => {
                if let Some(start) = acc.open.remove(&e.participant) {
                    acc.intervals.push((start, e.at_ms.max(start)));
                }
                acc.last_leave = Some(acc.last_leave.map_or(e.at_ms, |l| l.max(e.at_ms)));
            }
        }
    }

    let mut rows = Vec::new();
    for (identity, mut acc) in accs {
        let present = !acc.open.is_empty();
        for (_, start) in acc.open.drain() {
            acc.intervals.push((start, now_ms.max(start)));
        }
        let total_ms = union_ms(acc.intervals);
        let site = site_of_identity(&identity).and_then(|id| by_id.get(&id).copied());
        let total_seconds = total_ms / 1000;
        rows.push(AttendanceRow {
            site_id: site.map(|s| s.id),
            site: site
                .map(|s| s.name.clone())
                .or_else(|| acc.names.first().cloned())
                .unwrap_or_else(|| identity.clone()),
            kind: site.map(|s| s.kind),
            identity,
            role: acc.role,
            joined_as: acc.names,
            first_join_utc: acc.first.map(ms_utc),
            last_leave_utc: if present {
                None
            } else {
                acc.last_leave.map(ms_utc)
            },
            total_minutes: (total_ms + 30_000) / 60_000,
            total_seconds,
            joins: acc.joins,
            reconnects: acc.joins.saturating_sub(1),
            status: if present {
                Presence::Present
            } else {
                Presence::Attended
            },
            first_join_ms: acc.first,
            last_leave_ms: if present { None } else { acc.last_leave },
        });
    }
    // Invited sites (and the host) that never came.
    let mut expected = vec![rakor.host_site_id];
    expected.extend(rakor.invited.iter().copied());
    for id in expected {
        let identity = site_identity(id);
        if rows.iter().any(|r| r.identity == identity) {
            continue;
        }
        let site = by_id.get(&id).copied();
        rows.push(AttendanceRow {
            site_id: Some(id),
            site: site
                .map(|s| s.name.clone())
                .unwrap_or_else(|| identity.clone()),
            kind: site.map(|s| s.kind),
            identity,
            role: if id == rakor.host_site_id {
                "host"
            } else {
                "participant"
            }
            .to_owned(),
            joined_as: Vec::new(),
            first_join_utc: None,
            last_leave_utc: None,
            total_minutes: 0,
            total_seconds: 0,
            joins: 0,
            reconnects: 0,
            status: Presence::Absent,
            first_join_ms: None,
            last_leave_ms: None,
        });
    }
    // Host first, then by first join, absent sites last (by name).
    rows.sort_by(|a, b| {
        (
            a.role != "host",
            a.first_join_ms.is_none(),
            a.first_join_ms,
            a.site.to_lowercase(),
        )
            .cmp(&(
                b.role != "host",
                b.first_join_ms.is_none(),
                b.first_join_ms,
                b.site.to_lowercase(),
            ))
    });
    Register {
        rakor_id: rakor.id,
        title: rakor.title.clone(),
        rows,
    }
}

fn ms_utc(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_default()
}

fn ms_wib(ms: Option<i64>) -> String {
    ms.map(|m| {
        jiff::Timestamp::from_millisecond(m)
            .map(|t| {
                t.to_zoned(
                    jiff::tz::TimeZone::get(crate::wib::ZONE)
                        .unwrap_or(jiff::tz::TimeZone::fixed(jiff::tz::offset(7))),
                )
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
            })
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// The UTF-8 byte order mark Excel needs to read the file as UTF-8.
pub const BOM: &str = "\u{feff}";

/// Header of the attendance CSV (Bahasa Indonesia, like the printed *daftar hadir*).
pub const CSV_HEADER: [&str; 10] = [
    "No",
    "Lokasi",
    "Jenis",
    "Nama saat bergabung",
    "Peran",
    "Pertama bergabung (WIB)",
    "Terakhir keluar (WIB)",
    "Total menit",
    "Sambung ulang",
    "Status",
];

fn status_id(p: Presence) -> &'static str {
    match p {
        Presence::Attended => "hadir",
        Presence::Present => "masih di rapat",
        Presence::Absent => "tidak hadir",
    }
}

/// The register as CSV: BOM, header, one row per site; CRLF line ends (RFC 4180).
pub fn to_csv(reg: &Register) -> Result<String, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for (i, r) in reg.rows.iter().enumerate() {
        w.write_record([
            (i + 1).to_string(),
            csv_safe(&r.site),
            r.kind.map(|k| k.as_str()).unwrap_or("").to_owned(),
            csv_safe(&r.joined_as.join("; ")),
            r.role.clone(),
            ms_wib(r.first_join_ms),
            ms_wib(r.last_leave_ms),
            r.total_minutes.to_string(),
            r.reconnects.to_string(),
            status_id(r.status).to_owned(),
        ])?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))?;
    Ok(format!("{BOM}{}", String::from_utf8_lossy(&bytes)))
}

/// Neutralise spreadsheet formulas in a text cell (`=`, `+`, `-`, `@` at the start).
pub fn csv_safe(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::model::{Personal, RakorState};

    fn ev(identity: &str, participant: &str, kind: AttendanceKind, at_s: i64) -> AttendanceEvent {
        AttendanceEvent {
            identity: identity.into(),
            name: Personal(format!("{identity} name")),
            role: if identity == "site-1" {
                "host"
            } else {
                "participant"
            }
            .into(),
            participant: participant.into(),
            kind,
            reason: None,
            at_ms: at_s * 1000,
        }
    }

    fn site(id: i64, name: &str) -> Site {
        Site {
            id,
            name: name.into(),
            kind: SiteKind::Opd,
            contact_person: Personal::default(),
            phone: Personal::default(),
            active: true,
        }
    }

    #[test]
    fn reconnects_are_merged_and_absent_sites_listed() {
        use AttendanceKind::*;
        let rakor = Rakor {
            id: 7,
            title: "Rakor".into(),
            agenda: String::new(),
            room: "r".into(),
            start_at: 0,
            end_at: 7200,
            host_site_id: 1,
            invited: vec![2, 3],
            stored_state: RakorState::Live,
            node: String::new(),
        };
        let events = vec![
            ev("site-1", "p1", Join, 0),
            ev("site-2", "a", Join, 60),
            ev("site-2", "a", Leave, 600),
            ev("site-2", "b", Join, 660), // reconnect after a minute away
            // a replacement joins before the old connection leaves: overlap counts once
            ev("site-2", "c", Join, 1200),
            ev("site-2", "b", Leave, 1210),
            ev("site-2", "c", Leave, 1860),
            ev("site-1", "p1", Leave, 3600),
        ];
        let sites = vec![
            site(1, "Command Room"),
            site(2, "Dishub"),
            site(3, "Dinkes"),
        ];
        let reg = register(&rakor, &sites, &events, 4_000_000);
        assert_eq!(reg.rows.len(), 3);
        let host = &reg.rows[0];
        assert_eq!(
            (host.site.as_str(), host.total_minutes, host.joins),
            ("Command Room", 60, 1)
        );
        let dishub = &reg.rows[1];
        assert_eq!(dishub.site, "Dishub");
        assert_eq!(dishub.joins, 3);
        assert_eq!(dishub.reconnects, 2);
        // 60..600 (540 s) + 660..1860 (1200 s) = 1740 s = 29 min
        assert_eq!(dishub.total_seconds, 1740);
        assert_eq!(dishub.total_minutes, 29);
        assert_eq!(
            dishub.first_join_utc.as_deref(),
            Some("1970-01-01T00:01:00Z")
        );
        assert_eq!(
            dishub.last_leave_utc.as_deref(),
            Some("1970-01-01T00:31:00Z")
        );
        assert_eq!(dishub.status, Presence::Attended);
        let dinkes = &reg.rows[2];
        assert_eq!(
            (dinkes.site.as_str(), dinkes.status),
            ("Dinkes", Presence::Absent)
        );

        let csv = to_csv(&reg).unwrap();
        assert!(csv.starts_with('\u{feff}'));
        let lines: Vec<&str> = csv.trim_start_matches('\u{feff}').split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER.join(","));
        assert_eq!(
            lines[2],
            "2,Dishub,opd,site-2 name,participant,1970-01-01 07:01:00,1970-01-01 07:31:00,29,2,hadir"
        );
        assert!(lines[3].ends_with(",0,0,tidak hadir"), "{}", lines[3]);
    }

    #[test]
    fn still_connected_counts_until_now() {
        use AttendanceKind::*;
        let rakor = Rakor {
            id: 1,
            title: "t".into(),
            agenda: String::new(),
            room: "r".into(),
            start_at: 0,
            end_at: 7200,
            host_site_id: 9,
            invited: vec![],
            stored_state: RakorState::Live,
            node: String::new(),
        };
        let reg = register(&rakor, &[], &[ev("site-2", "a", Join, 0)], 600_000);
        let r = reg.rows.iter().find(|r| r.identity == "site-2").unwrap();
        assert_eq!(
            (r.status, r.total_minutes, r.last_leave_utc.clone()),
            (Presence::Present, 10, None)
        );
    }

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(csv_safe("=cmd()"), "'=cmd()");
        assert_eq!(csv_safe("Dishub"), "Dishub");
    }
}
