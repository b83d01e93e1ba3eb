// The pre-join screen: who the token is for, camera preview, device pickers, microphone level,
// send quality, and "Gabung". Media problems are explained and joining receive-only stays possible.
import { LevelMeter, QUALITY } from '../media.js';
import { formatTime, onLangChange, setText, t } from '../i18n.js';
import { isExpired } from '../token.js';

const $ = (id) => document.getElementById(id);

/** Fill a <select> with devices; keeps the selection on `selectedId`. */
export function fillDeviceSelect(select, devices, selectedId, fallbackKey) {
  select.textContent = '';
  devices.forEach((d, i) => {
    const o = document.createElement('option');
    o.value = d.id;
    o.textContent = d.label || t(fallbackKey, { n: i + 1 });
    select.appendChild(o);
  });
  if (!devices.length) {
    const o = document.createElement('option');
    o.value = '';
    o.textContent = t('devices.none');
    select.appendChild(o);
  }
  select.disabled = devices.length < 1;
  if (selectedId) select.value = selectedId;
}

/** Explain what is missing, per device kind. Returns '' when both work. */
export function describeMediaStatus(status) {
  const bad = (s) => s !== 'ok' && s !== 'off';
  const lines = [];
  if (bad(status.video) && status.video === status.audio) {
    lines.push(t(`media.${status.video}`, { device: t('device.both') }));
  } else {
    for (const kind of ['video', 'audio']) {
      if (bad(status[kind])) lines.push(t(`media.${status[kind]}`, { device: t(`device.${kind}`) }));
    }
  }
  if (lines.length && status.audio !== 'ok' && status.video !== 'ok') lines.push(t('media.receiveOnly'));
  return lines.join(' ');
}

/**
 * Show the pre-join screen until the user presses the join button.
 * @returns {Promise<{publish: boolean}>}
 */
export function runPrejoin({ claims, media, canPublish }) {
  setText($('pj-name'), 'prejoin.name', { name: claims.name });
  setText($('pj-role'), `role.${claims.role}`);
  setText($('pj-room'), 'prejoin.room', { room: claims.room });
  const renderExpiry = () => {
    if (claims.exp) setText($('pj-expiry'), 'prejoin.expires', { time: formatTime(new Date(claims.exp * 1000)) });
  };
  renderExpiry();
  const offLang = onLangChange(() => { renderExpiry(); refresh(); });
  setText($('pj-join'), 'prejoin.join');

  const video = $('pj-video');
  const bar = $('pj-meter-bar');
  const errorBox = $('pj-media-error');
  const quality = $('pj-quality');
  let meter = null;

  const wantQ = new URLSearchParams(location.search).get('quality');
  quality.value = QUALITY[wantQ] ? wantQ : (localStorageGet('rakor.quality') || 'medium');
  media.quality = quality.value;

  function startMeter() {
    meter?.stop();
    bar.style.width = '0%';
    meter = new LevelMeter(media.audioTrack, (level) => {
      bar.style.width = `${Math.round(level * 100)}%`;
      $('pj-meter').setAttribute('aria-valuenow', String(Math.round(level * 100)));
    });
  }

  async function refresh() {
    const hasVideo = !!media.videoTrack;
    video.srcObject = hasVideo ? media.stream : null;
    video.hidden = !hasVideo;
    $('pj-novideo').hidden = hasVideo;
    setText($('pj-novideo'), canPublish ? 'prejoin.noCamera' : 'prejoin.viewerNote');
    $('pj-meter').hidden = !media.audioTrack;
    const msg = canPublish ? describeMediaStatus(media.status) : '';
    errorBox.hidden = !msg;
    errorBox.textContent = msg;
    $('pj-retry-media').hidden = !canPublish || (media.status.audio === 'ok' && media.status.video === 'ok');
    setText($('pj-join'), canPublish && !media.hasAny ? 'prejoin.joinReceiveOnly' : 'prejoin.join');
    const devices = await media.listDevices();
    fillDeviceSelect($('pj-camera'), devices.videoinput, media.videoDeviceId, 'devices.cameraN');
    fillDeviceSelect($('pj-mic'), devices.audioinput, media.audioDeviceId, 'devices.microphoneN');
  }

  async function acquire() {
    $('pj-join').disabled = true;
    await media.acquire();
    startMeter();
    await refresh();
    $('pj-join').disabled = false;
  }

  $('pj-devices').hidden = !canPublish;
  if (canPublish) {
    $('pj-camera').onchange = async (e) => { await media.switchDevice('video', e.target.value); await refresh(); };
    $('pj-mic').onchange = async (e) => { await media.switchDevice('audio', e.target.value); startMeter(); await refresh(); };
    quality.onchange = async () => {
      media.quality = quality.value;
      localStorageSet('rakor.quality', quality.value);
      if (media.videoTrack) await media.switchDevice('video', media.videoDeviceId);
      await refresh();
    };
    $('pj-retry-media').onclick = acquire;
    acquire();
  } else {
    refresh();
  }

  return new Promise((resolve) => {
    $('pj-join').onclick = () => {
      offLang();
      meter?.stop();
      video.srcObject = null;
      resolve({ publish: canPublish && media.hasAny, expired: isExpired(claims) });
    };
  });
}

function localStorageGet(k) { try { return window.localStorage.getItem(k); } catch { return null; } }
function localStorageSet(k, v) { try { window.localStorage.setItem(k, v); } catch { /* blocked */ } }
