// The call's video area, in two layouts:
//   wall (role host, the command room): every site in a grid sized to the count (up to 60);
//        when a site is spotlighted it is shown large with the rest beside it.
//   site (participant/viewer): the spotlighted site, else the host, large; others in a strip;
//        the strip collapses on a phone.
// Our own camera is a small self-view (or the main view when we are spotlighted).
import { createTile, updateTile } from './tile.js';
import { bestGrid } from '../grid.js';

export class Stage {
  /**
   * @param {{root: HTMLElement, room: import('../room.js').Room, media: import('../media.js').LocalMedia,
   *          layout: 'wall'|'site', canSpotlight: boolean, onSpotlight: (id: string|null) => void,
   *          onTrackView?: (trackId: string, visible: boolean, width: number, height: number) => void}} opts
   */
  constructor({ root, room, media, layout, canSpotlight, onSpotlight, onTrackView, localScreen }) {
    this.localScreen = localScreen;
    this.root = root;
    this.room = room;
    this.media = media;
    this.layout = layout;
    this.canSpotlight = canSpotlight;
    this.stage = root.querySelector('#stage');
    this.main = root.querySelector('#main-view');
    this.mainEmpty = root.querySelector('#main-empty');
    this.others = root.querySelector('#others');
    this.selfView = root.querySelector('#self-view');
    this.tiles = new Map();
    this.selfTile = null;
    this.selfSpeaking = false;
    root.dataset.layout = layout;

    this.stage.addEventListener('click', (e) => {
      const btn = e.target.closest('[data-action="spotlight"]');
      const tile = e.target.closest('.tile');
      if (!btn || !tile || !this.canSpotlight) return;
      const id = tile.dataset.participantId;
      onSpotlight(this.room.spotlight === id ? null : id);
    });
    this.stage.addEventListener('dblclick', (e) => {
      const tile = e.target.closest('.tile');
      if (tile && this.canSpotlight && !tile.dataset.self) onSpotlight(tile.dataset.participantId);
    });
    new ResizeObserver(() => this.layoutGrid()).observe(this.others);
    // A tile that gets no box (collapsed strip) or a hidden page: its video need not be sent.
    this.onTrackView = onTrackView;
    this.viewObserver = new ResizeObserver((entries) => { for (const e of entries) this.reportView(e.target); });
    document.addEventListener('visibilitychange', () => { for (const el of this.tiles.values()) this.reportView(el); });
  }

  /** Report whether a remote tile's video is on screen (the session sends only changes). */
  reportView(el) {
    const p = this.room.participants.get(el.dataset.participantId);
    const trackId = p?.media.video?.trackId;
    if (!trackId || !this.onTrackView) return;
    const r = el.getBoundingClientRect();
    const visible = r.width > 0 && r.height > 0 && document.visibilityState !== 'hidden';
    this.onTrackView(trackId, visible, Math.round(r.width), Math.round(r.height));
  }

  /** The participant id shown in the main view ('' when the wall shows only the grid). */
  mainId() { return this.main.dataset.participantId || ''; }

  sync() {
    const room = this.room;
    const selfId = room.self?.id ?? '';
    // Tiles for remote participants: create new, drop gone.
    for (const [id, el] of this.tiles) {
      if (!room.participants.has(id)) { this.viewObserver.unobserve(el); el.remove(); this.tiles.delete(id); }
    }
    const list = room.list();
    for (const p of list) {
      if (!this.tiles.has(p.id)) {
        const el = createTile(p.id, { canSpotlight: this.canSpotlight });
        this.tiles.set(p.id, el);
        this.viewObserver.observe(el);
      }
    }
    // Our own tile, when we send anything.
    if (this.media?.hasAny && selfId) {
      if (!this.selfTile) this.selfTile = createTile(selfId, { self: true });
      this.selfTile.dataset.participantId = selfId;
    } else if (this.selfTile) {
      this.selfTile.remove();
      this.selfTile = null;
    }

    // The room's presentation, when there is one, is everyone's main view: the cameras (the
    // presenter's included) go to the strip or the wall.
    const presenting = this.syncPresentation(selfId);
    const mainId = presenting ? '' : (room.mainParticipantId() ?? '');
    const mainTile = mainId === selfId ? this.selfTile : this.tiles.get(mainId);
    this.main.dataset.participantId = mainTile ? mainId : '';
    this.stage.dataset.hasMain = String(!!mainTile || presenting);
    this.mainEmpty.hidden = !!mainTile || presenting || this.layout === 'wall';
    for (const el of [...this.main.querySelectorAll(':scope > .tile')]) if (el !== mainTile) el.remove();
    if (mainTile && mainTile.parentElement !== this.main) this.main.appendChild(mainTile);

    const strip = list.filter((p) => p.id !== mainId).map((p) => this.tiles.get(p.id));
    strip.forEach((el, i) => {
      if (this.others.children[i] !== el) this.others.insertBefore(el, this.others.children[i] ?? null);
    });
    while (this.others.children.length > strip.length) this.others.lastElementChild.remove();
    this.others.dataset.count = String(strip.length);

    if (this.selfTile && this.selfTile !== mainTile && this.selfTile.parentElement !== this.selfView) {
      this.selfView.appendChild(this.selfTile);
    }
    this.selfView.hidden = !this.selfTile || this.selfTile === mainTile;

    for (const p of list) {
      updateTile(this.tiles.get(p.id), {
        name: p.name, role: p.role, speaking: p.speaking, spotlighted: room.spotlight === p.id,
        audioMuted: p.isMuted('audio'), videoMuted: p.isMuted('video'), videoTrack: p.media.video?.track ?? null,
      });
    }
    this.syncSelf();
    this.layoutGrid();
    for (const el of this.tiles.values()) this.reportView(el);
  }

  /** Show the presentation (remote: its received screen track; ours: the captured one) in the
   *  main view. True while the room has a presentation. */
  syncPresentation(selfId) {
    const view = this.root.querySelector('#presentation-view');
    if (!view) return false;
    const pres = this.room.presentation;
    const mine = !!pres && pres.participant_id === selfId;
    const track = !pres ? null : mine ? (this.localScreen?.() ?? null) : this.room.presentationTrack();
    view.hidden = !pres;
    this.main.dataset.presentation = pres?.participant_id ?? '';
    const video = view.querySelector('video');
    const current = video.srcObject?.getVideoTracks?.()[0] ?? null;
    if (track !== current) video.srcObject = track ? new MediaStream([track]) : null;
    const who = pres && (mine ? this.room.self : this.room.get(pres.participant_id));
    const label = view.querySelector('.presentation-name');
    if (label) label.textContent = who?.name ?? '';
    if (pres && view.parentElement === this.main && this.main.firstElementChild !== view) this.main.prepend(view);
    return !!pres;
  }

  syncSelf() {
    if (!this.selfTile || !this.room.self) return;
    const m = this.media;
    updateTile(this.selfTile, {
      self: true, name: this.room.self.name, role: this.room.self.role,
      speaking: this.selfSpeaking, spotlighted: this.room.spotlight === this.room.self.id,
      audioMuted: !m.audioTrack || !m.enabled.audio, videoMuted: !m.videoTrack || !m.enabled.video,
      videoTrack: m.enabled.video ? m.videoTrack : null,
    });
  }

  setSelfSpeaking(on) {
    if (on === this.selfSpeaking) return;
    this.selfSpeaking = on;
    this.syncSelf();
  }

  /** Size the wall grid so tiles are as large as the area allows. */
  layoutGrid() {
    const n = this.others.children.length;
    if (this.layout !== 'wall') {
      this.others.style.removeProperty('--cols');
      this.others.style.removeProperty('--rows');
      return;
    }
    const { cols, rows } = bestGrid(n, this.others.clientWidth, this.others.clientHeight, 16 / 9, 6);
    this.others.style.setProperty('--cols', String(cols));
    this.others.style.setProperty('--rows', String(rows));
  }

  tileCount() { return this.tiles.size; }
}
