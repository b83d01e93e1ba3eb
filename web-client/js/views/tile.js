// One video tile: the participant's video, their name, a muted-mic icon, the speaking highlight,
// and (for the host) a spotlight button. Tiles are moved between containers, never rebuilt.
import { ICONS } from '../icons.js';
import { setAttr, t } from '../i18n.js';

export function createTile(id, { self = false, canSpotlight = false } = {}) {
  const el = document.createElement('div');
  el.className = 'tile';
  el.dataset.participantId = id;
  if (self) el.dataset.self = 'true';
  el.innerHTML = `
    <video autoplay muted playsinline></video>
    <div class="tile-avatar"><span class="initials"></span></div>
    <div class="tile-bar">
      <span class="tile-mic" hidden>${ICONS.micOff}</span>
      <span class="tile-name"></span>
    </div>`;
  if (canSpotlight) {
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'tile-spotlight';
    btn.dataset.action = 'spotlight';
    btn.innerHTML = ICONS.spotlight;
    setAttr(btn, 'title', 'spotlight.pick');
    setAttr(btn, 'aria-label', 'spotlight.pick');
    el.appendChild(btn);
  }
  setAttr(el.querySelector('.tile-mic'), 'title', 'tile.micMuted');
  el.video = el.querySelector('video');
  el.track = null;
  return el;
}

/**
 * @param {HTMLElement} el
 * @param {{name: string, role: string, audioMuted: boolean, videoMuted: boolean, speaking: boolean,
 *          videoTrack: MediaStreamTrack|null, spotlighted: boolean, self?: boolean}} s
 */
export function updateTile(el, s) {
  const nameEl = el.querySelector('.tile-name');
  const label = s.self ? t('tile.you', { name: s.name }) : s.name;
  if (nameEl.textContent !== label) nameEl.textContent = label;
  const initials = el.querySelector('.initials');
  const ini = initialsOf(s.name);
  if (initials.textContent !== ini) initials.textContent = ini;
  el.dataset.role = s.role;
  el.dataset.audioMuted = String(!!s.audioMuted);
  el.dataset.videoMuted = String(!!s.videoMuted || !s.videoTrack);
  el.dataset.speaking = String(!!s.speaking && !s.audioMuted);
  el.dataset.spotlight = String(!!s.spotlighted);
  el.querySelector('.tile-mic').hidden = !s.audioMuted;
  const btn = el.querySelector('.tile-spotlight');
  if (btn) {
    const key = s.spotlighted ? 'spotlight.remove' : 'spotlight.pick';
    setAttr(btn, 'title', key);
    setAttr(btn, 'aria-label', key);
  }
  if (el.track !== s.videoTrack) {
    el.track = s.videoTrack;
    el.video.srcObject = s.videoTrack ? new MediaStream([s.videoTrack]) : null;
    if (s.videoTrack) el.video.play().catch(() => {});
  }
}

export function initialsOf(name) {
  const words = String(name || '?').replace(/[^\p{L}\p{N} ]/gu, ' ').split(/\s+/).filter(Boolean);
  return ((words[0]?.[0] ?? '?') + (words.length > 1 ? words[words.length - 1][0] : '')).toUpperCase();
}
