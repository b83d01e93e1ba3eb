//! The record's feed: the media core's room events ([`rakor_sfu::RoomEvent`]) — joins and
//! leaves (attendance), delivered chat messages and the room's timeline (hands, floor,
//! spotlight, …) — are stored with the rakor in the session manager, for as long as the media
//! core runs.

use rakor_session::model::{AttendanceKind, Personal};
use rakor_session::record::{ChatRecord, TimelineRecord};
use rakor_session::{Membership, SessionManager};
use std::sync::Arc;

/// Consume the media core's join/leave events into the attendance register until the media
/// core stops.
pub async fn record_attendance(
    session: Arc<SessionManager>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<rakor_sfu::RoomEvent>,
) {
    while let Some(ev) = events.recv().await {
        let m = match ev {
            rakor_sfu::RoomEvent::Chat {
                room,
                id,
                from,
                to,
                text,
                at,
            } => {
                if crate::cascade::is_relay_identity(&from.identity) {
                    // A relay's repetition of a message its sender's own node stored.
                    continue;
                }
                let c = ChatRecord {
                    msg_id: id,
                    from_participant: from.participant.to_string(),
                    from_identity: from.identity,
                    from_name: from.name,
                    to_participant: to.as_ref().map(|t| t.participant.to_string()),
                    to_identity: to.as_ref().map(|t| t.identity.clone()),
                    to_name: to.map(|t| t.name),
                    text,
                    at_ms: unix_ms(at),
                };
                if let Err(e) = session.record_chat(&room, c).await {
                    tracing::error!("cannot record a chat message: {e}");
                }
                continue;
            }
            rakor_sfu::RoomEvent::Timeline {
                room,
                kind,
                subject,
                by,
                detail,
                at,
            } => {
                if subject
                    .as_ref()
                    .is_some_and(|s| crate::cascade::is_relay_identity(&s.identity))
                {
                    // About a relay's republisher: the site's own node records it.
                    continue;
                }
                let t = TimelineRecord {
                    kind: kind.as_str().to_owned(),
                    participant: subject.as_ref().map(|s| s.participant.to_string()),
                    identity: subject.as_ref().map(|s| s.identity.clone()),
                    name: subject.map(|s| s.name),
                    by,
                    detail,
                    at_ms: unix_ms(at),
                };
                if let Err(e) = session.record_timeline(&room, t).await {
                    tracing::error!("cannot record a room event: {e}");
                }
                continue;
            }
            rakor_sfu::RoomEvent::Joined {
                room,
                participant,
                identity,
                name,
                role,
                at,
            } => Membership {
                room,
                participant: participant.to_string(),
                identity,
                name: Personal(name),
                role: role.as_str().to_owned(),
                kind: AttendanceKind::Join,
                reason: None,
                at_ms: unix_ms(at),
            },
            rakor_sfu::RoomEvent::Left {
                room,
                participant,
                identity,
                reason,
                at,
            } => Membership {
                room,
                participant: participant.to_string(),
                identity,
                name: Personal::default(),
                role: String::new(),
                kind: AttendanceKind::Leave,
                reason: serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned)),
                at_ms: unix_ms(at),
            },
            // Presentation starts and stops go on the rakor's timeline (the track in `detail`;
            // for a stop also why: `unpublished`, `stopped` or `taken_over`).
            rakor_sfu::RoomEvent::PresentationStarted {
                room,
                participant,
                identity,
                track,
                at,
            } => {
                if crate::cascade::is_relay_identity(&identity) {
                    // About a relay's republisher: the site's own node records it.
                    continue;
                }
                let t = TimelineRecord {
                    kind: rakor_sfu::TimelineKind::PresentationStarted
                        .as_str()
                        .to_owned(),
                    participant: Some(participant.to_string()),
                    identity: Some(identity),
                    name: None,
                    by: None,
                    detail: Some(format!("track {track}")),
                    at_ms: unix_ms(at),
                };
                if let Err(e) = session.record_timeline(&room, t).await {
                    tracing::error!("cannot record a room event: {e}");
                }
                continue;
            }
            rakor_sfu::RoomEvent::PresentationStopped {
                room,
                participant,
                identity,
                track,
                reason,
                by,
                at,
            } => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let by = match (by, reason.as_str()) {
                    (Some(host), _) => Some(host.to_string()),
                    (None, "stopped") => Some("operator".to_owned()),
                    (None, _) => None,
                };
                let t = TimelineRecord {
                    kind: rakor_sfu::TimelineKind::PresentationStopped
                        .as_str()
                        .to_owned(),
                    participant: Some(participant.to_string()),
                    identity: Some(identity),
                    name: None,
                    by,
                    detail: Some(format!("{reason}, track {track}")),
                    at_ms: unix_ms(at),
                };
                if let Err(e) = session.record_timeline(&room, t).await {
                    tracing::error!("cannot record a room event: {e}");
                }
                continue;
            }
            rakor_sfu::RoomEvent::RecordingFinished { .. } => continue,
        };
        if let Err(e) = session.record(m).await {
            tracing::error!("cannot record attendance: {e}");
        }
    }
}

fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
