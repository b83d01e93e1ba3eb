// The call as the user sees it: joins, keeps one CallSession alive, and rejoins with backoff when
// the WebSocket or ICE drops. Exposes a single `state` for the UI:
//   connecting -> connected <-> reconnecting;  left (user left) / failed (fatal error: `failure`).
import { CallSession } from './session.js';
import { signallingUrl } from './signalling.js';
import { isExpired } from './token.js';

const RETRY_MS = [1000, 2000, 4000, 8000, 10000];

export class Call extends EventTarget {
  /**
   * @param {{token: string, claims: object|null, room: import('./room.js').Room,
   *          media: import('./media.js').LocalMedia, publish: boolean}} opts
   */
  constructor({ token, claims, room, media, publish }) {
    super();
    this.token = token;
    this.claims = claims;
    this.room = room;
    this.media = media;
    this.publish = publish;
    this.session = null;
    this.state = 'idle';
    this.failure = null;          // { code, message } when state is 'failed'
    this.attempt = 0;
    this.retryTimer = null;
    this.lostWhy = '';
    this.mediaStates = { publisher: 'new', subscriber: 'new' };
    this.resumes = 0;             // signalling drops survived as the same participant
    this.mediaResets = 0;         // of which the media had failed and was started over
  }

  setState(state, extra) {
    this.state = state;
    if (extra) Object.assign(this, extra);
    this.dispatchEvent(new CustomEvent('state', { detail: { state } }));
  }

  async start() {
    this.setState('connecting');
    await this.connect();
  }

  async connect() {
    this.retryTimer = null;
    if (this.state === 'left' || this.state === 'failed') return;
    if (isExpired(this.claims)) { this.fail('token_expired', ''); return; }
    const session = new CallSession({
      url: signallingUrl(), token: this.token, room: this.room, media: this.media,
      publish: this.publish && !!this.media?.hasAny,
    });
    session.addEventListener('lost', (e) => this.onLost(session, e.detail.why));
    session.addEventListener('resuming', () => {
      if (session !== this.session) return;
      this.lostWhy = 'signalling dropped';
      this.setState('reconnecting');
    });
    session.addEventListener('resumed', () => {
      if (session !== this.session) return;
      this.resumes += 1;
      this.attempt = 0;
      this.setState('connected');
    });
    session.addEventListener('media-reset', () => {
      // Resumed after our media failed: new peer connections, same participant and UI.
      if (session !== this.session) return;
      this.mediaResets += 1;
      this.mediaStates = { publisher: 'new', subscriber: 'new' };
      this.dispatchEvent(new Event('media-state'));
    });
    session.addEventListener('ended', (e) => this.onEnded(session, e.detail.reason));
    session.addEventListener('fatal', (e) => this.fail(e.detail.code, e.detail.message));
    session.addEventListener('server-error', (e) => this.dispatchEvent(new CustomEvent('server-error', { detail: e.detail })));
    session.addEventListener('media-state', (e) => {
      if (session !== this.session) return;
      this.mediaStates[e.detail.kind] = e.detail.state;
      this.dispatchEvent(new Event('media-state'));
    });
    session.addEventListener('own-tracks', () => this.dispatchEvent(new Event('own-tracks')));
    session.addEventListener('presentation-stopped', (e) => this.dispatchEvent(new CustomEvent('presentation-stopped', { detail: e.detail })));
    session.addEventListener('lobby', (e) => this.dispatchEvent(new CustomEvent('lobby', { detail: e.detail })));
    try {
      await session.start();
    } catch (err) {
      if (err.fatal) this.fail(err.code, err.message);
      else this.retry(err.message);
      return;
    }
    if (this.state === 'left' || this.state === 'failed') { session.leave(); return; }
    this.session = session;
    this.mediaStates = { publisher: 'new', subscriber: 'new' };
    this.attempt = 0;
    this.setState('connected');
  }

  onLost(session, why) {
    if (session !== this.session) return;
    this.retry(why);
  }

  onEnded(session, reason) {
    if (session !== this.session) return;
    this.session = null;
    if (reason === 'replaced' || reason === 'removed' || reason === 'room_ended') this.fail(reason, '');
    else if (reason === 'client_request') this.setState('left');
    else this.retry(`server: ${reason}`); // server_shutdown, media_failed, disconnected
  }

  retry(why) {
    if (this.state === 'left' || this.state === 'failed') return;
    this.session?.close();
    this.session = null;
    this.lostWhy = why;
    const delay = RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)];
    this.attempt += 1;
    this.nextRetryAt = Date.now() + delay;
    this.setState('reconnecting');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Retry now instead of waiting for the backoff timer. */
  retryNow() {
    if (this.state !== 'reconnecting' || this.session?.resuming) return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  fail(code, message) {
    clearTimeout(this.retryTimer);
    this.session?.close();
    this.session = null;
    this.setState('failed', { failure: { code, message } });
  }

  leave() {
    clearTimeout(this.retryTimer);
    this.session?.leave();
    this.session = null;
    this.setState('left');
  }

  /** Mute or unmute our microphone/camera locally and tell the others. */
  setMuted(kind, muted) {
    this.media.setEnabled(kind, !muted);
    this.session?.setMuted(kind, muted);
  }

  async switchDevice(kind, deviceId) {
    const track = await this.media.switchDevice(kind, deviceId);
    if (track) await this.session?.replaceTrack(kind, track);
    return !!track;
  }

  setSpotlight(participantId) {
    return this.session?.setSpotlight(participantId) ?? false;
  }

  sendChat(text, to) { return this.session?.sendChat(text, to) ?? false; }
  setHand(raised) { return this.session?.setHand(raised) ?? false; }
  giveFloor(participantId) { return this.session?.giveFloor(participantId) ?? false; }

  get pcs() { return this.session?.pcs ?? { publisher: null, subscriber: null }; }
  get wsRttMs() { return this.session?.sig?.rttMs ?? null; }
}
