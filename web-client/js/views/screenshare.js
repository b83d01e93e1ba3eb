// Screen sharing ("Bagikan layar"): the toolbar button starts `getDisplayMedia` and publishes it
// as a second video track with source `screen` (the room's presentation) and, when the browser
// gives the tab's sound, an audio track with source `screen_audio`; the same button or the
// browser's own "stop sharing" bar (the track's `ended`) stops it. A host also gets a button on
// the presentation to stop another site's presentation. The stage shows the presentation large.
import { iconLabel } from '../icons.js';
import { setAttr, setText } from '../i18n.js';

const $ = (id) => document.getElementById(id);

export class ScreenShare {
  /**
   * @param {{call: import('../call.js').Call, room: import('../room.js').Room, isHost: boolean,
   *          canPublish: boolean, onChange: () => void}} opts
   */
  constructor({ call, room, isHost, canPublish, onChange }) {
    this.call = call;
    this.room = room;
    this.isHost = isHost;
    this.onChange = onChange;
    this.btn = $('btn-screen');
    this.stopOther = $('btn-stop-presentation');
    this.supported = !!navigator.mediaDevices?.getDisplayMedia;
    this.btn.hidden = !canPublish || !this.supported;
    this.btn.onclick = () => (this.sharing ? this.stop() : this.start());
    this.stopOther.onclick = () => this.call.session?.stopPresentation();
    this.render();
  }

  /** Our captured screen track while we share (null otherwise). */
  get track() { return this.call.session?.screenTrack ?? null; }

  get sharing() { return !!this.track && this.track.readyState === 'live'; }

  async start() {
    const session = this.call.session;
    if (!session || this.sharing) return;
    const ask = (audio) => navigator.mediaDevices.getDisplayMedia({
      video: { frameRate: { ideal: 5, max: 15 }, width: { ideal: 1920 }, height: { ideal: 1080 } },
      // A tab's (or the system's) sound when the user ticks "share audio": published as
      // `screen_audio`, heard by everyone with the presentation.
      audio,
    });
    let stream;
    try {
      try {
        stream = await ask(true);
      } catch (err) {
        // A browser that cannot capture sound with a screen: the screen alone. A refusal by
        // the user (NotAllowedError) is final.
        if (err?.name === 'NotAllowedError') throw err;
        stream = await ask(false);
      }
    } catch (err) {
      console.warn('rakor: screen capture refused', err);
      return; // the user cancelled the picker
    }
    const track = stream.getVideoTracks()[0];
    const audioTrack = stream.getAudioTracks()[0] ?? null;
    if (!track) { audioTrack?.stop(); return; }
    // The browser's own "Stop sharing" bar ends the track.
    track.addEventListener('ended', () => { if (this.call.session?.screenTrack === track) this.stop(); });
    if (!this.wired || this.wired !== session) {
      this.wired = session;
      session.addEventListener('screen-ended', () => { this.render(); this.onChange(); });
    }
    await session.shareScreen(track, audioTrack);
    this.render();
    this.onChange();
  }

  async stop() {
    await this.call.session?.stopScreen({ tellServer: true });
    this.render();
    this.onChange();
  }

  render() {
    const on = this.sharing;
    const icon = on ? 'screenOff' : 'screen';
    if (this.btn.dataset.icon !== icon) {
      this.btn.innerHTML = iconLabel(icon);
      this.btn.dataset.icon = icon;
    }
    const key = on ? 'screen.stop' : 'screen.share';
    setText(this.btn.querySelector('.ctl-label'), key);
    setAttr(this.btn, 'title', key);
    this.btn.dataset.on = String(on);
    const pres = this.room.presentation;
    // The host may stop another site's presentation (the server refuses it from anyone else).
    this.stopOther.hidden = !this.isHost || !pres || pres.participant_id === this.room.self?.id;
  }
}
