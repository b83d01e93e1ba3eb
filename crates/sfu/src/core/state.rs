//! What the media core holds: connections, participants, rooms, published tracks and the
//! subscriber legs, as plain data. The behaviour lives in the sibling modules, one job each.

use crate::bwe::{Allocator, EstimateCell, RateMeter};
use crate::handle::EventSender;
use crate::keyframe::KeyframeThrottle;
use crate::router::{desired_layer, Codec, TrackRoute};
use crate::slab::{ConnKey, TrackKey};
use crate::speakers::{SpeakerConfig, SpeakerSelector};
use rakor_proto::{ParticipantId, PeerConnectionKind, Role, TrackId, TrackKind, TrackSource};
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One WebRTC connection on the shared media port.
pub(crate) struct Conn {
    pub pc: RTCPeerConnection,
    pub ufrag: String,
    pub owner: ParticipantId,
    pub kind: PeerConnectionKind,
    /// The connection's own next timer (`poll_timeout`), cached after each service.
    pub deadline: Option<Instant>,
    /// What it has to be serviced for, and whether it is on the core's lists of connections to
    /// service ([`Work`]).
    pub work: Work,
    pub connected: bool,
    /// When the client's last packet that its `rtc` core accepted arrived (a consent check,
    /// DTLS, SRTP or SRTCP): the media path's sign of life ([`crate::liveness`]).
    pub heard_at: Instant,
    /// Publisher connection: the media streams it receives.
    pub inbound: Vec<InboundStream>,
    /// Subscriber connection: the streams it sends.
    pub outbound: Vec<OutboundStream>,
    /// Subscriber connection: its bandwidth estimate (`None`: estimation off) and what the
    /// allocator made of it ([`crate::bwe`]).
    pub estimate: Option<Arc<EstimateCell>>,
    pub alloc: Allocator,
    /// Remote ICE candidates the client sent (bounded, see `negotiate::MAX_REMOTE_CANDIDATES`).
    pub remote_candidates: usize,
    /// Publisher connection: mids of screen tracks that were refused (a presentation was
    /// active) or stopped by a moderator — not published again while they keep receiving.
    pub suppressed_mids: Vec<String>,
}

/// A stream a publisher connection receives: which track (and simulcast layer) its SSRC is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InboundStream {
    pub ssrc: u32,
    pub track: TrackKey,
    pub layer: u8,
}

/// A stream a subscriber connection sends: the SSRC the subscriber sees for a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutboundStream {
    pub ssrc: u32,
    pub track: TrackKey,
}

/// A published track and its forwarding route.
pub(crate) struct Track {
    pub id: TrackId,
    pub owner: ParticipantId,
    pub publisher_conn: ConnKey,
    pub kind: TrackKind,
    /// What it carries (declared in the offer, or camera/microphone by kind).
    pub source: TrackSource,
    pub mid: String,
    pub muted: bool,
    pub receiver_id: RTCRtpReceiverId,
    pub media_ssrc: Option<u32>,
    pub codec: Codec,
    pub route: TrackRoute,
    pub keyframe: KeyframeThrottle,
    /// A moderator muted the owner's audio: not forwarded.
    pub moderator_muted: bool,
    pub room: String,
    /// The owner is a host: its audio is always forwarded (not subject to speaker selection).
    pub host: bool,
    /// Simulcast layers, low to high (empty: one stream, `media_ssrc`).
    pub layers: Vec<TrackLayer>,
    /// Dynacast: the layers the publisher was last told to send (`None`: all, never told).
    pub sent_layers: Option<Vec<u8>>,
    /// Dynacast: the publisher was told to stop sending this (video) track.
    pub publisher_paused: bool,
    /// Negotiated id of the RFC 6464 audio level extension on this (audio) track.
    pub audio_level_ext: Option<u8>,
    /// Audio: among the loudest speakers (or not subject to selection), so forwarded.
    pub speaker_forward: bool,
    /// Audio: in its room's speaker selection (since its first packet with a level).
    pub speaker_enrolled: bool,
    /// Incoming bitrate (a simulcast track: of all layers; each layer has its own).
    pub rate: RateMeter,
    /// Handed to the recorder under this number while its room is recorded.
    pub rec: Option<u64>,
    /// Published by a cascade relay republisher (see `relay_demand.rs`).
    pub relayed: bool,
    /// What its republisher was last told this node's subscribers show (`track_demand`).
    pub demand: Option<super::relay_demand::Demand>,
}

impl Track {
    /// Simulcast layers whose packets arrived within [`LAYER_LIVE`].
    pub fn live_layers(&self, now: Instant) -> Vec<bool> {
        self.layers
            .iter()
            .map(|l| {
                l.last_seen
                    .is_some_and(|s| now.saturating_duration_since(s) < LAYER_LIVE)
            })
            .collect()
    }

    pub fn is_simulcast(&self) -> bool {
        self.layers.len() > 1
    }
}

/// The simulcast layer (of `layers`) a leg of a `source` track wants for a tile `height` CSS
/// pixels high: a screen share always its top layer (slides must not be downscaled), a camera
/// the layer its tile size calls for.
pub(crate) fn tile_layer(source: TrackSource, height: u32, layers: usize) -> u8 {
    if source == TrackSource::Screen {
        desired_layer(0, layers)
    } else {
        desired_layer(height, layers)
    }
}

/// One simulcast layer of a published video track.
pub(crate) struct TrackLayer {
    pub rid: String,
    pub ssrc: Option<u32>,
    /// Incoming bitrate of this layer (what forwarding it costs a subscriber).
    pub rate: RateMeter,
    /// Last packet of this layer (a layer not seen for [`LAYER_LIVE`] is not chosen).
    pub last_seen: Option<Instant>,
}

/// A simulcast layer without packets for this long counts as not sent (bandwidth-limited
/// browsers drop their high layers).
pub(crate) const LAYER_LIVE: Duration = Duration::from_millis(1500);

/// Where one subscribed track stands in the subscriber connection's offer/answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LegNegotiation {
    /// Added to the connection, not yet in an offer.
    New,
    /// In the offer that waits for the client's answer (never answered before).
    Offered,
    /// Part of an answered offer: may carry media once the connection is up.
    Negotiated,
}

/// One subscribed remote track on a participant's subscriber connection.
pub(crate) struct SubLeg {
    pub track: TrackKey,
    pub sender_id: RTCRtpSenderId,
    pub ssrc: u32,
    pub negotiation: LegNegotiation,
    /// Video on demand: added because the client asked; `hidden_since` — hidden by it since
    /// then (removed once [`VIDEO_GRACE`] has passed).
    pub on_demand: bool,
    pub hidden_since: Option<Instant>,
}

/// The server-made offer/answer cycle of a participant's subscriber connection: one offer
/// outstanding at a time; changes meanwhile wait for the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum OfferState {
    /// Nothing to (re)negotiate.
    #[default]
    Stable,
    /// Nothing to (re)negotiate; an answer came recently, so a change before `until` is
    /// offered at `until` (see [`RENEGOTIATION_GAP_PER_LEG`]).
    Settling { until: Instant },
    /// The set of legs changed: an offer is due, not before `not_before` (set when it follows
    /// an answer at once, see [`OfferState::answered`]).
    Needed { not_before: Option<Instant> },
    /// An offer waits for the answer; `again`: the legs changed since, another offer follows.
    Sent { again: bool },
}

/// After an answer, the next subscriber offer waits this long per leg on the connection, at
/// most [`RENEGOTIATION_GAP_MAX`]: while sites join one after the other, every subscriber
/// would otherwise renegotiate its whole connection once per join, and each offer/answer
/// costs the media thread time in proportion to its legs (120 m-lines for a site of a
/// sixty-site rakor; issue 16). Changes made meanwhile go into the one next offer. A
/// subscriber whose last answer is older than its gap is offered at once. The gap ends on
/// the core's 100 ms tick, which calls `renegotiate_pending`.
pub(crate) const RENEGOTIATION_GAP_PER_LEG: Duration = Duration::from_millis(8);
pub(crate) const RENEGOTIATION_GAP_MAX: Duration = Duration::from_millis(1000);

impl OfferState {
    pub const NEEDED_NOW: OfferState = OfferState::Needed { not_before: None };

    /// The legs changed: offer now, or after the outstanding answer (and its gap).
    pub fn legs_changed(&mut self) {
        *self = match *self {
            OfferState::Sent { .. } => OfferState::Sent { again: true },
            OfferState::Needed { not_before } => OfferState::Needed { not_before },
            OfferState::Stable => OfferState::NEEDED_NOW,
            OfferState::Settling { until } => OfferState::Needed {
                not_before: Some(until),
            },
        };
    }

    /// An offer may be sent at `now`.
    pub fn due(self, now: Instant) -> bool {
        match self {
            OfferState::Needed { not_before } => not_before.is_none_or(|t| now >= t),
            _ => false,
        }
    }

    pub fn outstanding(self) -> bool {
        matches!(self, OfferState::Sent { .. })
    }

    /// The answer came at `now` to an offer of `legs` legs: the next offer (for the changes
    /// made meanwhile, or later ones) waits the gap.
    pub fn answered(&mut self, now: Instant, legs: usize) {
        let per_leg =
            RENEGOTIATION_GAP_PER_LEG.saturating_mul(u32::try_from(legs).unwrap_or(u32::MAX));
        let until = now + per_leg.min(RENEGOTIATION_GAP_MAX);
        *self = match *self {
            OfferState::Sent { again: true } => OfferState::Needed {
                not_before: Some(until),
            },
            _ => OfferState::Settling { until },
        };
    }
}

pub(crate) struct Participant {
    pub id: ParticipantId,
    pub room: String,
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub events: EventSender,
    pub span: tracing::Span,
    pub pub_conn: Option<ConnKey>,
    pub sub_conn: Option<ConnKey>,
    pub tracks: Vec<TrackKey>,
    pub legs: Vec<SubLeg>,
    pub offer: OfferState,
    /// A moderator muted this participant's audio.
    pub moderator_muted: bool,
    /// Secret for `join.resume`.
    pub resume_token: String,
    /// Signalling dropped; removed at this instant unless resumed (see `resume.rs`).
    pub suspended_until: Option<Instant>,
    /// Chat rate limit (see `present.rs`).
    pub chat_bucket: super::present::TokenBucket,
    /// `join.video_on_demand`: others' video is subscribed only when asked for
    /// (`dynacast.rs`), and removed [`VIDEO_GRACE`] after it was hidden.
    pub video_on_demand: bool,
}

/// Video on demand: a hidden leg is removed after this long.
pub(crate) const VIDEO_GRACE: Duration =
    Duration::from_millis(rakor_proto::VIDEO_ON_DEMAND_GRACE_MS);

pub(crate) struct Room {
    /// In join order.
    pub participants: Vec<ParticipantId>,
    pub spotlight: Option<ParticipantId>,
    /// The room's presentation: the one published screen track everyone shows on the main
    /// view (see `present.rs`).
    pub presentation: Option<TrackKey>,
    /// Sites' audio tracks competing for the `loudest_speakers` slots.
    pub speakers: SpeakerSelector<TrackKey>,
    /// Hosts' audio tracks: always forwarded; tracked only to say when they speak.
    pub host_speakers: SpeakerSelector<TrackKey>,
    /// What the last `speakers` message said (speaking, forwarded).
    pub announced: (Vec<ParticipantId>, Vec<ParticipantId>),
    /// What its cascade relay subscribers were last told of the levels (`relay_levels.rs`).
    pub relay_levels: super::relay_levels::RelayLevels,
    /// Identities whose audio a moderator muted: the mute applies to every join of the
    /// identity while the room lasts (leave and rejoin, a second device, a resume).
    pub muted_identities: std::collections::HashSet<String>,
    /// Raised hands in the order they went up: who, and when (wall clock).
    pub hands: Vec<(ParticipantId, std::time::SystemTime)>,
}

impl Room {
    pub fn new(loudest_speakers: usize) -> Self {
        let cfg = SpeakerConfig::default();
        Room {
            participants: Vec::new(),
            spotlight: None,
            presentation: None,
            speakers: SpeakerSelector::new(SpeakerConfig {
                max_active: loudest_speakers,
                ..cfg.clone()
            }),
            host_speakers: SpeakerSelector::new(SpeakerConfig {
                max_active: usize::MAX,
                ..cfg
            }),
            announced: (Vec::new(), Vec::new()),
            relay_levels: Default::default(),
            muted_identities: std::collections::HashSet::new(),
            hands: Vec::new(),
        }
    }
}

/// A random id with a prefix (`PA_…`, `TR_…`).
pub(crate) fn random_id(prefix: &str) -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 12)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection flagged twice is listed once; servicing clears the flags; a stale or second
    /// entry does not count; a flag set again lists it again.
    #[test]
    fn work_is_listed_once_and_a_second_entry_does_not_count() {
        let (mut inputs, mut outputs) = (Vec::new(), Vec::new());
        let mut w = Work::default();
        let ci = ConnKey(7);
        w.mark_dirty(ci, &mut inputs);
        w.mark_dirty(ci, &mut inputs);
        assert!(w.mark_written(ci, &mut outputs), "first write");
        assert!(!w.mark_written(ci, &mut outputs), "already written");
        assert_eq!((inputs.len(), outputs.len()), (1, 1));
        assert!(w.listed() && w.any() && w.dirty());
        assert!(w.take_input(), "the entry counts");
        assert!(w.begin_service(), "it had input");
        assert!(!w.any());
        assert!(!w.take_input(), "a second entry does not");
        // Still on `outputs`, with nothing to do: that entry is skipped.
        assert!(w.take_output() && !w.any());
        // Written again: listed again, drained by a step, still listed for its timer.
        assert!(w.mark_written(ci, &mut outputs));
        assert_eq!(outputs.len(), 2);
        assert!(w.drain() && !w.drain());
        assert!(w.any() && w.listed() && !w.dirty());
    }

    #[test]
    fn one_offer_outstanding_and_changes_wait_for_the_answer() {
        let t0 = Instant::now();
        let mut s = OfferState::default();
        assert!(!s.due(t0));
        s.legs_changed();
        assert!(s.due(t0), "nothing outstanding: offered at once");
        s = OfferState::Sent { again: false };
        s.legs_changed();
        assert!(!s.due(t0), "no second offer while one is outstanding");
        assert!(s.outstanding());
        s.answered(t0, 0);
        assert!(s.due(t0), "the change made meanwhile is offered next");
        s = OfferState::Sent { again: false };
        s.answered(t0, 10);
        assert!(!s.due(t0) && !s.outstanding(), "nothing more to offer");
        s.legs_changed();
        assert!(!s.due(t0), "a change right after an answer waits the gap");
        assert!(s.due(t0 + RENEGOTIATION_GAP_PER_LEG * 10));
    }

    /// After an answer, the next offer of a big connection waits in proportion to its legs
    /// (at most the cap), and changes made meanwhile do not move that instant.
    #[test]
    fn the_offer_after_an_answer_waits_per_leg_up_to_the_cap() {
        let t0 = Instant::now();
        let mut s = OfferState::Sent { again: true };
        s.answered(t0, 10);
        let gap = RENEGOTIATION_GAP_PER_LEG * 10;
        assert!(!s.due(t0));
        assert!(!s.due(t0 + gap - Duration::from_millis(1)));
        s.legs_changed();
        assert!(
            !s.due(t0 + gap - Duration::from_millis(1)),
            "a change does not hurry it"
        );
        assert!(s.due(t0 + gap));

        let mut big = OfferState::Sent { again: true };
        big.answered(t0, 10_000);
        assert!(!big.due(t0 + RENEGOTIATION_GAP_MAX - Duration::from_millis(1)));
        assert!(big.due(t0 + RENEGOTIATION_GAP_MAX));
    }
}

/// What a connection has to be serviced for (issue 16). Every connection flagged here is on the
/// core's list of connections with input (`Core::inputs`, when [`Self::dirty`]) or with output
/// (`Core::outputs`, when written or drained), put there by the call that set the flag, so
/// servicing walks those lists instead of every connection. The flags can only be set through
/// the `mark_*` methods, which keep that promise; a list may hold a connection whose flags were
/// cleared meanwhile (serviced another way) or twice (its slot reused): [`Self::take_input`] and
/// [`Self::take_output`] tell which entry counts.
#[derive(Debug, Default)]
pub(crate) struct Work {
    /// Has input (read datagrams, events) or anything else to service.
    dirty: bool,
    /// Only has forwarded packets to send (set by the fan-out, `core/forward.rs`): serviced
    /// for its writes and timer only, without the `poll_event`/`poll_read` sweeps of `rtc`'s
    /// handler pipeline (a write of RTP raises no event and queues nothing to read).
    written: bool,
    /// Its writes were sent by a bounded step (`Core::flush_input_step`) but its timer not
    /// asked yet: that is done once per loop turn, by `Core::flush_input` after its last slice.
    drained: bool,
    /// On `Core::inputs` / `Core::outputs`.
    on_inputs: bool,
    on_outputs: bool,
}

impl Work {
    /// Input to service: flag it and put the connection `ci` on `inputs` (once).
    pub fn mark_dirty(&mut self, ci: ConnKey, inputs: &mut Vec<ConnKey>) {
        self.dirty = true;
        if !self.on_inputs {
            self.on_inputs = true;
            inputs.push(ci);
        }
    }

    /// Forwarded packets were written to it: flag it and put `ci` on `outputs` (once). True
    /// when it was not flagged written yet (the caller may list it for its step).
    pub fn mark_written(&mut self, ci: ConnKey, outputs: &mut Vec<ConnKey>) -> bool {
        let fresh = !self.written;
        self.written = true;
        if !self.on_outputs {
            self.on_outputs = true;
            outputs.push(ci);
        }
        fresh
    }

    /// Its writes were sent by a step: written becomes drained (it stays on `outputs`). True
    /// when it was written.
    pub fn drain(&mut self) -> bool {
        if !self.written {
            return false;
        }
        self.written = false;
        self.drained = true;
        true
    }

    pub fn dirty(&self) -> bool {
        self.dirty
    }

    pub fn any(&self) -> bool {
        self.dirty || self.written || self.drained
    }

    /// An entry of `inputs` is handled: it leaves the list. True when it counts (the
    /// connection was on the list, not a second entry of it).
    pub fn take_input(&mut self) -> bool {
        std::mem::replace(&mut self.on_inputs, false)
    }

    /// An entry of `outputs` is handled: as [`Self::take_input`].
    pub fn take_output(&mut self) -> bool {
        std::mem::replace(&mut self.on_outputs, false)
    }

    /// Servicing starts: every flag is cleared; true when it had input. (It may stay on the
    /// lists: those entries are skipped as having nothing to do.)
    pub fn begin_service(&mut self) -> bool {
        let input = self.dirty;
        self.dirty = false;
        self.written = false;
        self.drained = false;
        input
    }

    /// Whether the promise holds: a flagged connection is on its list.
    pub fn listed(&self) -> bool {
        (!self.dirty || self.on_inputs) && (!(self.written || self.drained) || self.on_outputs)
    }
}
