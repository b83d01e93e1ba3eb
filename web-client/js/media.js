// The local camera and microphone: acquisition with clear failure reasons, device lists,
// switching devices (the caller swaps the sender's track with replaceTrack), enable/disable.

/** Send-quality presets: capture size and the sender's bitrate cap. */
export const QUALITY = {
  low: { width: 320, height: 240, frameRate: 15, maxBitrate: 250_000 },
  medium: { width: 640, height: 360, frameRate: 24, maxBitrate: 700_000 },
  high: { width: 1280, height: 720, frameRate: 30, maxBitrate: 1_800_000 },
};

/** Map a getUserMedia error to a reason the UI can explain. */
export function classifyMediaError(err) {
  switch (err?.name) {
    case 'NotAllowedError': case 'SecurityError': case 'PermissionDeniedError': return 'denied';
    case 'NotFoundError': case 'OverconstrainedError': case 'DevicesNotFoundError': return 'notfound';
    case 'NotReadableError': case 'AbortError': case 'TrackStartError': return 'inuse';
    case 'TypeError': return 'unsupported';
    default: return 'failed';
  }
}

export class LocalMedia extends EventTarget {
  constructor() {
    super();
    this.stream = new MediaStream();
    this.quality = 'medium';
    this.audioDeviceId = '';
    this.videoDeviceId = '';
    this.enabled = { audio: true, video: true };
    /** Per kind: 'ok' | 'denied' | 'notfound' | 'inuse' | 'unsupported' | 'failed' | 'off'. */
    this.status = { audio: 'off', video: 'off' };
  }

  get audioTrack() { return this.stream.getAudioTracks()[0] ?? null; }
  get videoTrack() { return this.stream.getVideoTracks()[0] ?? null; }
  get hasAny() { return this.stream.getTracks().length > 0; }

  constraints(kind) {
    if (kind === 'audio') {
      return { deviceId: this.audioDeviceId ? { exact: this.audioDeviceId } : undefined,
        echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    }
    const q = QUALITY[this.quality] ?? QUALITY.medium;
    return { deviceId: this.videoDeviceId ? { exact: this.videoDeviceId } : undefined,
      width: { ideal: q.width }, height: { ideal: q.height }, frameRate: { ideal: q.frameRate } };
  }

  /** (Re)acquire camera and microphone. Never throws: failures land in `status`. */
  async acquire({ audio = true, video = true } = {}) {
    this.stopTracks();
    if (!navigator.mediaDevices?.getUserMedia) {
      this.status = { audio: audio ? 'unsupported' : 'off', video: video ? 'unsupported' : 'off' };
      return this.status;
    }
    const ask = { audio: audio && this.constraints('audio'), video: video && this.constraints('video') };
    try {
      if (!ask.audio && !ask.video) throw Object.assign(new Error('nothing requested'), { name: 'Off' });
      this.adopt(await navigator.mediaDevices.getUserMedia(ask));
      this.status = { audio: audio ? 'ok' : 'off', video: video ? 'ok' : 'off' };
    } catch (err) {
      if (err.name === 'Off') { this.status = { audio: 'off', video: 'off' }; return this.status; }
      const reason = classifyMediaError(err);
      this.status = { audio: audio ? reason : 'off', video: video ? reason : 'off' };
      // One of the two devices may still work (e.g. a PC with a microphone but no camera).
      if (reason !== 'denied' && audio && video) {
        for (const kind of ['audio', 'video']) {
          try {
            this.adopt(await navigator.mediaDevices.getUserMedia({ [kind]: this.constraints(kind) }));
            this.status[kind] = 'ok';
          } catch (e) {
            this.status[kind] = classifyMediaError(e);
          }
        }
      }
    }
    for (const kind of ['audio', 'video']) this.applyEnabled(kind);
    this.dispatchEvent(new Event('change'));
    return this.status;
  }

  adopt(stream) {
    for (const track of stream.getTracks()) {
      const old = track.kind === 'audio' ? this.audioTrack : this.videoTrack;
      if (old) { old.stop(); this.stream.removeTrack(old); }
      this.stream.addTrack(track);
      const settings = track.getSettings?.() ?? {};
      if (track.kind === 'audio' && settings.deviceId) this.audioDeviceId = settings.deviceId;
      if (track.kind === 'video' && settings.deviceId) this.videoDeviceId = settings.deviceId;
    }
  }

  /** Switch to another device of `kind`; returns the new track (or null if it failed). */
  async switchDevice(kind, deviceId) {
    if (kind === 'audio') this.audioDeviceId = deviceId; else this.videoDeviceId = deviceId;
    try {
      const s = await navigator.mediaDevices.getUserMedia({ [kind]: this.constraints(kind) });
      this.adopt(s);
      this.status[kind] = 'ok';
      this.applyEnabled(kind);
      this.dispatchEvent(new Event('change'));
      return kind === 'audio' ? this.audioTrack : this.videoTrack;
    } catch (err) {
      this.status[kind] = classifyMediaError(err);
      this.dispatchEvent(new Event('change'));
      return null;
    }
  }

  setEnabled(kind, on) {
    this.enabled[kind] = on;
    this.applyEnabled(kind);
    this.dispatchEvent(new Event('change'));
  }

  applyEnabled(kind) {
    const track = kind === 'audio' ? this.audioTrack : this.videoTrack;
    if (track) track.enabled = this.enabled[kind];
  }

  /** Input devices by kind; labels are only known after permission was granted. */
  async listDevices() {
    const out = { audioinput: [], videoinput: [] };
    if (!navigator.mediaDevices?.enumerateDevices) return out;
    try {
      for (const d of await navigator.mediaDevices.enumerateDevices()) {
        if (out[d.kind] && d.deviceId) out[d.kind].push({ id: d.deviceId, label: d.label });
      }
    } catch { /* ignore */ }
    return out;
  }

  stopTracks() {
    for (const track of this.stream.getTracks()) { track.stop(); this.stream.removeTrack(track); }
  }
}

/**
 * Microphone level (0..1) of a local stream via WebAudio AnalyserNode; `onLevel` is called
 * about 15 times a second until `stop()`.
 */
export class LevelMeter {
  constructor(track, onLevel) {
    this.onLevel = onLevel;
    this.ctx = null;
    this.timer = null;
    if (!track || !window.AudioContext) return;
    try {
      this.ctx = new AudioContext();
      const src = this.ctx.createMediaStreamSource(new MediaStream([track]));
      this.analyser = this.ctx.createAnalyser();
      this.analyser.fftSize = 512;
      src.connect(this.analyser);
      this.buf = new Float32Array(this.analyser.fftSize);
      const resume = () => this.ctx?.resume().catch(() => {});
      resume();
      document.addEventListener('click', resume, { once: true });
      this.timer = setInterval(() => this.tick(), 66);
    } catch { this.ctx = null; }
  }

  tick() {
    this.analyser.getFloatTimeDomainData(this.buf);
    let sum = 0;
    for (const v of this.buf) sum += v * v;
    const rms = Math.sqrt(sum / this.buf.length);
    // Map roughly -60..0 dBFS to 0..1.
    const db = 20 * Math.log10(rms + 1e-9);
    this.onLevel(Math.max(0, Math.min(1, (db + 60) / 60)));
  }

  stop() {
    clearInterval(this.timer);
    this.ctx?.close().catch(() => {});
    this.ctx = null;
  }
}
