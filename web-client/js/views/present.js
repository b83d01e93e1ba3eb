// Presenting in the call: the chat panel (every message shown as text: textContent only, so
// markup in a message stays inert), the raise-hand button of a site, and the host's ordered list
// of raised hands with "Beri kesempatan bicara" / "Give the floor" (docs/protocol.md: chat,
// chat_history, hand, hands, give_floor, floor_given).
import { setAttr, setText, t } from '../i18n.js';

const $ = (id) => document.getElementById(id);
const MAX_CHARS = 2000;

function timeOf(iso) {
  try {
    return new Intl.DateTimeFormat('id-ID', { timeZone: 'Asia/Jakarta', hour: '2-digit', minute: '2-digit' }).format(new Date(iso));
  } catch { return ''; }
}

function node(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

export class PresentPanel {
  /**
   * @param {{call: import('../call.js').Call, room: import('../room.js').Room, isHost: boolean,
   *          canRaiseHand: boolean}} opts
   */
  constructor({ call, room, isHost, canRaiseHand }) {
    this.call = call;
    this.room = room;
    this.isHost = isHost;
    this.seen = 0;                  // chat messages shown while the panel was open
    this.panel = $('present-panel');
    $('btn-hand').hidden = !canRaiseHand;
    $('btn-chat').onclick = () => this.toggle();
    $('btn-hand').onclick = () => {
      const up = !this.room.handRaised();
      this.call.setHand(up);
    };
    $('chat-to').hidden = !isHost;
    $('chat-form').addEventListener('submit', (e) => { e.preventDefault(); this.send(); });
    $('chat-input').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); this.send(); }
    });
    call.addEventListener('server-error', (e) => {
      const req = e.detail?.request_type;
      if (req !== 'chat' && req !== 'hand' && req !== 'give_floor') return;
      const el = $('chat-error');
      el.hidden = false;
      setText(el, `chat.error.${['too_large', 'rate_limited', 'forbidden'].includes(e.detail.code) ? e.detail.code : 'generic'}`, { message: e.detail.message ?? '' });
    });
    this.render();
  }

  toggle(open = this.panel.hidden) {
    this.panel.hidden = !open;
    if (open) { this.seen = this.room.chat.length; $('chat-input').focus(); }
    this.render();
  }

  send() {
    const input = $('chat-input');
    const text = input.value;
    if (!text.trim()) return;
    if ([...text].length > MAX_CHARS) {
      $('chat-error').hidden = false;
      setText($('chat-error'), 'chat.error.too_large', { message: '' });
      return;
    }
    const to = this.isHost ? ($('chat-to').value || null) : null;
    if (this.call.sendChat(text, to)) {
      input.value = '';
      $('chat-error').hidden = true;
    }
  }

  render() {
    this.renderButtons();
    this.renderTargets();
    this.renderChat();
    this.renderHands();
  }

  renderButtons() {
    const open = !this.panel.hidden;
    const chatBtn = $('btn-chat');
    chatBtn.setAttribute('aria-pressed', String(open));
    setText(chatBtn.querySelector('.ctl-label'), 'chat.button');
    setAttr(chatBtn, 'title', 'chat.button');
    if (open) this.seen = this.room.chat.length;
    const unread = Math.max(0, this.room.chat.length - this.seen);
    const badge = $('chat-unread');
    badge.hidden = unread === 0;
    badge.textContent = String(unread);
    const up = this.room.handRaised();
    const handBtn = $('btn-hand');
    handBtn.setAttribute('aria-pressed', String(up));
    handBtn.dataset.raised = String(up);
    setText(handBtn, up ? 'hands.lower' : 'hands.raise');
    setAttr(handBtn, 'title', up ? 'hands.lower' : 'hands.raise');
  }

  renderTargets() {
    if (!this.isHost) return;
    const sel = $('chat-to');
    const keep = sel.value;
    const opts = [['', t('chat.toAll')]];
    for (const p of this.room.list()) opts.push([p.id, t('chat.toOne', { name: p.name })]);
    sel.replaceChildren(...opts.map(([v, label]) => { const o = node('option', '', label); o.value = v; return o; }));
    sel.value = opts.some(([v]) => v === keep) ? keep : '';
  }

  renderChat() {
    const list = $('chat-list');
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    const items = this.room.chat.map((c) => {
      const li = node('li', 'chat-msg');
      li.dataset.chatId = c.id;
      li.dataset.from = c.from?.participant_id ?? '';
      if (c.from?.participant_id === this.room.self?.id) li.classList.add('own');
      const head = node('div', 'chat-head');
      head.append(node('strong', 'chat-from', c.from?.name ?? ''), ' ', node('span', 'muted small', timeOf(c.at)));
      if (c.to) {
        const to = c.to === this.room.self?.id ? t('chat.privateToYou') : t('chat.privateTo', { name: this.room.get(c.to)?.name ?? c.to });
        head.append(' ', node('span', 'chat-private small', to));
      }
      // The message itself: text only, never HTML.
      li.append(head, node('div', 'chat-text', c.text));
      return li;
    });
    if (!items.length) items.push(node('li', 'muted small chat-empty', t('chat.empty')));
    list.replaceChildren(...items);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  handItems(withFloor) {
    return this.room.hands.map((h, i) => {
      const li = node('li', 'hand-item');
      li.dataset.participantId = h.participant_id;
      li.append(node('span', 'hand-pos', `${i + 1}.`), ' ', node('span', 'hand-name', h.name), ' ', node('span', 'muted small', timeOf(h.at)));
      if (withFloor) {
        const b = node('button', 'btn-small btn-floor', t('hands.giveFloor'));
        b.type = 'button';
        b.onclick = () => this.call.giveFloor(h.participant_id);
        li.append(' ', b);
      }
      return li;
    });
  }

  renderHands() {
    const any = this.room.hands.length > 0;
    $('hands-section').hidden = !any;
    $('hand-list').replaceChildren(...this.handItems(this.isHost));
    // The host sees the queue at all times while a hand is up.
    $('hands-box').hidden = !(this.isHost && any);
    if (this.isHost) $('hands-box-list').replaceChildren(...this.handItems(true));
  }
}
