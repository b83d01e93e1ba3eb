// The banner under the top bar: one message at a time, by priority (connection trouble first),
// with an optional action button. Notices disappear by themselves.
import { setText } from '../i18n.js';

const PRIORITY = { connection: 3, audio: 2, notice: 1 };

export class Banner {
  constructor(el) {
    this.el = el;
    this.text = el.querySelector('#banner-text');
    this.action = el.querySelector('#banner-action');
    this.active = new Map();   // slot -> { key, vars, kind, actionKey, onAction }
    this.noticeTimer = null;
  }

  /** Show a message in `slot` ('connection' | 'audio' | 'notice'). */
  show(slot, { key, vars, kind = 'info', actionKey, onAction, autoHideMs }) {
    this.active.set(slot, { key, vars, kind, actionKey, onAction });
    if (autoHideMs) {
      clearTimeout(this.noticeTimer);
      this.noticeTimer = setTimeout(() => this.hide(slot), autoHideMs);
    }
    this.render();
  }

  hide(slot) {
    if (this.active.delete(slot)) this.render();
  }

  clear() { this.active.clear(); this.render(); }

  render() {
    const top = [...this.active.entries()].sort((a, b) => PRIORITY[b[0]] - PRIORITY[a[0]])[0];
    this.el.hidden = !top;
    if (!top) { delete this.el.dataset.slot; return; }
    const [slot, m] = top;
    this.el.dataset.slot = slot;
    this.el.dataset.kind = m.kind;
    setText(this.text, m.key, m.vars);
    this.action.hidden = !m.actionKey;
    if (m.actionKey) {
      setText(this.action, m.actionKey);
      this.action.onclick = m.onAction;
    }
  }
}
