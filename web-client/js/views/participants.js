// The participant list: everyone in the room (us first), role, who presents, mic state, speaking
// dot, and for the host a spotlight button per site.
import { ICONS } from '../icons.js';
import { setAttr, setText, t } from '../i18n.js';

export class ParticipantList {
  constructor({ panel, room, media, canSpotlight, onSpotlight }) {
    this.panel = panel;
    this.list = panel.querySelector('#participant-list');
    this.count = panel.querySelector('#participant-count');
    this.room = room;
    this.media = media;
    this.canSpotlight = canSpotlight;
    this.list.addEventListener('click', (e) => {
      const btn = e.target.closest('[data-action="spotlight"]');
      if (!btn) return;
      const id = btn.closest('li').dataset.participantId;
      onSpotlight(this.room.spotlight === id ? null : id);
    });
  }

  sync() {
    const room = this.room;
    const rows = [];
    if (room.self) {
      rows.push({ id: room.self.id, name: t('tile.you', { name: room.self.name }), role: room.self.role, self: true,
        muted: !this.media?.audioTrack || !this.media.enabled.audio, speaking: false });
    }
    for (const p of room.list()) {
      rows.push({ id: p.id, name: p.name, role: p.role, muted: p.isMuted('audio'), speaking: p.speaking });
    }
    setText(this.count, 'participants.count', { n: rows.length });
    const keep = new Set(rows.map((r) => r.id));
    for (const li of [...this.list.children]) if (!keep.has(li.dataset.participantId)) li.remove();
    rows.forEach((r, i) => {
      let li = this.list.querySelector(`li[data-participant-id="${CSS.escape(r.id)}"]`);
      if (!li) {
        li = document.createElement('li');
        li.dataset.participantId = r.id;
        li.innerHTML = `<span class="dot"></span><span class="pl-name"></span><span class="role-chip"></span><span class="role-chip pl-presenting" hidden></span><span class="pl-mic">${ICONS.micOff}</span>`;
        if (this.canSpotlight && !r.self) {
          const b = document.createElement('button');
          b.type = 'button';
          b.className = 'btn-icon';
          b.dataset.action = 'spotlight';
          b.innerHTML = ICONS.spotlight;
          li.appendChild(b);
        }
      }
      if (this.list.children[i] !== li) this.list.insertBefore(li, this.list.children[i] ?? null);
      li.querySelector('.pl-name').textContent = r.name;
      setText(li.querySelector('.role-chip'), `role.${r.role}`);
      li.querySelector('.pl-mic').hidden = !r.muted;
      li.dataset.speaking = String(!!r.speaking);
      li.dataset.spotlight = String(room.spotlight === r.id);
      // Who presents (the room's screen share), on every page: the host's list too.
      const presenting = room.presentation?.participant_id === r.id;
      li.dataset.presenting = String(presenting);
      const chip = li.querySelector('.pl-presenting');
      chip.hidden = !presenting;
      setText(chip, 'screen.presentingChip');
      const b = li.querySelector('[data-action="spotlight"]');
      if (b) setAttr(b, 'title', room.spotlight === r.id ? 'spotlight.remove' : 'spotlight.pick');
    });
  }
}
