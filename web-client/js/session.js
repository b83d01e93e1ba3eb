// One signalling session: the `/rtc` WebSocket, the `join`, and the two peer connections
// (publisher: we offer our camera+mic; subscriber: the server offers everyone else's tracks).
// It updates the Room and reports how it ended: `lost` (network; the Call retries), `ended`
// (the server sent `leave`), or a fatal error code. When only the WebSocket drops, the session
// first *resumes* (`join.resume` with the token from `joined`): same participant, same peer
// connections, reported as `resuming` then `resumed`. When the *media* is gone (one of our peer
// connections failed, or the server removed us with `leave {resumable: true}` after its ICE
// failed) the session resumes too, asking for a media reset: the server answers
// `joined {media_reset: true}`, and both peer connections are replaced and the camera and mic
// published again, still as the same participant. If that fails it is `lost` and the Call
// rejoins with a new CallSession.
import { Signalling, PROTOCOL_VERSION } from './signalling.js';
import { QUALITY } from './media.js';

const RTC_CONFIG = { iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };
/** `joined.ice_servers` / the `ice_servers` message as RTCIceServer entries. */
export function toRtcIceServers(list) {
  return (list ?? []).filter((s) => Array.isArray(s?.urls) && s.urls.length)
    .map((s) => ({ urls: s.urls, username: s.username || undefined, credential: s.credential || undefined }));
}
/** How many `redirect`s in a row a join follows (docs/protocol.md). */
const MAX_REDIRECTS = 3;
const FATAL = new Set(['unsupported_version', 'invalid_token', 'token_expired', 'wrong_room', 'server_shutting_down', 'cluster_unavailable',
  'refused', 'not_invited', 'session_ended', 'not_yet_valid', 'replaced', 'link_revoked', 'banned']);
const ICE_CONNECT_TIMEOUT_MS = 20000;

/**
 * Video encodings to send. From 640 px wide up, three simulcast layers by RID, low to high
 * (`q` quarter, `h` half, `f` full size; the server relies on this order) so the server can give
 * a small wall tile the small layer and a main view the large one; below that one stream.
 * The browser itself drops layers its resolution or bandwidth cannot carry.
 */
function sendEncodings(q, track) {
  const width = track.getSettings?.().width ?? q.width;
  if (width < 640) return [{ maxBitrate: q.maxBitrate }];
  return [
    { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: Math.round(q.maxBitrate * 0.15) },
    { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: Math.round(q.maxBitrate * 0.35) },
    { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: q.maxBitrate },
  ];
}
const ICE_DISCONNECTED_GRACE_MS = 6000;
// The server keeps a dropped participant for `server.resume_grace` (30 s by default).
const RESUME_WINDOW_MS = 25000;
const RESUME_BACKOFF_MS = [250, 500, 1000, 2000];

export class SessionError extends Error {
  constructor(code, message) { super(message || code); this.code = code; }
  get fatal() { return FATAL.has(this.code); }
}

export class CallSession extends EventTarget {
  /**
   * @param {{url: string, token: string, room: import('./room.js').Room,
   *          media: import('./media.js').LocalMedia|null, publish: boolean}} opts
   */
  constructor({ url, token, room, media, publish }) {
    super();
    this.url = url;
    this.firstUrl = url;            // any node of a cluster: it redirects to the room's node
    this.token = token;
    this.room = room;
    this.media = media;
    this.wantPublish = publish;
    this.pcs = { publisher: null, subscriber: null };
    this.canTrickle = { publisher: false, subscriber: false };
    this.pendingCandidates = { publisher: [], subscriber: [] };
    this.pubTransceivers = {};      // kind -> RTCRtpTransceiver
    this.ownTracks = {};            // kind -> server track id (learnt from track_published)
    this.subMap = new Map();        // subscriber mid -> { mid, participantId, trackId, kind, track, receiver }
    this.msidGuess = new Map();     // subscriber mid -> fallback from the SDP msid
    this.joined = false;
    this.iceServers = [];           // from joined.ice_servers (TURN with per-join credentials)
    this.done = false;
    this.endInfo = null;            // { kind: 'fatal'|'ended'|'left', ... }
    this.timers = new Set();
  }

  /** Connect and join. Resolves with the `joined` message; rejects with SessionError. */
  start() {
    return new Promise((resolve, reject) => {
      this.joinWaiter = { resolve, reject };
      this.redirects = 0;
      this.openJoin(this.url);
    });
  }

  /** Open the signalling socket at `url` and send `join` (again after a `redirect`). */
  openJoin(url) {
    const sig = new Signalling(url, (m) => this.onMessage(m));
    this.sig = sig;
    // A socket closed because of a `redirect` is not the end of the join.
    sig.addEventListener('close', (e) => { if (!sig.redirected) this.onSocketClose(e.detail); });
    sig.addEventListener('handler-error', (e) => console.warn('rakor: message handling failed', e.detail.msg?.type, e.detail.err));
    sig.open().then(() => {
      sig.send({ type: 'join', version: PROTOCOL_VERSION, token: this.token });
      clearTimeout(this.joinTimer);
      this.joinTimer = this.later(() => this.failJoin(new SessionError('timeout', 'no answer to join')), 15000);
    }, (err) => { if (!sig.redirected) this.failJoin(new SessionError('network', err.message)); });
  }

  /**
   * `redirect`: a node of a cluster sends us to the node that holds the room. Send the same
   * `join` there, at most MAX_REDIRECTS times in a row (docs/protocol.md).
   */
  onRedirect(msg) {
    const url = typeof msg.url === 'string' ? msg.url : '';
    this.redirects = (this.redirects ?? 0) + 1;
    const bad = !/^wss?:\/\//.test(url) ? `redirect to a non-WebSocket URL: ${url}`
      : this.redirects > MAX_REDIRECTS ? `more than ${MAX_REDIRECTS} redirects in a row` : null;
    if (this.resumeWaiter) {
      // A resume answered with a redirect: the next attempt goes to the room's node.
      const w = this.resumeWaiter;
      w.sig.redirected = true;
      if (bad) { this.endInfo = { kind: 'fatal', code: 'redirect', message: bad }; w.done('gone'); return; }
      this.url = url;
      this.resumeFailed = false; // follow the redirect on the next attempt
      w.sig.close();
      w.done('retry');
      return;
    }
    if (this.joined) return; // only ever an answer to `join`
    if (bad) { this.failJoin(new SessionError('redirect', bad)); return; }
    this.sig.redirected = true;
    this.sig.close();
    this.url = url; // resumes go straight to the room's node
    this.openJoin(url);
  }

  failJoin(err) {
    if (this.joined || !this.joinWaiter) return;
    const { reject } = this.joinWaiter;
    this.joinWaiter = null;
    this.close();
    reject(err);
  }

  later(fn, ms) {
    const id = setTimeout(() => { this.timers.delete(id); fn(); }, ms);
    this.timers.add(id);
    return id;
  }

  send(msg) { return this.sig?.send(msg) ?? false; }

  async onMessage(msg) {
    if (this.done) return;
    switch (msg.type) {
      case 'joined':
        if (Array.isArray(msg.ice_servers)) this.setIceServers(msg.ice_servers);
        return this.joined ? this.onResumedJoined(msg) : this.onJoined(msg);
      case 'ice_servers': return this.setIceServers(msg.ice_servers);
      case 'answer':
        if (msg.pc === 'publisher' && this.pcs.publisher) {
          await this.pcs.publisher.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
          this.watchConnect('publisher');
          if (this.renegotiateAgain) {
            this.renegotiateAgain = false;
            await this.renegotiatePublisher();
          }
        }
        return;
      case 'offer':
        if (msg.pc === 'subscriber') return this.onSubscriberOffer(msg);
        return;
      case 'candidate': {
        const pc = this.pcs[msg.pc];
        if (!pc || !msg.candidate) return;
        const c = msg.candidate.candidate ? msg.candidate : null; // '' = end-of-candidates
        // Server candidates are also in its SDP: duplicates may be refused; that is fine.
        await pc.addIceCandidate(c ?? undefined).catch(() => {});
        return;
      }
      case 'participant_joined': this.room.addParticipant(msg.participant); return;
      case 'participant_left': this.room.removeParticipant(msg.participant_id); return;
      case 'track_published':
        if (msg.participant_id === this.room.self?.id) this.onOwnTrack(msg.track);
        else this.room.trackPublished(msg.participant_id, msg.track);
        return;
      case 'track_unpublished': this.room.trackUnpublished(msg.participant_id, msg.track_id); return;
      case 'track_muted': this.room.trackMuted(msg.participant_id, msg.track_id, msg.muted); return;
      case 'spotlight': this.room.setSpotlight(msg.participant_id ?? null); return;
      case 'presentation': this.room.setPresentation(msg.presentation ?? null); return;
      case 'presentation_stopped':
        // A host stopped our screen share or took over: stop capturing, drop the track.
        this.stopScreen({ tellServer: false });
        this.dispatchEvent(new CustomEvent('presentation-stopped', { detail: msg }));
        return;
      case 'recording': this.room.setRecording(!!msg.active, msg.started_at); return;
      case 'speakers': this.room.setServerSpeakers(msg.speaking, msg.forwarded); return;
      case 'publisher_pause': return this.onPublisherPause(msg);
      case 'publisher_layers': return this.onPublisherLayers(msg);
      case 'leave':
        // `resumable`: our media failed and the server holds the session; the socket close
        // that follows starts a resume with a media reset (see onSocketClose).
        if (msg.resumable && this.resumeToken) this.mediaLost = true;
        else this.endInfo = { kind: 'ended', reason: msg.reason };
        return;
      case 'error': return this.onError(msg);
      case 'redirect': return this.onRedirect(msg);
      case 'moderator_mute':
        // A moderator's mute: only a moderator lifts it (the server refuses our unmute).
        this.moderatorMuted = !!msg.muted;
        this.dispatchEvent(new CustomEvent('moderator-mute', { detail: msg }));
        return;
      case 'lobby': return this.onLobby(msg);
      case 'chat': this.room.addChat(msg); return;
      case 'chat_history': this.room.setChatHistory(msg.messages); return;
      case 'hands': this.room.setHands(msg.hands); return;
      case 'floor_given': this.room.setFloor(msg); return;
      default: return; // pong and unknown types are ignored (protocol rule)
    }
  }

  /** Waiting for an operator in the lobby: no join timeout while waiting (see docs/protocol.md). */
  onLobby(msg) {
    clearTimeout(this.joinTimer);
    this.timers.delete(this.joinTimer);
    if (msg.status === 'admitted') {
      this.joinTimer = this.later(() => this.failJoin(new SessionError('timeout', 'no answer to join')), 15000);
    }
    this.dispatchEvent(new CustomEvent('lobby', { detail: { status: msg.status } }));
  }

  onError(msg) {
    if (this.resumeWaiter && msg.code === 'cluster_unavailable') {
      // The cluster cannot place the room yet (its node died and Redis is down or re-forming):
      // try again, through the URL first used.
      this.resumeFailed = true;
      this.resumeWaiter.done('retry');
      return;
    }
    if (this.resumeWaiter && FATAL.has(msg.code)) {
      // The resume was refused for good (e.g. `replaced`): stop retrying.
      this.endInfo = { kind: 'fatal', code: msg.code, message: msg.message };
      this.resumeWaiter.done('gone');
      return;
    }
    if (!this.joined || FATAL.has(msg.code)) {
      this.endInfo = { kind: 'fatal', code: msg.code, message: msg.message };
      this.failJoin(new SessionError(msg.code, msg.message));
      return;
    }
    // Someone else presents: our screen track was not published; take it off again.
    if (msg.code === 'presentation_active') this.stopScreen({ tellServer: false });
    // Its screen audio is refused with it (`forbidden`): already taken off, nothing to show.
    if (msg.code === 'forbidden' && msg.request_type === 'offer' && !this.screenTrack) return;
    this.dispatchEvent(new CustomEvent('server-error', { detail: msg }));
  }

  async onJoined(msg) {
    this.joined = true;
    this.resumeToken = msg.resume_token || null;
    this.room.reset(msg);
    this.room.setPresentation(msg.presentation ?? null);
    this.sig.startKeepalive();
    this.pcs.subscriber = this.newPc('subscriber');
    this.pcs.subscriber.ontrack = (e) => {
      const s = e.streams?.[0];
      if (s && e.transceiver?.mid != null) {
        this.msidGuess.set(e.transceiver.mid, { participant_id: s.id, track_id: e.track.id, kind: e.track.kind });
      }
    };
    if (this.wantPublish && this.media?.hasAny) {
      try {
        await this.publish();
      } catch (err) {
        // Stay in the room receive-only rather than failing the join.
        console.warn('rakor: publishing failed', err);
        this.dispatchEvent(new CustomEvent('server-error', { detail: { code: 'publish_failed', message: String(err?.message ?? err) } }));
      }
    }
    const w = this.joinWaiter;
    this.joinWaiter = null;
    w?.resolve(msg);
  }

  /** New TURN credentials: for connections made from now on and for ICE restarts. */
  setIceServers(list) {
    this.iceServers = toRtcIceServers(list);
    for (const pc of Object.values(this.pcs)) {
      if (!pc || pc.connectionState === 'closed') continue;
      try { pc.setConfiguration({ ...pc.getConfiguration(), iceServers: this.iceServers }); } catch { /* kept as is */ }
    }
  }

  newPc(kind) {
    const pc = new RTCPeerConnection({ ...RTC_CONFIG, iceServers: this.iceServers });
    pc.onicecandidate = (e) => {
      const c = e.candidate ? stripNulls(e.candidate.toJSON()) : { candidate: '' };
      if (this.canTrickle[kind]) this.send({ type: 'candidate', pc: kind, candidate: c });
      else this.pendingCandidates[kind].push(c);
    };
    pc.onconnectionstatechange = () => this.onPcState(kind, pc);
    return pc;
  }

  /** After the first negotiation of `kind`: ICE must connect within a deadline. */
  watchConnect(kind) {
    if (this.watching?.[kind]) return;
    this.watching = { ...this.watching, [kind]: true };
    const pc = this.pcs[kind];
    this.later(() => {
      if (!this.done && this.pcs[kind] === pc && pc.connectionState !== 'connected') this.lose(`${kind} ICE did not connect`);
    }, ICE_CONNECT_TIMEOUT_MS);
  }

  onPcState(kind, pc) {
    if (this.pcs[kind] !== pc) return; // a connection replaced by a media reset
    this.dispatchEvent(new CustomEvent('media-state', { detail: { kind, state: pc.connectionState } }));
    if (pc.connectionState === 'failed') this.mediaFailed(`${kind} connection failed`);
    if (pc.connectionState === 'disconnected') {
      this.later(() => {
        if (this.pcs[kind] === pc && pc.connectionState === 'disconnected') this.mediaFailed(`${kind} disconnected`);
      }, ICE_DISCONNECTED_GRACE_MS);
    }
  }

  /** Our media is gone: resume as the same participant with a media reset (the server may
   *  have parked us already, or not have noticed yet). Without a resume token: rejoin. */
  mediaFailed(why) {
    if (this.done) return;
    if (!this.resumeToken) { this.lose(why); return; }
    this.mediaLost = true;
    if (this.resuming) return; // the running resume asks for the reset
    this.sig?.close(4001, 'media lost'); // its close starts the resume (onSocketClose)
  }

  /** Trickle the candidates gathered before our SDP was sent. */
  flushCandidates(kind) {
    this.canTrickle[kind] = true;
    for (const c of this.pendingCandidates[kind].splice(0)) this.send({ type: 'candidate', pc: kind, candidate: c });
  }

  async publish() {
    const pc = this.pcs.publisher = this.newPc('publisher');
    const q = QUALITY[this.media.quality] ?? QUALITY.medium;
    for (const track of [this.media.audioTrack, this.media.videoTrack]) {
      if (!track) continue;
      const init = { direction: 'sendonly', streams: [this.media.stream] };
      if (track.kind === 'video') init.sendEncodings = sendEncodings(q, track);
      this.pubTransceivers[track.kind] = pc.addTransceiver(track, init);
    }
    await pc.setLocalDescription(await pc.createOffer());
    this.send({ type: 'offer', pc: 'publisher', sdp: pc.localDescription.sdp, tracks: this.trackSources() });
    this.flushCandidates('publisher');
  }

  /** `offer.tracks`: the source of each sending transceiver, by mid (docs/protocol.md). */
  trackSources() {
    const source = { audio: 'microphone', video: 'camera', screen: 'screen', screen_audio: 'screen_audio' };
    return Object.entries(this.pubTransceivers)
      .filter(([, tr]) => tr.mid != null && !tr.stopped)
      .map(([key, tr]) => ({ mid: tr.mid, source: source[key] }));
  }

  /** Offer again on the publisher connection (after adding or removing the screen track).
   *  One offer at a time: a change while an answer is awaited waits for it. */
  async renegotiatePublisher() {
    const pc = this.pcs.publisher;
    if (!pc) return;
    if (pc.signalingState !== 'stable') {
      this.renegotiateAgain = true;
      return;
    }
    await pc.setLocalDescription(await pc.createOffer());
    this.send({ type: 'offer', pc: 'publisher', sdp: pc.localDescription.sdp, tracks: this.trackSources() });
    if (!this.canTrickle.publisher) this.flushCandidates('publisher');
  }

  /** Share a screen (a `getDisplayMedia` video track): a second video transceiver with source
   *  `screen`, and when the browser gave the tab's or system's sound (`audioTrack`), an audio
   *  transceiver with source `screen_audio`, in the same offer. The server makes them the room's
   *  presentation, or refuses them (`presentation_active`). */
  async shareScreen(track, audioTrack = null) {
    this.screenTrack = track;
    this.screenAudioTrack = audioTrack;
    if (!this.pcs.publisher) this.pcs.publisher = this.newPc('publisher');
    const stream = new MediaStream(audioTrack ? [track, audioTrack] : [track]);
    const init = { direction: 'sendonly', streams: [stream] };
    // Slides: keep the resolution, let the frame rate drop (text must stay legible).
    try { track.contentHint = 'detail'; } catch { /* not supported */ }
    this.pubTransceivers.screen = this.pcs.publisher.addTransceiver(track, init);
    if (audioTrack) {
      try { audioTrack.contentHint = 'music'; } catch { /* not supported */ }
      this.pubTransceivers.screen_audio = this.pcs.publisher.addTransceiver(audioTrack, init);
    }
    await this.renegotiatePublisher();
    this.dispatchEvent(new Event('own-tracks'));
  }

  /** Stop sharing: `unpublish` (unless the server already dropped it), remove the transceiver,
   *  renegotiate, stop the capture. */
  async stopScreen({ tellServer = true } = {}) {
    const tr = this.pubTransceivers.screen;
    const track = this.screenTrack;
    this.screenTrack = null;
    if (!tr) { track?.stop(); return; }
    delete this.pubTransceivers.screen;
    const id = this.ownTracks.screen;
    delete this.ownTracks.screen;
    if (tellServer && id) this.send({ type: 'unpublish', track_id: id });
    try { tr.sender.replaceTrack(null); tr.stop(); } catch { /* connection closed */ }
    track?.stop();
    // The screen's sound goes with it.
    const atr = this.pubTransceivers.screen_audio;
    const audioTrack = this.screenAudioTrack;
    this.screenAudioTrack = null;
    if (atr) {
      delete this.pubTransceivers.screen_audio;
      const aid = this.ownTracks.screen_audio;
      delete this.ownTracks.screen_audio;
      if (tellServer && aid) this.send({ type: 'unpublish', track_id: aid });
      try { atr.sender.replaceTrack(null); atr.stop(); } catch { /* connection closed */ }
    }
    audioTrack?.stop();
    if (!this.done) await this.renegotiatePublisher().catch((err) => console.warn('rakor: renegotiation failed', err));
    this.dispatchEvent(new Event('own-tracks'));
    this.dispatchEvent(new Event('screen-ended'));
  }

  /** Host: stop another site's presentation. */
  stopPresentation() {
    return this.send({ type: 'moderate', action: 'stop_presentation' });
  }

  /** A remote video's tile was shown, hidden or resized: tell the server when that changes what
   *  it should send (visibility, or the simulcast size class: up to 240, 480, larger). */
  setTrackView(trackId, visible, width, height) {
    this.trackViews ??= new Map();
    const sizeClass = height <= 240 ? 0 : height <= 480 ? 1 : 2;
    const key = visible ? `v${sizeClass}` : 'hidden';
    const was = this.trackViews.get(trackId)?.key;
    this.trackViews.set(trackId, { visible, width, height, key });
    if (was === key) return;
    this.send({ type: 'track_settings', track_id: trackId, visible, width, height });
  }

  /** Dynacast: nobody shows our video (`publisher_pause`), or only some simulcast layers are
   *  needed (`publisher_layers`): record it, then apply both to the sender's encodings. */
  onPublisherPause(msg) {
    (this.pausedTracks ??= new Map()).set(msg.track_id, !!msg.paused);
    return this.applySendState(msg.track_id);
  }

  onPublisherLayers(msg) {
    (this.trackLayers ??= new Map()).set(msg.track_id, msg.rids ?? []);
    return this.applySendState(msg.track_id);
  }

  async applySendState(trackId) {
    const kind = Object.keys(this.ownTracks).find((k) => this.ownTracks[k] === trackId);
    const sender = kind && this.pubTransceivers[kind]?.sender;
    if (!sender) return;
    const params = sender.getParameters();
    if (!params.encodings?.length) return;
    // Per track: the camera and a screen share are paused and layered separately.
    const rids = this.trackLayers?.get(trackId);
    const layers = rids ? new Set(rids) : null;
    const paused = !!this.pausedTracks?.get(trackId);
    for (const e of params.encodings) e.active = !paused && (!e.rid || !layers || layers.has(e.rid));
    try {
      await sender.setParameters(params);
    } catch (err) {
      console.warn('rakor: could not change what the sender sends', err);
    }
  }

  onOwnTrack(track) {
    for (const [kind, tr] of Object.entries(this.pubTransceivers)) {
      if (tr.mid === track.mid) {
        this.ownTracks[kind] = track.id;
        if (kind === 'screen' || kind === 'screen_audio') continue;
        // The user may have muted before the server acknowledged the track.
        const muted = !this.media.enabled[kind];
        const held = kind === 'audio' && this.moderatorMuted && !muted;
        if (muted !== !!track.muted && !held) this.send({ type: 'mute_track', track_id: track.id, muted });
      }
    }
    this.dispatchEvent(new Event('own-tracks'));
  }

  async onSubscriberOffer(msg) {
    const pc = this.pcs.subscriber;
    if (!pc) return;
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    this.send({ type: 'answer', pc: 'subscriber', sdp: pc.localDescription.sdp });
    this.flushCandidates('subscriber');
    this.watchConnect('subscriber');
    this.updateSubscriptions(msg.tracks);
  }

  /** Map each active subscriber transceiver (mid) to the participant and track it carries. */
  updateSubscriptions(tracks) {
    const listed = new Map((tracks ?? []).map((t) => [t.mid, t]));
    const next = new Map();
    for (const tr of this.pcs.subscriber.getTransceivers()) {
      const mid = tr.mid;
      if (mid == null || tr.stopped) continue;
      const dir = tr.currentDirection;
      if (dir === 'inactive' || dir === 'stopped' || dir === 'sendonly') continue;
      const info = listed.get(mid) ?? this.subMap.get(mid) ?? this.msidGuess.get(mid);
      if (!info) continue;
      next.set(mid, {
        mid,
        participantId: info.participant_id ?? info.participantId,
        trackId: info.track_id ?? info.trackId,
        kind: info.kind ?? tr.receiver.track.kind,
        source: info.source ?? null,
        track: tr.receiver.track,
        receiver: tr.receiver,
      });
    }
    this.subMap = next;
    this.room.setMedia([...next.values()]);
  }

  setMuted(kind, muted) {
    const id = this.ownTracks[kind];
    if (kind === 'audio' && this.moderatorMuted && !muted) return;
    if (id) this.send({ type: 'mute_track', track_id: id, muted });
  }

  async replaceTrack(kind, track) {
    const sender = this.pubTransceivers[kind]?.sender;
    if (sender) await sender.replaceTrack(track);
  }

  setSpotlight(participantId) {
    return this.send({ type: 'spotlight', participant_id: participantId ?? null });
  }

  /** `chat {text, to?}` (`to`: host only, one participant). */
  sendChat(text, to) {
    return this.send(to ? { type: 'chat', text, to } : { type: 'chat', text });
  }

  setHand(raised) {
    return this.send({ type: 'hand', raised: !!raised });
  }

  giveFloor(participantId) {
    return this.send({ type: 'give_floor', participant_id: participantId });
  }

  /** Network trouble: tell the Call, which retries with a new session. */
  lose(why) {
    if (this.done) return;
    this.close();
    this.dispatchEvent(new CustomEvent('lost', { detail: { why } }));
  }

  onSocketClose(detail) {
    if (this.done) return;
    if (!this.joined) {
      if (this.endInfo?.kind === 'fatal') this.failJoin(new SessionError(this.endInfo.code, this.endInfo.message));
      else this.failJoin(new SessionError('network', `websocket closed (${detail.code})`));
      return;
    }
    const info = this.endInfo;
    if (!info && this.resumeToken && !this.resuming) {
      this.resume();
      return;
    }
    if (this.resuming) return; // a resume attempt's socket closed: the resume loop handles it
    this.close();
    if (info?.kind === 'fatal') this.dispatchEvent(new CustomEvent('fatal', { detail: info }));
    else if (info?.kind === 'ended') this.dispatchEvent(new CustomEvent('ended', { detail: info }));
    else this.dispatchEvent(new CustomEvent('lost', { detail: { why: `websocket closed (${detail.code})` } }));
  }

  /** Leave on purpose: tell the server, then close. */
  leave() {
    if (this.done) return;
    this.send({ type: 'leave' });
    this.close();
  }

  /** The socket dropped without `leave`: reconnect and continue as the same participant. */
  async resume() {
    this.resuming = true;
    this.dispatchEvent(new Event('resuming'));
    const deadline = Date.now() + RESUME_WINDOW_MS;
    for (let attempt = 0; !this.done && Date.now() < deadline; attempt++) {
      const outcome = await this.resumeOnce();
      if (this.done) return;
      if (outcome === 'resumed') {
        this.resuming = false;
        this.dispatchEvent(new Event('resumed'));
        return;
      }
      if (outcome === 'gone') break;
      await new Promise((r) => setTimeout(r, RESUME_BACKOFF_MS[Math.min(attempt, RESUME_BACKOFF_MS.length - 1)]));
    }
    this.resuming = false;
    if (this.done) return;
    this.close();
    if (this.endInfo?.kind === 'fatal') {
      this.dispatchEvent(new CustomEvent('fatal', { detail: this.endInfo }));
      return;
    }
    this.dispatchEvent(new CustomEvent('lost', { detail: { why: 'signalling dropped and could not resume' } }));
  }

  /** One attempt: 'resumed', 'gone' (the server no longer has the session) or 'retry'. */
  resumeOnce() {
    return new Promise((resolve) => {
      let settled = false;
      const done = (v) => { if (!settled) { settled = true; clearTimeout(timer); this.resumeWaiter = null; resolve(v); } };
      const timer = setTimeout(() => { sig.close(); done('retry'); }, 8000);
      // After a failed attempt, go back to the URL first used: the node we were on may be dead
      // (a cluster: any node redirects to the room's new node; docs/protocol.md).
      const url = this.resumeFailed ? this.firstUrl : this.url;
      this.resumeFailed = true; // until this attempt is answered
      const sig = new Signalling(url, (m) => this.onMessage(m));
      this.resumeWaiter = { sig, done };
      sig.addEventListener('close', () => done('retry'));
      sig.open().then(() => {
        this.sig = sig;
        const resume = { participant_id: this.room.self?.id, token: this.resumeToken };
        if (this.mediaLost) resume.media_reset = true;
        sig.send({ type: 'join', version: PROTOCOL_VERSION, token: this.token, resume });
      }, () => done('retry'));
    });
  }

  /** `joined` on a resume attempt's socket. */
  async onResumedJoined(msg) {
    const w = this.resumeWaiter;
    if (!w) return;
    this.resumeFailed = false;
    if (!msg.resumed) {
      // The session is gone (grace window over, or its node died): this joined a *new*
      // participant on this socket; leave it. The call then joins afresh through the URL
      // first used (Call.retry), with new peer connections (docs/protocol.md).
      w.sig.send({ type: 'leave' });
      w.done('gone');
      return;
    }
    // Continue: the new socket is ours; catch the room up.
    w.sig.addEventListener('close', (e) => this.onSocketClose(e.detail));
    w.sig.startKeepalive();
    const present = new Set((msg.participants ?? []).map((p) => p.id));
    for (const id of [...this.room.participants.keys()]) if (!present.has(id)) this.room.removeParticipant(id);
    for (const info of msg.participants ?? []) this.room.addParticipant(info);
    this.room.setSpotlight(msg.spotlight ?? null);
    this.room.setPresentation(msg.presentation ?? null);
    this.resumes = (this.resumes ?? 0) + 1;
    if (msg.media_reset) {
      this.mediaLost = false;
      this.mediaResets = (this.mediaResets ?? 0) + 1;
      await this.resetMedia();
    }
    w.done('resumed');
  }

  /** After `joined {media_reset: true}`: replace both peer connections (the server dropped
   *  ours), publish the same camera and mic again and wait for the fresh subscriber offer.
   *  The Room (participants, tiles, spotlight) and the local media stay as they are. */
  async resetMedia() {
    for (const pc of Object.values(this.pcs)) { try { pc?.close(); } catch { /* closed */ } }
    this.pcs = { publisher: null, subscriber: null };
    this.canTrickle = { publisher: false, subscriber: false };
    this.pendingCandidates = { publisher: [], subscriber: [] };
    if (this.screenTrack) {
      this.screenTrack.stop(); // a screen share does not survive a media reset
      this.screenTrack = null;
      this.dispatchEvent(new Event('screen-ended'));
    }
    this.pubTransceivers = {};
    this.ownTracks = {};
    this.subMap = new Map();
    this.msidGuess = new Map();
    this.watching = {};
    this.pausedTracks = new Map();
    this.trackLayers = new Map();
    this.trackViews = new Map(); // the server starts every leg visible: say again what is hidden
    this.room.setMedia([]);
    this.pcs.subscriber = this.newPc('subscriber');
    this.pcs.subscriber.ontrack = (e) => {
      const s = e.streams?.[0];
      if (s && e.transceiver?.mid != null) {
        this.msidGuess.set(e.transceiver.mid, { participant_id: s.id, track_id: e.track.id, kind: e.track.kind });
      }
    };
    if (this.wantPublish && this.media?.hasAny) {
      try {
        await this.publish();
      } catch (err) {
        console.warn('rakor: publishing again after a media reset failed', err);
        this.dispatchEvent(new CustomEvent('server-error', { detail: { code: 'publish_failed', message: String(err?.message ?? err) } }));
      }
    }
    this.dispatchEvent(new Event('media-reset'));
  }

  close() {
    if (this.done) return;
    this.done = true;
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    this.screenTrack?.stop();
    for (const pc of Object.values(this.pcs)) { try { pc?.close(); } catch { /* closed */ } }
    this.sig?.close();
  }
}

function stripNulls(obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj)) if (v !== null && v !== undefined) out[k] = v;
  return out;
}
