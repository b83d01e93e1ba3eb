// The `/rtc` WebSocket: JSON messages in, JSON messages out. Incoming messages are handled
// strictly in order through one promise chain, so an ICE candidate is never applied before the
// SDP it belongs to. A keepalive `ping` runs while open; a silent socket counts as dead.

export const PROTOCOL_VERSION = 1;

/** `ws(s)://<this host>/rtc`. */
export function signallingUrl(loc = window.location) {
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/rtc`;
}

export class Signalling extends EventTarget {
  /**
   * @param {string} url
   * @param {(msg: object) => (void|Promise<void>)} handler called once per message, in order
   */
  constructor(url, handler) {
    super();
    this.url = url;
    this.handler = handler;
    this.ws = null;
    this.chain = Promise.resolve();
    this.closed = false;
    this.lastRx = 0;
    this.rttMs = null;
    this.timer = null;
  }

  /** Open the socket; resolves when open, rejects if it fails or closes first. */
  open(timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      let settled = false;
      const ws = new WebSocket(this.url);
      this.ws = ws;
      const fail = (why) => { if (!settled) { settled = true; reject(new Error(why)); } };
      const deadline = setTimeout(() => { fail('websocket open timeout'); ws.close(); }, timeoutMs);
      ws.onopen = () => { clearTimeout(deadline); settled = true; this.lastRx = Date.now(); resolve(); };
      ws.onerror = () => fail('websocket error');
      ws.onmessage = (ev) => this.onFrame(ev.data);
      ws.onclose = (ev) => {
        clearTimeout(deadline);
        fail(`websocket closed (${ev.code})`);
        this.finish({ code: ev.code, reason: ev.reason, clean: ev.wasClean });
      };
    });
  }

  onFrame(data) {
    this.lastRx = Date.now();
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    if (!msg || typeof msg.type !== 'string') return;
    if (msg.type === 'pong' && typeof msg.ts === 'number') this.rttMs = Date.now() - msg.ts;
    this.chain = this.chain
      .then(() => this.handler(msg))
      .catch((err) => this.dispatchEvent(new CustomEvent('handler-error', { detail: { msg, err } })));
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  /** Send `ping` every `intervalMs`; close as dead if nothing arrives for `deadMs`. */
  startKeepalive(intervalMs = 2500, deadMs = 10000) {
    clearInterval(this.timer);
    this.timer = setInterval(() => {
      if (Date.now() - this.lastRx > deadMs) {
        this.close(4000, 'keepalive timeout');
        this.finish({ code: 4000, reason: 'keepalive timeout', clean: false });
        return;
      }
      this.send({ type: 'ping', ts: Date.now() });
    }, intervalMs);
  }

  close(code = 1000, reason = '') {
    clearInterval(this.timer);
    try { this.ws?.close(code, reason); } catch { /* already closing */ }
  }

  finish(detail) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    // Let already-queued messages (e.g. an `error` before the close) be handled first.
    this.chain.finally(() => this.dispatchEvent(new CustomEvent('close', { detail })));
  }
}
