// Remote audio playback: one hidden <audio> element per participant. If the browser blocks
// playback (autoplay policy), `blocked` fires so the UI can ask for one click.

export class AudioSink extends EventTarget {
  constructor(container) {
    super();
    this.container = container;
    this.elements = new Map();   // participant id -> <audio>
    this.blocked = false;
  }

  /** Make the set of playing tracks equal `tracks` (Map participant id -> MediaStreamTrack). */
  sync(tracks) {
    for (const [id, el] of this.elements) {
      if (!tracks.has(id)) { el.srcObject = null; el.remove(); this.elements.delete(id); }
    }
    for (const [id, track] of tracks) {
      let el = this.elements.get(id);
      if (!el) {
        el = document.createElement('audio');
        el.autoplay = true;
        el.dataset.participantId = id;
        this.container.appendChild(el);
        this.elements.set(id, el);
      }
      if (el.track !== track) {
        el.track = track;
        el.srcObject = new MediaStream([track]);
        this.play(el);
      }
    }
  }

  play(el) {
    el.play().catch((err) => {
      if (err.name === 'NotAllowedError' && !this.blocked) {
        this.blocked = true;
        this.dispatchEvent(new Event('blocked'));
      }
    });
  }

  /** Retry playback after a user gesture. */
  resume() {
    this.blocked = false;
    for (const el of this.elements.values()) this.play(el);
  }

  clear() { this.sync(new Map()); }
}
