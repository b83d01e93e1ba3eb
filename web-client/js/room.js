// What this page knows about the room: who is in it, their published tracks (and mute state),
// which received MediaStreamTracks belong to whom, who is speaking, and the spotlight.
// Views listen for `change` and re-sync; changes are batched to one event per microtask.

export class Participant {
  constructor(info, seq) {
    this.id = info.id;
    this.identity = info.identity ?? '';
    this.name = info.name || info.identity || info.id;
    this.role = info.role ?? 'participant';
    this.seq = seq;                 // join order, used for the wall order and the spotlight tour
    this.tracks = new Map();        // track id -> { id, kind, mid, muted }
    for (const t of info.tracks ?? []) this.tracks.set(t.id, { ...t });
    this.media = { audio: null, video: null, screen: null, screen_audio: null }; // { track, receiver, mid, trackId } from the subscriber PC
    this.speaking = false;
    this.audioLevel = 0;
  }

  /** The camera (video) or microphone (audio) track; a screen share is not the camera. */
  published(kind) {
    for (const t of this.tracks.values()) if (t.kind === kind && !isScreen(t.source)) return t;
    return null;
  }

  /** Muted when no track of that kind is published or it is marked muted. */
  isMuted(kind) {
    const t = this.published(kind);
    return !t || t.muted;
  }
}

function isScreen(source) { return source === 'screen' || source === 'screen_audio'; }

export class Room extends EventTarget {
  constructor() {
    super();
    this.self = null;               // { id, identity, name, role }
    this.name = '';
    this.spotlight = null;
    this.presentation = null;       // { participant_id, track_id } of the room's screen share
    this.participants = new Map();
    this.seq = 0;
    this.pending = null;
    this.chat = [];                 // chat messages, oldest first (present.js shows them)
    this.hands = [];                // raised hands in order: { participant_id, name, at }
    this.floor = null;              // the last `floor_given`: { participant_id, by }
  }

  changed(what) {
    if (!this.pending) {
      this.pending = new Set();
      queueMicrotask(() => {
        const detail = { what: this.pending };
        this.pending = null;
        this.dispatchEvent(new CustomEvent('change', { detail }));
      });
    }
    this.pending.add(what);
  }

  /** Participants in join order (the wall order). */
  list() {
    return [...this.participants.values()].sort((a, b) => a.seq - b.seq);
  }

  get(id) { return this.participants.get(id) ?? null; }

  /** The room is being recorded (`recording {active, started_at}`): the REC badge. */
  setRecording(active, startedAt) {
    this.recording = active ? { startedAt: startedAt ?? null } : null;
    this.changed('recording');
  }

  /** Replace the state from a `joined` message (first join and every rejoin). */
  reset(joined) {
    this.self = { id: joined.participant_id, identity: joined.identity, name: joined.name, role: joined.role };
    this.name = joined.room;
    this.spotlight = joined.spotlight ?? null;
    this.recording = null; // a `recording {active: true}` follows `joined` when it records
    const keep = new Map();
    for (const info of joined.participants ?? []) {
      const old = this.participants.get(info.id);
      const p = new Participant(info, old ? old.seq : ++this.seq);
      keep.set(info.id, p);
    }
    this.participants = keep;
    // A new session: the server sends `hands` only when a hand is up, `chat_history` only when
    // there is chat; a resume keeps what we have.
    if (!joined.resumed) { this.hands = []; this.changed('hands'); }
    this.changed('participants');
    this.changed('spotlight');
  }

  /** `chat`: one delivered message (kept to the last 200). */
  addChat(entry) {
    if (!entry?.id || this.chat.some((c) => c.id === entry.id)) return;
    this.chat.push(entry);
    if (this.chat.length > 200) this.chat.splice(0, this.chat.length - 200);
    this.changed('chat');
  }

  /** `chat_history`: the room's recent messages for a new session. */
  setChatHistory(messages) {
    const seen = new Set((messages ?? []).map((m) => m.id));
    this.chat = [...(messages ?? []), ...this.chat.filter((c) => !seen.has(c.id))];
    this.changed('chat');
  }

  /** `hands`: the whole ordered list. */
  setHands(hands) {
    this.hands = hands ?? [];
    this.changed('hands');
  }

  setFloor(msg) {
    this.floor = { participant_id: msg.participant_id, by: msg.by ?? null };
    this.changed('floor');
  }

  /** Whether our own hand is up. */
  handRaised() {
    return this.hands.some((h) => h.participant_id === this.self?.id);
  }

  addParticipant(info) {
    if (!info?.id || info.id === this.self?.id) return;
    const old = this.participants.get(info.id);
    const p = new Participant(info, old ? old.seq : ++this.seq);
    if (old) p.media = old.media;
    this.participants.set(info.id, p);
    this.changed('participants');
  }

  removeParticipant(id) {
    if (this.participants.delete(id)) this.changed('participants');
    if (this.spotlight === id) { this.spotlight = null; this.changed('spotlight'); }
  }

  trackPublished(participantId, track) {
    const p = this.participants.get(participantId);
    if (!p) return;
    p.tracks.set(track.id, { ...track });
    this.changed('tracks');
  }

  trackUnpublished(participantId, trackId) {
    const p = this.participants.get(participantId);
    if (!p || !p.tracks.delete(trackId)) return;
    for (const kind of ['audio', 'video', 'screen', 'screen_audio']) if (p.media[kind]?.trackId === trackId) p.media[kind] = null;
    this.changed('tracks');
  }

  trackMuted(participantId, trackId, muted) {
    const t = this.participants.get(participantId)?.tracks.get(trackId);
    if (!t) return;
    t.muted = !!muted;
    this.changed('muted');
  }

  setSpotlight(id) {
    this.spotlight = id ?? null;
    this.changed('spotlight');
  }

  /** The room's presentation (`joined.presentation`, `presentation`): everyone's main view. */
  setPresentation(p) {
    this.presentation = p?.participant_id ? { participant_id: p.participant_id, track_id: p.track_id } : null;
    this.changed('presentation');
  }

  /** The received screen track of the presentation (null: not received yet, or ours). */
  presentationTrack() {
    const pr = this.presentation;
    const m = pr && this.participants.get(pr.participant_id)?.media.screen;
    return m && m.trackId === pr.track_id ? m.track : null;
  }

  /** Set who each received track belongs to: entries { mid, participantId, trackId, kind, track, receiver }. */
  setMedia(entries) {
    for (const p of this.participants.values()) p.media = { audio: null, video: null, screen: null, screen_audio: null };
    for (const e of entries) {
      const p = this.participants.get(e.participantId);
      if (!p) continue;
      const source = e.source ?? p.tracks.get(e.trackId)?.source;
      // A screen share and its sound get their own slots (the sound plays beside the mic).
      const slot = source === 'screen' || source === 'screen_audio' ? source : e.kind;
      if (!p.media[slot]) p.media[slot] = e;
    }
    this.changed('media');
  }

  /** Speaking as heard here (from the received audio's level). */
  setSpeaking(id, speaking, level) {
    const p = this.participants.get(id);
    if (!p) return;
    p.audioLevel = level;
    p.localSpeaking = speaking;
    this.refreshSpeaking(p);
  }

  /** The server's `speakers` message: who speaks (by their RFC 6464 levels), and whose audio is
   *  forwarded at all (the loudest few). */
  setServerSpeakers(speaking, forwarded) {
    const s = new Set(speaking ?? []);
    const f = new Set(forwarded ?? []);
    for (const p of this.participants.values()) {
      p.serverSpeaking = s.has(p.id);
      p.forwarded = f.has(p.id);
      this.refreshSpeaking(p);
    }
  }

  refreshSpeaking(p) {
    const speaking = !!(p.localSpeaking || p.serverSpeaking);
    if (p.speaking !== speaking) { p.speaking = speaking; this.changed('speaking'); }
  }

  /** The participant every site shows large: the spotlight, else the (first) host. */
  mainParticipantId() {
    if (this.spotlight && (this.participants.has(this.spotlight) || this.spotlight === this.self?.id)) return this.spotlight;
    if (this.self?.role === 'host') return null;
    const host = this.list().find((p) => p.role === 'host');
    return host ? host.id : (this.list()[0]?.id ?? null);
  }

  /** Sites the host tours through, in wall order (hosts excluded). */
  tourOrder() {
    return this.list().filter((p) => p.role !== 'host').map((p) => p.id);
  }
}
