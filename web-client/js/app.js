// Entry point of the call page (`/join?token=...`): token check -> pre-join -> call, and the
// screens around it (left, error). Wires the Room, the Call and the views together.
import { applyI18n, bindLangToggle, formatNumber, hasKey, onLangChange, setText, t } from './i18n.js';
import { decodeToken, isExpired, tokenFromLocation } from './token.js';
import { LocalMedia, LevelMeter } from './media.js';
import { Room } from './room.js';
import { Call } from './call.js';
import { StatsMonitor } from './stats.js';
import { AudioSink } from './audio.js';
import { Stage } from './views/stage.js';
import { ParticipantList } from './views/participants.js';
import { Controls } from './views/controls.js';
import { ScreenShare } from './views/screenshare.js';
import { Banner } from './views/banner.js';
import { PresentPanel } from './views/present.js';
import { runPrejoin } from './views/prejoin.js';
import { installTestHooks, setTestContext } from './test-hooks.js';

const $ = (id) => document.getElementById(id);
const KNOWN_ERRORS = new Set(['missing_token', 'invalid_token', 'token_expired', 'wrong_room', 'unsupported_version',
  'server_shutting_down', 'cluster_unavailable', 'replaced', 'removed', 'unsupported_browser', 'limit_exceeded', 'forbidden',
  'refused', 'not_invited', 'session_ended', 'not_yet_valid', 'room_ended', 'link_revoked', 'banned', 'lobby_timeout']);

function show(screen) {
  for (const s of document.querySelectorAll('.screen')) s.hidden = s.id !== screen;
  document.body.dataset.screen = screen;
}

function showError(code, message) {
  const page = $('error-page');
  page.dataset.errorCode = code;
  const key = KNOWN_ERRORS.has(code) ? code : 'generic';
  setText($('err-title'), `error.${key}.title`);
  setText($('err-detail'), `error.${key}.detail`);
  setText($('err-code'), message ? 'error.codeWithMessage' : 'error.code', { code, message: message ?? '' });
  $('conn-state').hidden = true;
  $('net-quality').hidden = true;
  $('banner').hidden = true;
  show('error-page');
}

function main() {
  installTestHooks();
  bindLangToggle($('lang-toggle'));
  applyI18n();
  const token = tokenFromLocation();
  if (!token) return showError('missing_token');
  const claims = decodeToken(token);
  if (!claims) return showError('invalid_token');
  if (isExpired(claims)) return showError('token_expired');
  if (!window.RTCPeerConnection || !window.WebSocket) return showError('unsupported_browser');
  $('room-title').textContent = claims.room;
  document.title = `Rakor · ${claims.room}`;
  const media = new LocalMedia();
  const canPublish = claims.role !== 'viewer';
  show('prejoin');
  runPrejoin({ claims, media, canPublish }).then((choice) => {
    if (choice.expired) { media.stopTracks(); showError('token_expired'); return; }
    startCall({ token, claims, media, publish: choice.publish, canPublish });
  });
}

function startCall({ token, claims, media, publish }) {
  const isHost = claims.role === 'host';
  const room = new Room();
  const call = new Call({ token, claims, room, media, publish });
  const banner = new Banner($('banner'));
  const audio = new AudioSink($('audio-sink'));
  const onSpotlight = (id) => call.setSpotlight(id);
  // Tell the server which remote videos are on screen: hidden ones are not sent to us.
  const onTrackView = (trackId, visible, width, height) => call.session?.setTrackView(trackId, visible, width, height);
  const stage = new Stage({ root: $('call'), room, media, layout: isHost ? 'wall' : 'site', canSpotlight: isHost, onSpotlight, onTrackView,
    localScreen: () => call.session?.screenTrack ?? null });
  const people = new ParticipantList({ panel: $('participants-panel'), room, media, canSpotlight: isHost, onSpotlight });
  const controls = new Controls({ call, room, isHost, canPublish: publish, onLeave: () => call.leave() });
  const present = new PresentPanel({ call, room, isHost, canRaiseHand: !isHost });
  const screen = new ScreenShare({ call, room, isHost, canPublish: claims.role !== 'viewer', onChange: () => syncAll() });
  setTestContext({ call, room });
  $('call').dataset.strip = 'closed';
  $('participants-panel').hidden = !(isHost && window.innerWidth >= 1400);
  show('call');

  const syncAll = () => {
    stage.sync();
    people.sync();
    controls.render();
    present.render();
    screen.render();
    const tracks = new Map();
    for (const p of room.list()) {
      if (p.media.audio) tracks.set(p.id, p.media.audio.track);
      // The presentation's sound (`screen_audio`) plays beside the presenter's microphone.
      if (p.media.screen_audio) tracks.set(`${p.id}:screen_audio`, p.media.screen_audio.track);
    }
    audio.sync(tracks);
  };
  room.addEventListener('change', syncAll);
  // Everyone must see that the meeting is recorded: the red REC badge.
  room.addEventListener('change', () => { $('rec-badge').hidden = !room.recording || call.state === 'left'; });
  onLangChange(syncAll);
  // Closing the tab is leaving: tell the server now rather than letting it notice the socket.
  window.addEventListener('pagehide', () => { if (call.state === 'connected') call.leave(); });
  media.addEventListener('change', () => { stage.syncSelf(); people.sync(); controls.render(); watchSelfLevel(); });

  audio.addEventListener('blocked', () => banner.show('audio', {
    key: 'banner.audioBlocked', kind: 'warn', actionKey: 'banner.enableAudio',
    onAction: () => { audio.resume(); banner.hide('audio'); },
  }));

  // Our own speaking highlight, from the local microphone level.
  let selfMeter = null, selfTrack = null;
  function watchSelfLevel() {
    if (media.audioTrack === selfTrack) return;
    selfMeter?.stop();
    selfTrack = media.audioTrack;
    selfMeter = selfTrack ? new LevelMeter(selfTrack, (lvl) => stage.setSelfSpeaking(media.enabled.audio && lvl > 0.45)) : null;
  }
  if (publish) watchSelfLevel();

  const stats = new StatsMonitor(call, (net) => {
    setTestContext({ network: net });
    renderNetwork(net);
  });

  let wasReconnecting = false, countdown = null;
  function renderState() {
    const el = $('conn-state');
    const s = call.state;
    el.hidden = false;
    let key = `conn.${s}`;
    if (s === 'connected') {
      const states = Object.values(call.mediaStates).filter((x) => x !== 'new');
      if (states.some((x) => x === 'connecting' || x === 'disconnected')) key = 'conn.media';
    }
    el.dataset.state = s;
    setText(el, key);
    clearInterval(countdown);
    if (s === 'reconnecting') {
      wasReconnecting = true;
      const tick = () => banner.show('connection', {
        key: 'banner.reconnecting', kind: 'error',
        vars: { s: Math.max(0, Math.ceil((call.nextRetryAt - Date.now()) / 1000)) },
        actionKey: 'banner.retryNow', onAction: () => call.retryNow(),
      });
      tick();
      countdown = setInterval(tick, 1000);
    } else {
      banner.hide('connection');
      if (s === 'connected' && wasReconnecting) {
        wasReconnecting = false;
        banner.show('notice', { key: 'banner.reconnected', kind: 'ok', autoHideMs: 4000 });
      }
    }
    if (s === 'left') finish(() => show('left'));
    if (s === 'failed') finish(() => showError(call.failure?.code ?? 'generic', call.failure?.message));
  }
  function finish(then) {
    stats.stop();
    selfMeter?.stop();
    audio.clear();
    media.stopTracks();
    banner.clear();
    $('net-quality').hidden = true;
    $('conn-state').hidden = true;
    $('rec-badge').hidden = true;
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    $('rejoin-link').href = location.href;
    then();
  }
  function renderNetwork(net) {
    const el = $('net-quality');
    el.hidden = call.state !== 'connected';
    el.dataset.quality = net.grade;
    const vars = {
      rtt: net.rttMs === null ? '–' : formatNumber(net.rttMs),
      loss: net.loss === null ? '–' : formatNumber(net.loss * 100, 1),
    };
    setText(el, `net.${net.grade}`, vars);
    el.title = t('net.detail', vars);
    // Which path the media takes: UDP, TCP (ICE-TCP) or TURN/… (relayed).
    const path = $('net-path');
    if (path) {
      path.hidden = call.state !== 'connected' || !net.path;
      path.dataset.path = net.path ?? '';
      path.textContent = net.path ?? '';
      path.title = t('net.path', { path: net.path ?? '–' });
    }
  }

  call.addEventListener('state', renderState);
  call.addEventListener('lobby', (e) => {
    document.body.dataset.lobby = e.detail.status;
    if (e.detail.status === 'waiting') banner.show('lobby', { key: 'lobby.waiting', kind: 'warn' });
    else banner.hide('lobby');
  });
  call.addEventListener('media-state', renderState);
  call.addEventListener('presentation-stopped', () => {
    syncAll();
    banner.show('notice', { key: 'screen.stoppedByHost', kind: 'warn', autoHideMs: 6000 });
  });
  call.addEventListener('server-error', (e) => {
    setTestContext({ serverErrors: [...(window.rakorTest?.serverErrors() ?? []), e.detail] });
    const key = hasKey(`server.${e.detail.code}`) ? `server.${e.detail.code}` : 'server.generic';
    banner.show('notice', { key, vars: { message: e.detail.message }, kind: 'warn', autoHideMs: 6000 });
  });
  syncAll();
  call.start();
}

main();
