// The operator console (/console): login, the directory of sites, scheduling a rakor, the list
// of upcoming and past rakor. One rakor's page (links, lobby, live panel, attendance) is in
// detail.js. Every string comes from i18n/{id,en}.js (`console.*` keys).
import { applyI18n, bindLangToggle, onLangChange, setText, t } from '../i18n.js';
import { api, get, patch, post } from './api.js';
import { el, wib } from './format.js';
import { openDetail, closeDetail } from './detail.js';

const $ = (id) => document.getElementById(id);
const VIEWS = ['view-login', 'view-sites', 'view-rakor', 'view-detail', 'view-audit'];
let sites = [];
let current = 'view-rakor';

export function show(view) {
  for (const v of VIEWS) $(v).hidden = v !== view;
  $('nav').hidden = view === 'view-login';
  if (view !== 'view-detail') closeDetail();
  if (view !== 'view-login') current = view;
}

export function notice(text, isError = false) {
  $('notice-text').textContent = text;
  $('notice').dataset.kind = isError ? 'error' : 'info';
  $('notice').hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { $('notice').hidden = true; }, 6000);
}

/** An API error as a sentence for the operator. */
export function errorText(err) {
  if (err.status === 401) return t('console.error.login');
  if (err.code === 'network') return t('console.error.network');
  const field = err.field ? `${t(`console.field.${err.field}`)}: ` : '';
  return `${field}${err.message}`;
}

function showError(box, err) {
  box.textContent = errorText(err);
  box.hidden = false;
}

export function onAuthLost(err) {
  if (err?.status === 401) { show('view-login'); return true; }
  return false;
}

// ---- login ----------------------------------------------------------------------------
$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('login-error').hidden = true;
  try {
    const me = await post('/auth/login', { username: $('login-user').value, password: $('login-pass').value });
    $('login-pass').value = '';
    await enter(me.operator);
  } catch (err) {
    const key = err.status === 429 ? 'console.login.locked' : err.status === 401 ? 'console.login.wrong' : null;
    $('login-error').textContent = key ? t(key) : errorText(err);
    $('login-error').hidden = false;
  }
});

$('logout').addEventListener('click', async () => {
  try { await post('/auth/logout'); } catch { /* already logged out */ }
  show('view-login');
});

async function enter(operator) {
  setText($('whoami'), 'console.whoami', { name: operator.username });
  await loadSites();
  await loadRakor();
  show('view-rakor');
}

// ---- directory ----------------------------------------------------------------------------
async function loadSites() {
  sites = await get('/sites');
  renderSites();
  renderScheduleChoices();
}

function renderSites() {
  const body = $('site-list');
  body.replaceChildren();
  for (const s of sites) {
    const toggle = el('button', {
      className: 'btn-small', type: 'button', text: t(s.active ? 'console.sites.deactivate' : 'console.sites.activate'),
      onclick: async () => {
        try { await patch(`/sites/${s.id}`, { active: !s.active }); await loadSites(); } catch (err) { if (!onAuthLost(err)) notice(errorText(err), true); }
      },
    });
    body.append(el('tr', { 'data-site-id': s.id },
      el('td', { text: s.name }), el('td', { text: t(`console.kind.${s.kind}`) }),
      el('td', { text: s.contact_person }), el('td', { text: s.phone }),
      el('td', { text: t(s.active ? 'console.sites.active' : 'console.sites.inactive') }), el('td', {}, toggle)));
  }
}

$('site-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('site-error').hidden = true;
  try {
    await post('/sites', {
      name: $('site-name').value, kind: $('site-kind').value,
      contact_person: $('site-contact').value, phone: $('site-phone').value,
    });
    notice(t('console.sites.added', { name: $('site-name').value.trim() }));
    $('site-form').reset();
    await loadSites();
  } catch (err) {
    if (!onAuthLost(err)) showError($('site-error'), err);
  }
});

$('site-import').addEventListener('change', async () => {
  const file = $('site-import').files?.[0];
  if (!file) return;
  try {
    const res = await api('POST', '/sites/import', await file.text(), 'text/csv');
    notice(t('console.sites.imported', { n: res.imported }));
    await loadSites();
  } catch (err) {
    if (!onAuthLost(err)) notice(errorText(err), true);
  }
  $('site-import').value = '';
});

// ---- rakor list and schedule form -----------------------------------------------------
function renderScheduleChoices() {
  const active = sites.filter((s) => s.active);
  const host = $('rk-host');
  const keep = host.value;
  host.replaceChildren(...active.map((s) => el('option', { value: String(s.id), text: s.name })));
  if (keep) host.value = keep;
  const box = $('rk-invited');
  const checked = new Set([...box.querySelectorAll('input:checked')].map((i) => i.value));
  box.replaceChildren(...active.map((s) => el('label', {},
    el('input', { type: 'checkbox', value: String(s.id), checked: checked.has(String(s.id)), 'data-site-name': s.name }),
    el('span', { text: s.name }))));
}

async function loadRakor() {
  const list = await get('/rakor');
  const upcoming = list.filter((r) => r.state !== 'ended').sort((a, b) => a.start_utc.localeCompare(b.start_utc));
  const past = list.filter((r) => r.state === 'ended');
  const item = (r) => el('li', { 'data-rakor-id': r.id },
    el('span', { className: 'grow' }, el('strong', { text: r.title }), el('br'), el('span', { className: 'muted small', text: `${wib(r.start_utc)} – ${wib(r.end_utc)}` })),
    el('span', { className: 'state-chip', 'data-state': r.state, text: t(`console.state.${r.state}`) }),
    el('button', { className: 'btn', type: 'button', text: t('console.rakor.open'), onclick: () => openRakor(r.id) }));
  $('rakor-upcoming').replaceChildren(...upcoming.map(item));
  $('rakor-past').replaceChildren(...past.map(item));
}

async function openRakor(id) {
  show('view-detail');
  try { await openDetail(id); } catch (err) { if (!onAuthLost(err)) notice(errorText(err), true); }
}

$('rakor-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('rakor-error').hidden = true;
  const invited = [...$('rk-invited').querySelectorAll('input:checked')].map((i) => Number(i.value));
  try {
    const r = await post('/rakor', {
      title: $('rk-title').value, agenda: $('rk-agenda').value,
      start: $('rk-start').value, end: $('rk-end').value,
      host_site_id: Number($('rk-host').value), invited_site_ids: invited,
    });
    $('rakor-form').reset();
    renderScheduleChoices();
    notice(t('console.rakor.scheduled', { title: r.title }));
    await loadRakor();
    await openRakor(r.id);
  } catch (err) {
    if (!onAuthLost(err)) showError($('rakor-error'), err);
  }
});

$('nav-sites').addEventListener('click', () => show('view-sites'));
$('nav-audit').addEventListener('click', async () => { show('view-audit'); try { await loadAudit(); } catch (err) { onAuthLost(err); } });

/** The audit log (newest 200): logins with address, moderation, link and operator changes. */
async function loadAudit() {
  const rows = await get('/audit?limit=200');
  $('audit-rows').replaceChildren(...rows.map((a) => el('tr', { 'data-action': a.action },
    el('td', { text: wib(a.at_utc) }), el('td', { text: a.actor }), el('td', { text: a.address }),
    el('td', { text: a.action }), el('td', { text: a.target }), el('td', { text: a.detail }))));
}
$('nav-rakor').addEventListener('click', async () => { show('view-rakor'); try { await loadRakor(); } catch (err) { onAuthLost(err); } });
$('d-back').addEventListener('click', async () => { show('view-rakor'); try { await loadRakor(); } catch (err) { onAuthLost(err); } });

// ---- start -------------------------------------------------------------------------------
bindLangToggle($('lang-toggle'));
applyI18n();
onLangChange(() => { renderSites(); loadRakor().catch(() => {}); });
get('/auth/me').then((me) => enter(me.operator), () => show('view-login'));
window.rakorConsole = { show, current: () => current };
