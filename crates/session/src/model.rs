//! The records of the session manager and their validation: sites of the directory, scheduled
//! rakor, attendance events; [`Personal`] for personal data.

use crate::error::{Result, SessionError};
use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

/// Longest name or title, in characters.
pub const MAX_NAME_CHARS: usize = 120;
/// Longest agenda, in characters.
pub const MAX_AGENDA_CHARS: usize = 4000;
/// Most sites invited to one rakor.
pub const MAX_INVITED: usize = 200;

/// Personal data (a contact person's name, a phone number): serialized as the value for the
/// operator's API, but `Debug` never shows it, so it cannot end up in logs.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct Personal(pub String);

impl Personal {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Personal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

/// What kind of site: an agency (OPD), a sub-district (kecamatan), a clinic (puskesmas), a
/// village (kelurahan) or anything else (the hospital, a bank, a school).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    Opd,
    Kecamatan,
    Puskesmas,
    Kelurahan,
    Other,
}

impl SiteKind {
    pub const ALL: [SiteKind; 5] = [
        SiteKind::Opd,
        SiteKind::Kecamatan,
        SiteKind::Puskesmas,
        SiteKind::Kelurahan,
        SiteKind::Other,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            SiteKind::Opd => "opd",
            SiteKind::Kecamatan => "kecamatan",
            SiteKind::Puskesmas => "puskesmas",
            SiteKind::Kelurahan => "kelurahan",
            SiteKind::Other => "other",
        }
    }
    pub fn parse(s: &str) -> Option<SiteKind> {
        let s = s.trim().to_ascii_lowercase();
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A site of the directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Site {
    pub id: i64,
    pub name: String,
    pub kind: SiteKind,
    pub contact_person: Personal,
    pub phone: Personal,
    pub active: bool,
}

/// Fields of a site as given by an operator (create, or the full new state for an edit).
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteInput {
    pub name: String,
    pub kind: SiteKind,
    #[serde(default)]
    pub contact_person: Personal,
    #[serde(default)]
    pub phone: Personal,
    /// Defaults to true on create.
    #[serde(default)]
    pub active: Option<bool>,
}

/// A partial edit of a site: only the given fields change.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SitePatch {
    pub name: Option<String>,
    pub kind: Option<SiteKind>,
    pub contact_person: Option<Personal>,
    pub phone: Option<Personal>,
    pub active: Option<bool>,
}

fn check_text(field: &str, value: &str, max: usize, required: bool) -> Result<String> {
    let v = value.trim();
    if required && v.is_empty() {
        return Err(SessionError::invalid(field, "is required"));
    }
    if v.chars().count() > max {
        return Err(SessionError::invalid(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(SessionError::invalid(field, "contains control characters"));
    }
    Ok(v.to_owned())
}

/// Normalise and check a site. Names are trimmed; phone numbers may hold digits, spaces and
/// `+-()`.
pub fn validate_site(input: &SiteInput) -> Result<SiteInput> {
    let name = check_text("name", &input.name, MAX_NAME_CHARS, true)?;
    let contact = check_text(
        "contact_person",
        input.contact_person.expose(),
        MAX_NAME_CHARS,
        false,
    )?;
    let phone = input.phone.expose().trim().to_owned();
    if phone.chars().count() > 32
        || !phone
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
    {
        return Err(SessionError::invalid(
            "phone",
            "must be at most 32 characters of digits, spaces and + - ( )",
        ));
    }
    Ok(SiteInput {
        name,
        kind: input.kind,
        contact_person: Personal(contact),
        phone: Personal(phone),
        active: input.active,
    })
}

/// The key that makes site names unique: case- and space-insensitive.
pub fn name_key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Where a rakor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RakorState {
    /// Planned; links not valid yet (more than 30 minutes before the start).
    Scheduled,
    /// Links valid (from 30 minutes before the start); nobody has joined yet.
    Open,
    /// Somebody joined.
    Live,
    /// Ended by an operator, or its end time passed.
    Ended,
}

impl RakorState {
    pub fn as_str(self) -> &'static str {
        match self {
            RakorState::Scheduled => "scheduled",
            RakorState::Open => "open",
            RakorState::Live => "live",
            RakorState::Ended => "ended",
        }
    }
    pub fn parse(s: &str) -> RakorState {
        match s {
            "open" => RakorState::Open,
            "live" => RakorState::Live,
            "ended" => RakorState::Ended,
            _ => RakorState::Scheduled,
        }
    }
}

/// Invitation links are valid from this long before the start.
pub const EARLY_ENTRY_SECS: i64 = 30 * 60;

/// A scheduled rakor as stored (times in Unix seconds, UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct Rakor {
    pub id: i64,
    pub title: String,
    pub agenda: String,
    pub room: String,
    pub start_at: i64,
    pub end_at: i64,
    pub host_site_id: i64,
    pub invited: Vec<i64>,
    /// The stored state (scheduled, live or ended); see [`Rakor::state_at`].
    pub stored_state: RakorState,
    /// A cluster: the node id or region its room is placed on ('' = the least-loaded node).
    pub node: String,
}

impl Rakor {
    /// The state as operators see it at `now`.
    pub fn state_at(&self, now: i64) -> RakorState {
        match self.stored_state {
            RakorState::Ended => RakorState::Ended,
            _ if now >= self.end_at => RakorState::Ended,
            RakorState::Live => RakorState::Live,
            _ if now >= self.start_at - EARLY_ENTRY_SECS => RakorState::Open,
            _ => RakorState::Scheduled,
        }
    }
    /// Invitation links are valid from here (Unix seconds).
    pub fn valid_from(&self) -> i64 {
        self.start_at - EARLY_ENTRY_SECS
    }
}

/// A rakor as an operator gives it. Times are WIB unless they carry an offset.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RakorInput {
    pub title: String,
    #[serde(default)]
    pub agenda: String,
    /// Start, e.g. `"2030-05-01T09:00"` (WIB).
    pub start: String,
    /// End, e.g. `"2030-05-01T11:00"` (WIB).
    pub end: String,
    /// The command room's site.
    pub host_site_id: i64,
    #[serde(default)]
    pub invited_site_ids: Vec<i64>,
    /// Room name in the media server; default `rakor-<id>`.
    #[serde(default)]
    pub room: Option<String>,
    /// A cluster of nodes: place the room on this node (`cluster.node_id`) or on a node of
    /// this region (`cluster.region`); absent or empty = the least-loaded live node. When no
    /// live node matches, the room is placed by load (and the node logs it).
    #[serde(default)]
    pub node: Option<String>,
}

/// A validated rakor, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct RakorDraft {
    pub title: String,
    pub agenda: String,
    pub room: Option<String>,
    pub start_at: i64,
    pub end_at: i64,
    pub host_site_id: i64,
    pub invited: Vec<i64>,
    /// Node id or region to place the room on ('' = by load).
    pub node: String,
}

/// Longest rakor: 24 hours.
pub const MAX_DURATION_SECS: i64 = 24 * 3600;

/// Check what does not need the store: text sizes, times (end after start, not in the past,
/// at most 24 h), room name characters, duplicate invitations. `now` in Unix seconds.
pub fn validate_rakor(input: &RakorInput, now: i64, allow_past: bool) -> Result<RakorDraft> {
    let title = check_text("title", &input.title, MAX_NAME_CHARS, true)?;
    let agenda = check_text("agenda", &input.agenda, MAX_AGENDA_CHARS, false)?;
    let start_at = crate::wib::parse("start", &input.start)?;
    let end_at = crate::wib::parse("end", &input.end)?;
    if end_at <= start_at {
        return Err(SessionError::invalid("end", "must be after the start"));
    }
    if end_at - start_at > MAX_DURATION_SECS {
        return Err(SessionError::invalid(
            "end",
            "a rakor lasts at most 24 hours",
        ));
    }
    if !allow_past && start_at < now - 60 {
        return Err(SessionError::invalid("start", "is in the past"));
    }
    let room = match &input.room {
        None => None,
        Some(r) if r.trim().is_empty() => None,
        Some(r) => {
            let r = r.trim();
            if r.len() > 64
                || !r
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(SessionError::invalid(
                    "room",
                    "must be 1-64 characters of a-z, 0-9, - and _",
                ));
            }
            Some(r.to_owned())
        }
    };
    let node = input.node.as_deref().map(str::trim).unwrap_or_default();
    if node.len() > 64
        || !node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(SessionError::invalid(
            "node",
            "must be at most 64 characters of A-Z, a-z, 0-9, -, _ and .",
        ));
    }
    let node = node.to_owned();
    if input.invited_site_ids.len() > MAX_INVITED {
        return Err(SessionError::invalid(
            "invited_site_ids",
            format!("at most {MAX_INVITED} sites"),
        ));
    }
    let mut invited = Vec::with_capacity(input.invited_site_ids.len());
    for id in &input.invited_site_ids {
        if *id == input.host_site_id {
            continue; // the host has its own link
        }
        if invited.contains(id) {
            return Err(SessionError::invalid(
                "invited_site_ids",
                format!("site {id} is listed twice"),
            ));
        }
        invited.push(*id);
    }
    Ok(RakorDraft {
        title,
        agenda,
        room,
        start_at,
        end_at,
        host_site_id: input.host_site_id,
        invited,
        node,
    })
}

/// Join or leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttendanceKind {
    Join,
    Leave,
}

/// One join or leave of a participant, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AttendanceEvent {
    pub identity: String,
    /// Display name from the token (may be an official's name: personal data).
    pub name: Personal,
    pub role: String,
    pub participant: String,
    pub kind: AttendanceKind,
    pub reason: Option<String>,
    pub at_ms: i64,
}

/// The identity a site's invitation carries.
pub fn site_identity(site_id: i64) -> String {
    format!("site-{site_id}")
}

/// The site id of an invitation identity (`site-12` → 12).
pub fn site_of_identity(identity: &str) -> Option<i64> {
    identity.strip_prefix("site-")?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn rakor(start: &str, end: &str) -> RakorInput {
        RakorInput {
            title: "Rakor".into(),
            agenda: String::new(),
            start: start.into(),
            end: end.into(),
            host_site_id: 1,
            invited_site_ids: vec![2, 3],
            room: None,
            node: None,
        }
    }

    #[test]
    fn personal_data_is_redacted_in_debug() {
        let s = SiteInput {
            name: "Dinkes".into(),
            kind: SiteKind::Opd,
            contact_person: Personal("Bu Sari".into()),
            phone: Personal("0811-3373-119".into()),
            active: None,
        };
        let d = format!("{s:?}");
        assert!(!d.contains("0811") && !d.contains("Sari"), "{d}");
        assert_eq!(
            serde_json::to_string(&s.phone).unwrap(),
            "\"0811-3373-119\""
        );
    }

    #[test]
    fn site_validation_table() {
        let ok = SiteInput {
            name: "  Dinas  Perhubungan ".into(),
            kind: SiteKind::Opd,
            contact_person: Personal::default(),
            phone: Personal("+62 811-3373-119".into()),
            active: None,
        };
        assert_eq!(validate_site(&ok).unwrap().name, "Dinas  Perhubungan");
        assert_eq!(name_key(" Dinas  PERHUBUNGAN"), "dinas perhubungan");
        let bad = [
            (
                SiteInput {
                    name: " ".into(),
                    ..ok.clone()
                },
                "name",
            ),
            (
                SiteInput {
                    name: "x".repeat(121),
                    ..ok.clone()
                },
                "name",
            ),
            (
                SiteInput {
                    name: "a\u{0}b".into(),
                    ..ok.clone()
                },
                "name",
            ),
            (
                SiteInput {
                    phone: Personal("call me".into()),
                    ..ok.clone()
                },
                "phone",
            ),
        ];
        for (input, field) in bad {
            match validate_site(&input) {
                Err(SessionError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn rakor_validation_table() {
        let now = crate::wib::parse("t", "2030-05-01T08:00").unwrap();
        let d = validate_rakor(&rakor("2030-05-01T09:00", "2030-05-01T11:00"), now, false).unwrap();
        assert_eq!(d.end_at - d.start_at, 7200);
        let cases = [
            (rakor("2030-05-01T09:00", "2030-05-01T08:00"), "end"),
            (rakor("2030-05-01T09:00", "2030-05-01T09:00"), "end"),
            (rakor("2030-05-01T07:00", "2030-05-01T09:00"), "start"),
            (rakor("2030-05-01T09:00", "2030-05-03T09:00"), "end"),
            (rakor("nope", "2030-05-01T09:00"), "start"),
            (
                RakorInput {
                    title: String::new(),
                    ..rakor("2030-05-01T09:00", "2030-05-01T10:00")
                },
                "title",
            ),
            (
                RakorInput {
                    room: Some("a b".into()),
                    ..rakor("2030-05-01T09:00", "2030-05-01T10:00")
                },
                "room",
            ),
            (
                RakorInput {
                    node: Some("node a".into()),
                    ..rakor("2030-05-01T09:00", "2030-05-01T10:00")
                },
                "node",
            ),
            (
                RakorInput {
                    invited_site_ids: vec![2, 2],
                    ..rakor("2030-05-01T09:00", "2030-05-01T10:00")
                },
                "invited_site_ids",
            ),
        ];
        for (input, field) in cases {
            match validate_rakor(&input, now, false) {
                Err(SessionError::Invalid { field: f, .. }) => assert_eq!(f, field, "{input:?}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn state_follows_the_clock() {
        let r = Rakor {
            id: 1,
            title: "t".into(),
            agenda: String::new(),
            room: "r".into(),
            start_at: 10_000,
            end_at: 17_200,
            host_site_id: 1,
            invited: vec![],
            stored_state: RakorState::Scheduled,
            node: String::new(),
        };
        assert_eq!(r.state_at(0), RakorState::Scheduled);
        assert_eq!(r.state_at(10_000 - 1800), RakorState::Open);
        assert_eq!(r.state_at(17_200), RakorState::Ended);
        let live = Rakor {
            stored_state: RakorState::Live,
            ..r.clone()
        };
        assert_eq!(live.state_at(11_000), RakorState::Live);
        assert_eq!(live.state_at(20_000), RakorState::Ended);
    }
}
