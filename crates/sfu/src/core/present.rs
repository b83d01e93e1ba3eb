//! Presenting in a room, the signalling-only part: chat (size- and rate-limited, the recent
//! history for late joiners), raised hands in order, and giving the floor (unmute, spotlight,
//! hand down). No media path is touched. Everything delivered is also reported on the
//! room-event queue ([`RoomEvent::Chat`], [`RoomEvent::Timeline`]) for the rakor's record;
//! refused messages are reported nowhere.

use super::messages::Reject;
use super::Core;
use crate::config::ChatLimits;
use crate::handle::{RoomEvent, Subject, TimelineKind};
use crate::SfuError;
use rakor_proto::{
    rfc3339_utc_ms, ChatEntry, ChatSender, ErrorCode, ParticipantId, RaisedHand, Role,
    ServerMessage,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Chat messages a participant may send at once, by default (`chat.burst`).
#[cfg(test)]
pub const CHAT_BURST: u32 = 5;
/// Then one message per this interval, by default (`chat.per_second`).
#[cfg(test)]
pub const CHAT_INTERVAL: Duration = Duration::from_secs(1);
/// Chat logs kept for rooms nobody is in (a room whose last participant dropped keeps its
/// history for its return); beyond this, the logs of empty rooms are forgotten.
const MAX_IDLE_CHAT_LOGS: usize = 256;

/// A token bucket in GCRA form: `burst` messages at once, then one per `interval`
/// ([`ChatLimits`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenBucket {
    /// Theoretical arrival time of the next message at the sustained rate.
    tat: Option<Instant>,
}

impl TokenBucket {
    /// Take a token at `now` under `limits`, or say how long until one is available.
    pub fn take(&mut self, now: Instant, limits: &ChatLimits) -> Result<(), Duration> {
        let tat = self.tat.map_or(now, |t| t.max(now));
        let early = limits.interval * limits.burst.saturating_sub(1);
        if let Some(allowed_at) = tat.checked_sub(early) {
            if now < allowed_at {
                return Err(allowed_at - now);
            }
        }
        self.tat = Some(tat + limits.interval);
        Ok(())
    }
}

/// A delivered chat message as the room keeps it for late joiners.
#[derive(Debug, Clone)]
pub(crate) struct LoggedChat {
    pub entry: ChatEntry,
    pub from_identity: String,
    pub to_identity: Option<String>,
}

/// The recent chat of a room, oldest first, at most `chat.history` ([`ChatLimits::history`]).
pub(crate) type ChatLog = VecDeque<LoggedChat>;

impl Core {
    fn subject(&self, pid: &ParticipantId) -> Option<Subject> {
        self.participants.get(pid).map(|p| Subject {
            participant: pid.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
        })
    }

    pub(crate) fn timeline(
        &self,
        room: &str,
        kind: TimelineKind,
        subject: Option<Subject>,
        by: Option<String>,
        now: Instant,
    ) {
        self.timeline_detail(room, kind, subject, by, None, now);
    }

    pub(crate) fn timeline_detail(
        &self,
        room: &str,
        kind: TimelineKind,
        subject: Option<Subject>,
        by: Option<String>,
        detail: Option<String>,
        now: Instant,
    ) {
        self.room_event(RoomEvent::Timeline {
            room: room.to_owned(),
            kind,
            subject,
            by,
            detail,
            at: self.wall(now),
        });
    }

    /// `chat` from a joined participant.
    pub(crate) fn chat(
        &mut self,
        pid: &ParticipantId,
        text: String,
        to: Option<ParticipantId>,
        now: Instant,
    ) -> Result<(), Reject> {
        let p = self.participants.get(pid).ok_or_else(Reject::not_joined)?;
        let (room, role) = (p.room.clone(), p.role);
        let limits = self.cfg.chat;
        let chars = text.chars().count();
        if chars > limits.max_chars {
            return Err(Reject::new(
                ErrorCode::TooLarge,
                format!(
                    "chat text of {chars} characters exceeds {}",
                    limits.max_chars
                ),
            ));
        }
        if text.trim().is_empty() {
            return Err(Reject::new(ErrorCode::BadRequest, "chat text is empty"));
        }
        let to_subject = match &to {
            None => None,
            Some(_) if role != Role::Host => {
                return Err(Reject::new(
                    ErrorCode::Forbidden,
                    "only the host may send a private message (\"to\")",
                ))
            }
            Some(t) => match self.participants.get(t) {
                Some(tp) if tp.room == room => self.subject(t),
                _ => {
                    return Err(Reject::new(
                        ErrorCode::UnknownParticipant,
                        format!("no participant \"{t}\" in this room"),
                    ))
                }
            },
        };
        let from = self.subject(pid).ok_or_else(Reject::not_joined)?;
        // A cascade republisher (`cascade/…`, a token only the cluster's key makes) repeats
        // what its site's own node accepted under this same limit; a leg's jitter must not
        // make a far node refuse it.
        let relayed = super::relay_demand::is_relay_identity(&from.identity);
        if let Some(p) = self.participants.get_mut(pid).filter(|_| !relayed) {
            if let Err(wait) = p.chat_bucket.take(now, &limits) {
                return Err(Reject::new(
                    ErrorCode::RateLimited,
                    format!(
                        "too many chat messages: at most {} at once, then one per {} ms; retry in {} ms",
                        limits.burst,
                        limits.interval.as_millis(),
                        wait.as_millis().max(1)
                    ),
                ));
            }
        }
        let at = self.wall(now);
        let entry = ChatEntry {
            id: super::state::random_id("CH_"),
            from: ChatSender {
                participant_id: pid.clone(),
                name: from.name.clone(),
            },
            text,
            at: rfc3339_utc_ms(at),
            to: to.clone(),
        };
        match &to {
            None => self.broadcast(&room, None, &ServerMessage::Chat(entry.clone())),
            Some(t) => {
                self.send(t, ServerMessage::Chat(entry.clone()));
                if t != pid {
                    self.send(pid, ServerMessage::Chat(entry.clone()));
                }
            }
        }
        self.room_event(RoomEvent::Chat {
            room: room.clone(),
            id: entry.id.clone(),
            from: from.clone(),
            to: to_subject.clone(),
            text: entry.text.clone(),
            at,
        });
        self.log_chat(
            &room,
            LoggedChat {
                entry,
                from_identity: from.identity,
                to_identity: to_subject.map(|s| s.identity),
            },
        );
        Ok(())
    }

    fn log_chat(&mut self, room: &str, msg: LoggedChat) {
        if !self.chat_logs.contains_key(room) && self.chat_logs.len() >= MAX_IDLE_CHAT_LOGS {
            let rooms = &self.rooms;
            self.chat_logs.retain(|r, _| rooms.contains_key(r));
        }
        let keep = self.cfg.chat.history;
        let log = self.chat_logs.entry(room.to_owned()).or_default();
        while !log.is_empty() && log.len() >= keep {
            log.pop_front();
        }
        if keep > 0 {
            log.push_back(msg);
        }
    }

    /// After a resume of `pid` that had seen chat up to `last` (`join.resume.last_chat_id`):
    /// send what it missed. With `last` in the room's recent history: the messages after it
    /// (`chat_history {after: last}`, nothing when none); otherwise the whole recent history.
    pub(crate) fn send_missed_chat(&self, pid: &ParticipantId, last: Option<&str>) {
        let Some(p) = self.participants.get(pid) else {
            return;
        };
        let seen = last.filter(|id| {
            self.chat_logs
                .get(&p.room)
                .is_some_and(|log| log.iter().any(|m| m.entry.id == *id))
        });
        let (messages, after) = match seen {
            Some(id) => (
                self.chat_history_after(&p.room, &p.identity, id),
                Some(id.to_owned()),
            ),
            None => (self.chat_history(&p.room, &p.identity), None),
        };
        if messages.is_empty() {
            return;
        }
        tracing::info!(
            messages = messages.len(),
            since_last_seen = after.is_some(),
            "chat missed during the resume"
        );
        let _ = p
            .events
            .send(ServerMessage::ChatHistory { messages, after });
    }

    fn chat_history_after(&self, room: &str, identity: &str, id: &str) -> Vec<ChatEntry> {
        let Some(log) = self.chat_logs.get(room) else {
            return Vec::new();
        };
        log.iter()
            .skip_while(|m| m.entry.id != id)
            .skip(1)
            .filter(|m| {
                m.to_identity.is_none()
                    || m.from_identity == identity
                    || m.to_identity.as_deref() == Some(identity)
            })
            .map(|m| m.entry.clone())
            .collect()
    }

    /// The room's recent chat that `identity` may see: every message to the room, and the
    /// private ones from or to it.
    pub(crate) fn chat_history(&self, room: &str, identity: &str) -> Vec<ChatEntry> {
        self.chat_logs
            .get(room)
            .map(|log| {
                log.iter()
                    .filter(|m| {
                        m.to_identity.is_none()
                            || m.from_identity == identity
                            || m.to_identity.as_deref() == Some(identity)
                    })
                    .map(|m| m.entry.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// [`crate::Moderation::SeedChat`]: the owner's recent chat for `room`, kept here when the
    /// room has no chat here yet, then sent to everyone here (relay subscribers aside) as
    /// `chat_history` (no `after`: clients merge by id; those that joined before got none).
    /// Private messages are dropped (the owner never sends them to a relay).
    pub(crate) fn seed_chat(&mut self, room: &str, messages: Vec<ChatEntry>) {
        if self.chat_logs.get(room).is_some_and(|l| !l.is_empty()) {
            tracing::debug!(
                room,
                "cascade: the room has chat here already; the owner's history not taken"
            );
            return;
        }
        let mut kept = 0usize;
        for entry in messages.into_iter().filter(|m| m.to.is_none()) {
            kept += 1;
            self.log_chat(
                room,
                LoggedChat {
                    entry,
                    from_identity: String::new(),
                    to_identity: None,
                },
            );
        }
        if kept == 0 {
            return;
        }
        tracing::info!(
            room,
            messages = kept,
            "cascade: the owner's recent chat kept here"
        );
        let members: Vec<ParticipantId> = self
            .rooms
            .get(room)
            .map(|r| r.participants.to_vec())
            .unwrap_or_default();
        for pid in members {
            let Some(p) = self.participants.get(&pid) else {
                continue;
            };
            if p.role == Role::Relay {
                continue;
            }
            let messages = self.chat_history(room, &p.identity);
            if !messages.is_empty() {
                let _ = p.events.send(ServerMessage::ChatHistory {
                    messages,
                    after: None,
                });
            }
        }
    }

    /// The room's chat is over (the meeting ended).
    pub(crate) fn forget_chat(&mut self, room: &str) {
        self.chat_logs.remove(room);
    }

    /// The raised hands of `room`, in order.
    pub(crate) fn hands(&self, room: &str) -> Vec<RaisedHand> {
        self.rooms
            .get(room)
            .map(|r| {
                r.hands
                    .iter()
                    .filter_map(|(id, at)| {
                        self.participants.get(id).map(|p| RaisedHand {
                            participant_id: id.clone(),
                            name: p.name.clone(),
                            at: rfc3339_utc_ms(*at),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn broadcast_hands(&self, room: &str) {
        let hands = self.hands(room);
        self.broadcast(room, None, &ServerMessage::Hands { hands });
    }

    /// `hand` from a joined participant. Raising a raised hand (or lowering a lowered one)
    /// changes nothing and sends nothing.
    pub(crate) fn hand(
        &mut self,
        pid: &ParticipantId,
        raised: bool,
        now: Instant,
    ) -> Result<(), Reject> {
        let p = self.participants.get(pid).ok_or_else(Reject::not_joined)?;
        if p.role == Role::Host {
            return Err(Reject::new(
                ErrorCode::Forbidden,
                "the host gives the floor; it does not raise a hand",
            ));
        }
        let room = p.room.clone();
        let wall = self.wall(now);
        let Some(r) = self.rooms.get_mut(&room) else {
            return Ok(());
        };
        let up = r.hands.iter().any(|(id, _)| id == pid);
        if up == raised {
            return Ok(());
        }
        if raised {
            r.hands.push((pid.clone(), wall));
        } else {
            r.hands.retain(|(id, _)| id != pid);
        }
        tracing::info!(raised, "hand");
        self.broadcast_hands(&room);
        let kind = if raised {
            TimelineKind::HandRaised
        } else {
            TimelineKind::HandLowered
        };
        self.timeline(&room, kind, self.subject(pid), None, now);
        Ok(())
    }

    /// A participant leaves the room: its hand goes down (the others are told).
    pub(crate) fn drop_hand(&mut self, room: &str, pid: &ParticipantId) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let before = r.hands.len();
        r.hands.retain(|(id, _)| id != pid);
        if r.hands.len() != before {
            self.broadcast_hands(room);
        }
    }

    /// `give_floor` from a client: host only, then the operator's path.
    pub(crate) fn host_gives_floor(
        &mut self,
        pid: &ParticipantId,
        target: ParticipantId,
        now: Instant,
    ) -> Result<(), Reject> {
        let room = self.host_room(pid, "only the host may give the floor")?;
        let by_name = self.participants.get(pid).map(|p| p.name.clone());
        self.give_floor(&room, &target, Some(pid.clone()), by_name, now)
            .map_err(|e| Reject::new(e.code(), e.to_string()))
    }

    /// Give the floor in `room` to `target` (by the host `by`, or an operator: `None`): lift
    /// the moderator mute of its identity, lower its hand, spotlight it.
    pub(crate) fn give_floor(
        &mut self,
        room: &str,
        target: &ParticipantId,
        by: Option<ParticipantId>,
        by_name: Option<String>,
        now: Instant,
    ) -> Result<(), SfuError> {
        let member = self
            .rooms
            .get(room)
            .ok_or_else(|| SfuError::UnknownRoom(room.to_owned()))?
            .participants
            .contains(target);
        let Some(subject) = self.subject(target).filter(|_| member) else {
            return Err(SfuError::UnknownParticipant(target.0.clone()));
        };
        tracing::info!(participant = %target, "floor given");
        self.broadcast(
            room,
            None,
            &ServerMessage::FloorGiven {
                participant_id: target.clone(),
                by: by.clone(),
            },
        );
        let muted = self
            .participants
            .get(target)
            .is_some_and(|p| p.moderator_muted)
            || self
                .rooms
                .get(room)
                .is_some_and(|r| r.muted_identities.contains(&subject.identity));
        if muted {
            self.mute_audio(room, target, false, None)?;
        }
        self.drop_hand(room, target);
        let spot_by = by.clone().unwrap_or_else(|| target.clone());
        self.set_spotlight(room, Some(target.clone()), spot_by, by_name.clone(), now);
        let by_name = by_name.or_else(|| Some("operator".to_owned()));
        self.timeline(room, TimelineKind::FloorGiven, Some(subject), by_name, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let l = ChatLimits::default();
        assert_eq!((l.burst, l.interval), (CHAT_BURST, CHAT_INTERVAL));
        let mut b = TokenBucket::default();
        for i in 0..CHAT_BURST {
            assert!(b.take(t0, &l).is_ok(), "message {i} of the burst");
        }
        let wait = b.take(t0, &l).err();
        assert_eq!(
            wait,
            Some(CHAT_INTERVAL),
            "the next one waits a full interval"
        );
        assert!(b.take(t0 + CHAT_INTERVAL / 2, &l).is_err());
        assert!(b.take(t0 + CHAT_INTERVAL, &l).is_ok());
        assert!(b.take(t0 + CHAT_INTERVAL, &l).is_err());
        // After a long pause the whole burst is available again, not more.
        let later = t0 + CHAT_INTERVAL * 100;
        for _ in 0..CHAT_BURST {
            assert!(b.take(later, &l).is_ok());
        }
        assert!(b.take(later, &l).is_err());
        // Configured limits: a burst of 2, then one per 250 ms.
        let tight = ChatLimits {
            burst: 2,
            interval: Duration::from_millis(250),
            ..ChatLimits::default()
        };
        let mut b = TokenBucket::default();
        assert!(b.take(t0, &tight).is_ok() && b.take(t0, &tight).is_ok());
        assert_eq!(b.take(t0, &tight), Err(Duration::from_millis(250)));
        assert!(b.take(t0 + Duration::from_millis(250), &tight).is_ok());
    }
}
