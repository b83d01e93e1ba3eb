//! The attendance register's feed: the media core's join/leave events ([`rakor_sfu::RoomEvent`])
//! become attendance records in the session manager, for as long as the media core runs.

use rakor_session::model::{AttendanceKind, Personal};
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
