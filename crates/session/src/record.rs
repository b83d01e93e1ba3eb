//! The rakor's record (*notulen*): what operators hand to the regent's office after the
//! meeting — the attendance register, the chat, the raised hands and who was given the floor,
//! and the room's timeline (spotlight, presentations, recordings), every time in WIB. Built
//! from what the media core reported ([`ChatRecord`], [`TimelineRecord`]) and rendered as JSON
//! ([`Record`]), CSV ([`to_csv`]) and a printable HTML page ([`to_html`]).

use crate::attendance::{csv_safe, Register, BOM};
use crate::model::{site_of_identity, Rakor, Site};
use crate::wib;
use serde::Serialize;
use std::collections::HashMap;
use utoipa::ToSchema;

/// A delivered chat message, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRecord {
    pub msg_id: String,
    pub from_participant: String,
    pub from_identity: String,
    pub from_name: String,
    pub to_participant: Option<String>,
    pub to_identity: Option<String>,
    pub to_name: Option<String>,
    pub text: String,
    pub at_ms: i64,
}

/// One event of the room's timeline, as stored. `kind`: `hand_raised`, `hand_lowered`,
/// `floor_given`, `spotlight_set`, `spotlight_cleared`, `presentation_started`,
/// `presentation_stopped`, `recording_started`, `recording_stopped`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineRecord {
    pub kind: String,
    pub participant: Option<String>,
    pub identity: Option<String>,
    pub name: Option<String>,
    /// Who did it: a participant's name, `operator`, or none.
    pub by: Option<String>,
    /// Anything more (e.g. a presentation's track).
    pub detail: Option<String>,
    pub at_ms: i64,
}

/// A chat message in the record.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RecordChat {
    pub id: String,
    /// UTC RFC 3339 with milliseconds.
    pub at_utc: String,
    /// `2030-05-01 09:00:05` (WIB).
    pub at_wib: String,
    pub from_identity: String,
    /// The sender's site in the directory (or its display name).
    pub from_site: String,
    pub from_name: String,
    /// A private message from the host: its addressee.
    pub to_identity: Option<String>,
    pub to_site: Option<String>,
    pub text: String,
}

/// A timeline event in the record.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RecordEvent {
    pub at_utc: String,
    pub at_wib: String,
    /// `hand_raised`, `hand_lowered`, `floor_given`, `spotlight_set`, `spotlight_cleared`,
    /// `presentation_started`, `presentation_stopped`, `recording_started`, `recording_stopped`.
    pub kind: String,
    pub identity: Option<String>,
    pub site: Option<String>,
    pub name: Option<String>,
    /// Who did it: the host's name, `operator`, or none (the site itself, or the server).
    pub by: Option<String>,
    pub detail: Option<String>,
}

/// A raised hand and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RecordHand {
    pub identity: String,
    pub site: String,
    pub raised_wib: String,
    /// When it went down (by the site, by leaving, or with the floor); none: still up when the
    /// record was made.
    pub lowered_wib: Option<String>,
    /// The floor was given to this site while its hand was up.
    pub given_floor: bool,
}

/// Who was given the floor.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RecordFloor {
    pub at_wib: String,
    pub identity: String,
    pub site: String,
    /// The host's name, or `operator`.
    pub by: Option<String>,
}

/// The whole record of a rakor.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Record {
    pub rakor_id: i64,
    pub title: String,
    pub agenda: String,
    pub room: String,
    pub start_wib: String,
    pub end_wib: String,
    /// When this record was made, WIB.
    pub generated_wib: String,
    pub attendance: Register,
    /// Oldest first; private messages from the host included (with `to_identity`).
    pub chat: Vec<RecordChat>,
    /// In the order hands went up.
    pub hands: Vec<RecordHand>,
    pub floor: Vec<RecordFloor>,
    /// Every event, oldest first (hands, floor, spotlight, presentations, recordings).
    pub timeline: Vec<RecordEvent>,
}

/// `2030-05-01 09:00:05` in WIB.
pub fn wib_seconds(at_ms: i64) -> String {
    let s = wib::wib_string(at_ms.div_euclid(1000));
    s.get(..19).map(|t| t.replacen('T', " ", 1)).unwrap_or(s)
}

/// UTC RFC 3339 with milliseconds.
pub fn utc_ms(at_ms: i64) -> String {
    let s = wib::utc_string(at_ms.div_euclid(1000));
    match s.strip_suffix('Z') {
        Some(base) => format!("{base}.{:03}Z", at_ms.rem_euclid(1000)),
        None => s,
    }
}

/// Build the record.
pub fn build(
    rakor: &Rakor,
    sites: &[Site],
    attendance: Register,
    chat: &[ChatRecord],
    timeline: &[TimelineRecord],
    now_ms: i64,
) -> Record {
    let names: HashMap<i64, &str> = sites.iter().map(|s| (s.id, s.name.as_str())).collect();
    let site = |identity: &str, name: &str| -> String {
        site_of_identity(identity)
            .and_then(|id| names.get(&id).map(|n| (*n).to_owned()))
            .unwrap_or_else(|| name.to_owned())
    };
    let chat = chat
        .iter()
        .map(|c| RecordChat {
            id: c.msg_id.clone(),
            at_utc: utc_ms(c.at_ms),
            at_wib: wib_seconds(c.at_ms),
            from_identity: c.from_identity.clone(),
            from_site: site(&c.from_identity, &c.from_name),
            from_name: c.from_name.clone(),
            to_identity: c.to_identity.clone(),
            to_site: c
                .to_identity
                .as_deref()
                .map(|i| site(i, c.to_name.as_deref().unwrap_or(i))),
            text: c.text.clone(),
        })
        .collect();
    let events: Vec<RecordEvent> = timeline
        .iter()
        .map(|e| RecordEvent {
            at_utc: utc_ms(e.at_ms),
            at_wib: wib_seconds(e.at_ms),
            kind: e.kind.clone(),
            identity: e.identity.clone(),
            site: e
                .identity
                .as_deref()
                .map(|i| site(i, e.name.as_deref().unwrap_or(i))),
            name: e.name.clone(),
            by: e.by.clone(),
            detail: e.detail.clone(),
        })
        .collect();
    let mut hands: Vec<RecordHand> = Vec::new();
    let mut floor = Vec::new();
    for e in &events {
        let (Some(identity), Some(site)) = (&e.identity, &e.site) else {
            continue;
        };
        let open = hands
            .iter_mut()
            .rev()
            .find(|h| &h.identity == identity && h.lowered_wib.is_none());
        match e.kind.as_str() {
            "hand_raised" if open.is_none() => hands.push(RecordHand {
                identity: identity.clone(),
                site: site.clone(),
                raised_wib: e.at_wib.clone(),
                lowered_wib: None,
                given_floor: false,
            }),
            "hand_lowered" => {
                if let Some(h) = open {
                    h.lowered_wib = Some(e.at_wib.clone());
                }
            }
            "floor_given" => {
                if let Some(h) = open {
                    h.lowered_wib = Some(e.at_wib.clone());
                    h.given_floor = true;
                }
                floor.push(RecordFloor {
                    at_wib: e.at_wib.clone(),
                    identity: identity.clone(),
                    site: site.clone(),
                    by: e.by.clone(),
                });
            }
            _ => {}
        }
    }
    Record {
        rakor_id: rakor.id,
        title: rakor.title.clone(),
        agenda: rakor.agenda.clone(),
        room: rakor.room.clone(),
        start_wib: wib::wib_short(rakor.start_at),
        end_wib: wib::wib_short(rakor.end_at),
        generated_wib: wib_seconds(now_ms),
        attendance,
        chat,
        hands,
        floor,
        timeline: events,
    }
}

/// Header of the record CSV (Bahasa Indonesia, like the attendance CSV).
pub const CSV_HEADER: [&str; 7] = [
    "Bagian",
    "Waktu (WIB)",
    "Jenis",
    "Lokasi",
    "Nama",
    "Kepada",
    "Isi",
];

/// Bahasa Indonesia names of the timeline events (CSV and HTML).
pub fn kind_label(kind: &str) -> &str {
    match kind {
        "hand_raised" => "Angkat tangan",
        "hand_lowered" => "Turunkan tangan",
        "floor_given" => "Diberi kesempatan bicara",
        "spotlight_set" => "Sorotan",
        "spotlight_cleared" => "Sorotan dihapus",
        "presentation_started" => "Presentasi dimulai",
        "presentation_stopped" => "Presentasi selesai",
        "recording_started" => "Perekaman dimulai",
        "recording_stopped" => "Perekaman selesai",
        other => other,
    }
}

/// The record as one CSV file for Excel (UTF-8 with BOM, CRLF): a section column
/// (`Kehadiran`, `Obrolan`, `Linimasa`) and one row per attendee, message or event.
pub fn to_csv(r: &Record) -> Result<String, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for a in &r.attendance.rows {
        w.write_record([
            "Kehadiran".to_owned(),
            a.first_join_utc
                .as_deref()
                .map(utc_to_wib)
                .unwrap_or_default(),
            presence_label(a.status).to_owned(),
            csv_safe(&a.site),
            csv_safe(&a.joined_as.join("; ")),
            String::new(),
            format!("{} menit, {} sambung ulang", a.total_minutes, a.reconnects),
        ])?;
    }
    for c in &r.chat {
        w.write_record([
            "Obrolan".to_owned(),
            c.at_wib.clone(),
            if c.to_identity.is_some() {
                "Pesan pribadi".to_owned()
            } else {
                "Pesan".to_owned()
            },
            csv_safe(&c.from_site),
            csv_safe(&c.from_name),
            csv_safe(c.to_site.as_deref().unwrap_or("")),
            csv_safe(&c.text),
        ])?;
    }
    for e in &r.timeline {
        w.write_record([
            "Linimasa".to_owned(),
            e.at_wib.clone(),
            kind_label(&e.kind).to_owned(),
            csv_safe(e.site.as_deref().unwrap_or("")),
            csv_safe(e.name.as_deref().unwrap_or("")),
            String::new(),
            csv_safe(&event_detail(e)),
        ])?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))?;
    Ok(format!("{BOM}{}", String::from_utf8_lossy(&bytes)))
}

fn event_detail(e: &RecordEvent) -> String {
    let by = e.by.as_deref().map(|b| format!("oleh {b}"));
    [by, e.detail.clone()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
}

fn presence_label(p: crate::attendance::Presence) -> &'static str {
    match p {
        crate::attendance::Presence::Attended => "Hadir",
        crate::attendance::Presence::Present => "Masih hadir",
        crate::attendance::Presence::Absent => "Tidak hadir",
    }
}

/// A UTC RFC 3339 time from the register, as WIB `YYYY-MM-DD HH:MM:SS`.
fn utc_to_wib(utc: &str) -> String {
    utc.parse::<jiff::Timestamp>()
        .map(|t| wib_seconds(t.as_millisecond()))
        .unwrap_or_else(|_| utc.to_owned())
}

/// Escape text for HTML element content and quoted attributes.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The record as a printable HTML page (Bahasa Indonesia with English, no script; every value
/// escaped).
pub fn to_html(r: &Record) -> String {
    let e = html_escape;
    let mut h = String::new();
    h.push_str("<!doctype html>\n<html lang=\"id\"><head><meta charset=\"utf-8\">");
    h.push_str(&format!(
        "<title>Notulen / Record — {}</title>",
        e(&r.title)
    ));
    h.push_str("<style>body{font-family:system-ui,sans-serif;margin:2rem;color:#111}h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid #999}table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{border:1px solid #bbb;padding:.25rem .4rem;text-align:left;vertical-align:top}td.text{white-space:pre-wrap;word-break:break-word}.muted{color:#555}@media print{body{margin:0}button{display:none}}</style>");
    h.push_str("</head><body>");
    h.push_str(&format!(
        "<h1>Notulen Rakor / Meeting record: {}</h1>",
        e(&r.title)
    ));
    h.push_str(&format!(
        "<p>{} – {} WIB · <span class=\"muted\">ruang / room {}</span></p>",
        e(&r.start_wib),
        e(&r.end_wib),
        e(&r.room)
    ));
    if !r.agenda.is_empty() {
        h.push_str(&format!("<p class=\"text\">{}</p>", e(&r.agenda)));
    }
    h.push_str(&format!(
        "<p class=\"muted\">Dibuat / generated {} WIB</p>",
        e(&r.generated_wib)
    ));

    h.push_str("<h2>Daftar hadir / Attendance</h2><table id=\"record-attendance\"><thead><tr><th>No</th><th>Lokasi / Site</th><th>Pertama bergabung / First join (WIB)</th><th>Total menit / Minutes</th><th>Status</th></tr></thead><tbody>");
    for (i, a) in r.attendance.rows.iter().enumerate() {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            e(&a.site),
            e(&a.first_join_utc
                .as_deref()
                .map(utc_to_wib)
                .unwrap_or_else(|| "–".into())),
            a.total_minutes,
            presence_label(a.status)
        ));
    }
    h.push_str("</tbody></table>");

    h.push_str("<h2>Obrolan / Chat</h2><table id=\"record-chat\"><thead><tr><th>Waktu / Time (WIB)</th><th>Dari / From</th><th>Kepada / To</th><th>Pesan / Message</th></tr></thead><tbody>");
    for c in &r.chat {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"text\">{}</td></tr>",
            e(&c.at_wib),
            e(&c.from_site),
            e(c.to_site.as_deref().unwrap_or("semua / all")),
            e(&c.text)
        ));
    }
    if r.chat.is_empty() {
        h.push_str("<tr><td colspan=\"4\" class=\"muted\">–</td></tr>");
    }
    h.push_str("</tbody></table>");

    h.push_str("<h2>Angkat tangan &amp; kesempatan bicara / Raised hands &amp; the floor</h2><table id=\"record-hands\"><thead><tr><th>Lokasi / Site</th><th>Angkat / Raised (WIB)</th><th>Turun / Lowered (WIB)</th><th>Diberi kesempatan / Given the floor</th></tr></thead><tbody>");
    for x in &r.hands {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&x.site),
            e(&x.raised_wib),
            e(x.lowered_wib.as_deref().unwrap_or("–")),
            if x.given_floor { "ya / yes" } else { "–" }
        ));
    }
    if r.hands.is_empty() {
        h.push_str("<tr><td colspan=\"4\" class=\"muted\">–</td></tr>");
    }
    h.push_str("</tbody></table>");

    h.push_str("<h2>Linimasa / Timeline</h2><table id=\"record-timeline\"><thead><tr><th>Waktu / Time (WIB)</th><th>Peristiwa / Event</th><th>Lokasi / Site</th><th>Keterangan / Detail</th></tr></thead><tbody>");
    for x in &r.timeline {
        h.push_str(&format!(
            "<tr data-kind=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&x.kind),
            e(&x.at_wib),
            e(kind_label(&x.kind)),
            e(x.site.as_deref().unwrap_or("–")),
            e(&event_detail(x))
        ));
    }
    if r.timeline.is_empty() {
        h.push_str("<tr><td colspan=\"4\" class=\"muted\">–</td></tr>");
    }
    h.push_str("</tbody></table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::model::{Personal, RakorState, SiteKind};

    fn rakor() -> Rakor {
        Rakor {
            id: 7,
            title: "Rakor DBD".into(),
            agenda: "Kasus & anggaran".into(),
            room: "rakor-7".into(),
            start_at: 1_903_831_200,
            end_at: 1_903_838_400,
            host_site_id: 1,
            invited: vec![2],
            stored_state: RakorState::Live,
            node: String::new(),
        }
    }

    fn sites() -> Vec<Site> {
        vec![Site {
            id: 2,
            name: "Dinas Kesehatan".into(),
            kind: SiteKind::Opd,
            contact_person: Personal::default(),
            phone: Personal::default(),
            active: true,
        }]
    }

    fn ev(kind: &str, identity: &str, by: Option<&str>, at_ms: i64) -> TimelineRecord {
        TimelineRecord {
            kind: kind.into(),
            participant: Some("PA_x".into()),
            identity: Some(identity.into()),
            name: Some("dinkes".into()),
            by: by.map(Into::into),
            detail: None,
            at_ms,
        }
    }

    fn record() -> Record {
        let t0 = 1_903_831_200_000; // 09:00 WIB
        let chat = vec![ChatRecord {
            msg_id: "CH_1".into(),
            from_participant: "PA_x".into(),
            from_identity: "site-2".into(),
            from_name: "dinkes".into(),
            to_participant: None,
            to_identity: None,
            to_name: None,
            text: "=1+2 <img src=x onerror=alert(1)>".into(),
            at_ms: t0 + 65_000,
        }];
        let tl = vec![
            ev("hand_raised", "site-2", None, t0 + 70_000),
            ev("spotlight_set", "site-2", Some("Bupati"), t0 + 80_000),
            ev("floor_given", "site-2", Some("Bupati"), t0 + 80_000),
            ev("hand_raised", "site-2", None, t0 + 90_000),
        ];
        let reg = Register {
            rakor_id: 7,
            title: "Rakor DBD".into(),
            rows: vec![],
        };
        build(&rakor(), &sites(), reg, &chat, &tl, t0 + 100_000)
    }

    #[test]
    fn hands_pair_with_their_outcome_and_times_are_wib() {
        let r = record();
        assert_eq!(r.chat[0].at_wib, "2030-05-01 09:01:05");
        assert_eq!(r.chat[0].at_utc, "2030-05-01T02:01:05.000Z");
        assert_eq!(r.chat[0].from_site, "Dinas Kesehatan");
        assert_eq!(r.hands.len(), 2);
        assert!(r.hands[0].given_floor);
        assert_eq!(
            r.hands[0].lowered_wib.as_deref(),
            Some("2030-05-01 09:01:20")
        );
        assert!(!r.hands[1].given_floor && r.hands[1].lowered_wib.is_none());
        assert_eq!(r.floor.len(), 1);
        assert_eq!(r.floor[0].by.as_deref(), Some("Bupati"));
        assert_eq!(r.timeline.len(), 4);
    }

    #[test]
    fn csv_neutralises_formulas_and_html_escapes_markup() {
        let r = record();
        let csv = to_csv(&r).unwrap();
        assert!(csv.starts_with(BOM));
        assert!(csv.contains("Obrolan,2030-05-01 09:01:05,Pesan,Dinas Kesehatan,dinkes,,'=1+2 <img src=x onerror=alert(1)>\r\n"), "{csv}");
        assert!(csv.contains("Linimasa,2030-05-01 09:01:20,Diberi kesempatan bicara,Dinas Kesehatan,dinkes,,oleh Bupati\r\n"), "{csv}");
        let html = to_html(&r);
        assert!(!html.contains("<img"), "markup is escaped");
        assert!(html.contains("=1+2 &lt;img src=x onerror=alert(1)&gt;"));
        assert!(!html.contains("<script"));
    }
}
