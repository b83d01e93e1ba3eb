// The call toolbar: microphone/camera toggles, device switching (replaceTrack, no renegotiation),
// the host's spotlight tour (previous / next / clear), participant list, full screen, leave.
import { iconLabel } from '../icons.js';
import { setAttr, setText } from '../i18n.js';
import { fillDeviceSelect } from './prejoin.js';

const $ = (id) => document.getElementById(id);

function label(btn, icon, key, vars) {
  if (btn.dataset.icon !== icon) {
    btn.innerHTML = iconLabel(icon);
    btn.dataset.icon = icon;
  }
  setText(btn.querySelector('.ctl-label'), key, vars);
  setAttr(btn, 'title', key, vars);
}

export class Controls {
  /**
   * @param {{call: import('../call.js').Call, room: import('../room.js').Room, isHost: boolean,
   *          canPublish: boolean, onLeave: () => void}} opts
   */
  constructor({ call, room, isHost, canPublish, onLeave }) {
    this.call = call;
    this.room = room;
    this.media = call.media;
    this.isHost = isHost;
    const callEl = $('call');

    $('btn-mic').hidden = !canPublish || !this.media.audioTrack;
    $('btn-cam').hidden = !canPublish || !this.media.videoTrack;
    $('btn-devices').hidden = !canPublish || !this.media.hasAny;
    $('tour').hidden = !isHost;

    $('btn-mic').onclick = () => { this.call.setMuted('audio', this.media.enabled.audio); this.render(); };
    $('btn-cam').onclick = () => { this.call.setMuted('video', this.media.enabled.video); this.render(); };
    $('btn-devices').onclick = () => this.openDevices();
    $('btn-prev').onclick = () => this.tour(-1);
    $('btn-next').onclick = () => this.tour(+1);
    $('btn-clear').onclick = () => this.call.setSpotlight(null);
    $('btn-people').onclick = () => {
      const panel = $('participants-panel');
      panel.hidden = !panel.hidden;
      this.render();
    };
    $('btn-strip').onclick = () => {
      callEl.dataset.strip = callEl.dataset.strip === 'open' ? 'closed' : 'open';
      this.render();
    };
    $('btn-fullscreen').onclick = () => {
      if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
      else callEl.requestFullscreen?.().catch(() => {});
    };
    document.addEventListener('fullscreenchange', () => this.render());
    $('btn-leave').onclick = onLeave;
    $('btn-fullscreen').hidden = !document.fullscreenEnabled;

    $('dev-camera').onchange = (e) => this.switchDevice('video', e.target.value);
    $('dev-mic').onchange = (e) => this.switchDevice('audio', e.target.value);
    navigator.mediaDevices?.addEventListener?.('devicechange', () => { if ($('devices-dialog').open) this.fillDevices(); });
    this.render();
  }

  /** Host: spotlight the next (+1) or previous (-1) site in wall order; wraps around. */
  tour(step) {
    const order = this.room.tourOrder();
    if (!order.length) return;
    const at = order.indexOf(this.room.spotlight);
    const next = at < 0 ? (step > 0 ? 0 : order.length - 1) : (at + step + order.length) % order.length;
    this.call.setSpotlight(order[next]);
  }

  async openDevices() {
    $('dev-error').hidden = true;
    await this.fillDevices();
    $('devices-dialog').showModal?.();
  }

  async fillDevices() {
    const d = await this.media.listDevices();
    fillDeviceSelect($('dev-camera'), d.videoinput, this.media.videoDeviceId, 'devices.cameraN');
    fillDeviceSelect($('dev-mic'), d.audioinput, this.media.audioDeviceId, 'devices.microphoneN');
    $('dev-camera').disabled ||= !this.media.videoTrack;
    $('dev-mic').disabled ||= !this.media.audioTrack;
  }

  async switchDevice(kind, id) {
    const ok = await this.call.switchDevice(kind, id);
    $('dev-error').hidden = ok;
    if (!ok) setText($('dev-error'), 'devices.switchFailed');
    this.render();
  }

  render() {
    const m = this.media;
    label($('btn-mic'), m.enabled.audio ? 'mic' : 'micOff', m.enabled.audio ? 'controls.micOff' : 'controls.micOn');
    $('btn-mic').dataset.on = String(m.enabled.audio);
    label($('btn-cam'), m.enabled.video ? 'cam' : 'camOff', m.enabled.video ? 'controls.camOff' : 'controls.camOn');
    $('btn-cam').dataset.on = String(m.enabled.video);
    label($('btn-devices'), 'settings', 'controls.devices');
    label($('btn-people'), 'people', 'controls.participants');
    $('btn-people').setAttribute('aria-pressed', String(!$('participants-panel').hidden));
    label($('btn-strip'), 'strip', 'controls.strip', { n: this.room.participants.size });
    $('btn-strip').setAttribute('aria-pressed', String($('call').dataset.strip === 'open'));
    label($('btn-fullscreen'), 'fullscreen', document.fullscreenElement ? 'controls.exitFullscreen' : 'controls.fullscreen');
    label($('btn-leave'), 'leave', 'controls.leave');
    if (this.isHost) {
      label($('btn-prev'), 'prev', 'spotlight.prev');
      label($('btn-next'), 'next', 'spotlight.next');
      label($('btn-clear'), 'clear', 'spotlight.clear');
      const order = this.room.tourOrder();
      const at = order.indexOf(this.room.spotlight);
      $('btn-clear').disabled = !this.room.spotlight;
      $('btn-prev').disabled = $('btn-next').disabled = order.length === 0;
      const p = this.room.get(this.room.spotlight);
      if (p && at >= 0) setText($('tour-pos'), 'spotlight.position', { i: at + 1, n: order.length, name: p.name });
      else setText($('tour-pos'), 'spotlight.none');
    }
  }
}
