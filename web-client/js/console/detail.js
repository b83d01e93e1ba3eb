// One rakor in the console: its invitation links (copy, CSV), the live panel refreshed every
// 2 s while open (lobby admit/refuse, who presents and its stop, raised hands, who is in, mute,
// remove, spotlight, end) and the
// attendance register with its CSV/JSON downloads.
import { t } from '../i18n.js';
import { get, post } from './api.js';
import { el, wib, wibTime } from './format.js';
import { errorText, notice, onAuthLost } from './main.js';

const $ = (id) => document.getElementById(id);
let rakorId = null;
let timer = null;

export function closeDetail() {
  clearInterval(timer);
  timer = null;
  rakorId = null;
}

function fail(err) {
  if (!onAuthLost(err)) notice(errorText(err), true);
}

async function act(fn) {
  try { await fn(); await refreshLive(); } catch (err) { fail(err); }
}

export async function openDetail(id) {
  closeDetail();
  rakorId = id;
  const r = await get(`/rakor/${id}`);
  $('d-title').textContent = r.title;
  $('d-when').textContent = `${wib(r.start_utc)} – ${wib(r.end_utc)}`;
  $('d-agenda').textContent = r.agenda;
  renderState(r.state);
  $('d-valid').textContent = t('console.detail.valid', { from: wib(r.links_valid_from_utc), until: wib(r.end_utc) });
  $('d-invitations-csv').href = `/api/v1/rakor/${id}/invitations.csv`;
  $('att-csv').href = `/api/v1/rakor/${id}/attendance.csv`;
  $('att-json').href = `/api/v1/rakor/${id}/attendance`;
  $('record-html').href = `/api/v1/rakor/${id}/record?format=html`;
  $('record-csv').href = `/api/v1/rakor/${id}/record?format=csv`;
  $('record-json').href = `/api/v1/rakor/${id}/record`;
  await loadLinks(r);
  await refreshLive();
  timer = setInterval(() => refreshLive().catch(fail), 2000);
}

function renderState(state) {
  $('d-state').textContent = t(`console.state.${state}`);
  $('d-state').dataset.state = state;
  $('d-end').hidden = state === 'ended';
}

async function loadLinks(r) {
  const body = $('d-links');
  body.replaceChildren();
  if (r.state === 'ended') return;
  const links = await get(`/rakor/${r.id}/invitations`);
  for (const l of links) {
    const copy = el('button', { className: 'btn-small', type: 'button', text: t('console.detail.copy'), disabled: !l.link,
      onclick: async () => {
        try { await navigator.clipboard.writeText(l.link); notice(t('console.detail.copied', { name: l.site })); } catch { window.prompt(t('console.detail.copyManual'), l.link); }
      } });
    const relink = (what) => async () => {
      if (!window.confirm(t(`console.detail.confirm.${what}`, { name: l.site }))) return;
      try { await post(`/rakor/${r.id}/invitations/${l.site_id}/${what}`); await loadLinks(r); } catch (err) { fail(err); }
    };
    const reissue = el('button', { className: 'btn-small link-reissue', type: 'button', text: t('console.detail.reissue'), onclick: relink('reissue') });
    const revoke = el('button', { className: 'btn-small danger link-revoke', type: 'button', text: t('console.detail.revoke'), disabled: l.revoked, onclick: relink('revoke') });
    const link = l.link
      ? el('a', { href: l.link, target: '_blank', rel: 'noreferrer', text: l.link, className: 'invite-link' })
      : el('span', { className: 'muted', text: t('console.detail.revoked') });
    body.append(el('tr', { 'data-site-id': l.site_id, 'data-link-id': l.link_id },
      el('td', { text: l.site }), el('td', { text: t(`role.${l.role}`) }),
      el('td', { className: 'link' }, link),
      el('td', {}, copy, ' ', reissue, ' ', revoke)));
  }
}

async function refreshLive() {
  if (rakorId == null) return;
  const id = rakorId;
  const [live, reg] = await Promise.all([get(`/rakor/${id}/live`), get(`/rakor/${id}/attendance`)]);
  if (id !== rakorId) return;
  renderState(live.state);
  $('lobby-list').replaceChildren(...live.lobby.map((w) => el('li', { 'data-lobby-id': w.id, 'data-identity': w.identity },
    el('span', { className: 'grow', text: t('console.live.waiting', { name: w.name, since: wibTime(w.since_utc) }) }),
    el('button', { className: 'btn-primary lobby-admit', type: 'button', text: t('console.live.admit'), onclick: () => act(() => post(`/rakor/${id}/lobby/${w.id}/admit`)) }),
    el('button', { className: 'btn lobby-refuse', type: 'button', text: t('console.live.refuse'), onclick: () => act(() => post(`/rakor/${id}/lobby/${w.id}/refuse`)) }))));
  $('lobby-empty').hidden = live.lobby.length > 0;
  $('lobby-admit-all').disabled = live.lobby.length === 0;
  $('lobby-refuse-all').disabled = live.lobby.length === 0;
  $('live-list').replaceChildren(...live.participants.map((p) => el('li', { 'data-participant-id': p.participant_id, 'data-identity': p.identity },
    el('span', { className: 'grow' }, el('strong', { text: p.name }), ' ',
      el('span', { className: 'muted small', text: [t(`role.${p.role}`), p.audio_muted ? t('console.live.muted') : '', p.spotlight ? t('console.live.spotlighted') : '', p.presenting ? t('console.live.presenting') : ''].filter(Boolean).join(' · ') })),
    el('button', { className: 'btn-small', type: 'button', text: t(p.audio_muted ? 'console.live.unmute' : 'console.live.mute'),
      onclick: () => act(() => post(`/rakor/${id}/participants/${p.participant_id}/mute`, { muted: !p.audio_muted })) }),
    el('button', { className: 'btn-small', type: 'button', text: t(p.spotlight ? 'console.live.unspotlight' : 'console.live.spotlight'),
      onclick: () => act(() => post(`/rakor/${id}/spotlight`, { participant_id: p.spotlight ? null : p.participant_id })) }),
    el('button', { className: 'btn-small danger', type: 'button', text: t('console.live.remove'),
      onclick: () => { if (window.confirm(t('console.live.confirmRemove', { name: p.name }))) act(() => post(`/rakor/${id}/participants/${p.participant_id}/remove`)); } }))));
  $('live-empty').hidden = live.participants.length > 0;
  // Who presents (the room's one screen share), with the operator's stop.
  const pres = live.presentation ?? null;
  $('live-presentation').dataset.participantId = pres?.participant_id ?? '';
  $('live-presentation-text').textContent = pres ? t('console.live.presentation', { name: pres.name }) : t('console.live.noPresentation');
  $('live-presentation-stop').hidden = !pres;
  // Raised hands in order, each with "give the floor" (the same as the host's give_floor).
  const hands = live.hands ?? [];
  $('hands-list').replaceChildren(...hands.map((h, i) => el('li', { 'data-participant-id': h.participant_id },
    el('span', { className: 'grow', text: `${i + 1}. ${h.name} · ${wibTime(h.at_utc)}` }),
    el('button', { className: 'btn-small btn-floor', type: 'button', text: t('console.live.giveFloor'),
      onclick: () => act(() => post(`/rakor/${id}/participants/${h.participant_id}/floor`)) }))));
  $('hands-empty').hidden = hands.length > 0;
  renderRecordings(id, await get(`/rakor/${id}/recordings`));
  $('att-rows').replaceChildren(...reg.rows.map((row) => el('tr', { 'data-identity': row.identity },
    el('td', { text: row.site }), el('td', { text: wib(row.first_join_utc) }), el('td', { text: row.last_leave_utc ? wib(row.last_leave_utc) : '–' }),
    el('td', { text: String(row.total_minutes) }), el('td', { text: String(row.reconnects) }), el('td', { text: t(`console.presence.${row.status}`) }))));
}

/** The recording panel: REC while recording, start/stop, each recording's files and composite. */
function renderRecordings(id, rec) {
  if (id !== rakorId) return;
  $('rec-state').hidden = !rec.now.active;
  $('rec-start').hidden = rec.now.active;
  $('rec-stop').hidden = !rec.now.active;
  $('rec-list').replaceChildren(...rec.recordings.map((r) => {
    const c = r.composite;
    const comp = c ? t('console.rec.composite', { state: c.state, pct: c.state === 'running' ? `${Math.round(c.progress * 100)}%` : '' }) : '';
    const links = r.files.filter((f) => f.name !== 'composite.json').map((f) => el('a', { href: f.url, text: f.name, className: 'rec-file', download: f.name }));
    return el('li', { 'data-recording-id': r.id },
      el('span', { className: 'grow' }, el('strong', { text: t('console.rec.item', { start: wib(r.started_at), state: r.state }) }), ' ',
        el('span', { className: 'muted small', text: [comp, r.error ?? ''].filter(Boolean).join(' · ') }), el('br'),
        ...links.flatMap((a) => [a, ' '])));
  }));
  $('rec-empty').hidden = rec.recordings.length > 0;
}

$('live-presentation-stop').addEventListener('click', () => rakorId != null && act(() => post(`/rakor/${rakorId}/presentation/stop`)));
$('rec-start').addEventListener('click', () => rakorId != null && act(() => post(`/rakor/${rakorId}/recording/start`)));
$('rec-stop').addEventListener('click', () => rakorId != null && act(() => post(`/rakor/${rakorId}/recording/stop`)));
$('lobby-admit-all').addEventListener('click', () => rakorId != null && act(() => post(`/rakor/${rakorId}/lobby/admit-all`)));
$('lobby-refuse-all').addEventListener('click', () => rakorId != null && act(() => post(`/rakor/${rakorId}/lobby/refuse-all`)));
$('d-end').addEventListener('click', () => {
  if (rakorId == null || !window.confirm(t('console.detail.confirmEnd'))) return;
  const id = rakorId;
  act(async () => { await post(`/rakor/${id}/end`); await openDetail(id); });
});
