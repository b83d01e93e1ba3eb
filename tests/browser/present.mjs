// Browser scenario for presenting in a rakor (chat, raised hands, the floor, the record): the
// real `rakor serve` with a fresh data dir, a scheduled rakor made over the API, and Debian
// Chromium with fake capture for the command room (host) and one site. The site chats a message
// with markup in it: it appears as text on the command room's page (no element made, no script
// run) and in the record (JSON and the printable page, escaped). An operator mutes the site; it
// raises its hand; the hand appears on the host's page; the host clicks "Beri kesempatan bicara":
// the site is unmuted, spotlighted on the host's wall, and its hand is down. The operator
// console's live panel (a real console page) shows the hand queue and, when the site shares its
// screen, who presents (so does the host page's participant list); the operator stops it there.
// Prints "PASS/FAIL <name> (ms)" per test and "<N> passed, <M> failed"; exit 0 only if all passed.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.resolve(process.env.E2E_OUT || path.join(HERE, 'out'));
const BIN = process.env.RAKOR_BIN || path.join(HERE, '../../target/release/rakor');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PASSWORD = 'operator-kominfo-2030';
fs.mkdirSync(OUT, { recursive: true });

const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows',
];
const assert = (cond, msg) => { if (!cond) throw new Error(msg); };
// The markup a careless client would turn into an element that runs script.
const MARKUP = '<img src=x onerror="window.__xss=1"> Kasus DBD minggu ini: 12 <b>naik</b>';

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rakor-present-'));
let rakor = null;

async function startRakor() {
  execFileSync(BIN, ['operator', 'add', '--data-dir', dataDir, '--username', 'operator', '--password-stdin'],
    { input: `${PASSWORD}\n`, encoding: 'utf8' });
  const log = fs.createWriteStream(path.join(OUT, 'rakor-present.log'));
  rakor = spawn(BIN, ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--media-port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  rakor.stderr.pipe(log);
  let stdout = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner in 15 s: ${stdout}`)), 15000);
    rakor.stdout.on('data', (d) => {
      stdout += d; log.write(d);
      const m = /HTTP \+ WebSocket\s+(http:\/\/[\d.]+:\d+)/.exec(stdout);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    rakor.on('exit', (code) => { clearTimeout(timer); reject(new Error(`rakor exited with ${code}`)); });
  });
}

const wibIn = (minutes) => new Date(Date.now() + 7 * 3600e3 + minutes * 60e3).toISOString().slice(0, 16);

/** The operator's API client (login cookie). */
class Api {
  constructor(base) { this.base = base; this.cookie = ''; }
  async call(method, p, body) {
    const r = await fetch(`${this.base}/api/v1${p}`, {
      method, headers: { 'content-type': 'application/json', cookie: this.cookie }, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
    return { status: r.status, text, headers: r.headers, json: () => JSON.parse(text) };
  }
  async login() {
    const r = await fetch(`${this.base}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'operator', password: PASSWORD }) });
    assert(r.ok, `login: ${r.status}`);
    this.cookie = (r.headers.get('set-cookie') ?? '').split(';')[0];
  }
}

async function pollUntil(page, fn, pred, ms, what, arg) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await page.evaluate(fn, arg);
    if (pred(last)) return last;
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`${what}: not within ${ms} ms (last: ${JSON.stringify(last)})`);
}

const results = [];
async function test(name, fn) {
  const t0 = Date.now();
  try { await fn(); results.push(true); console.log(`PASS ${name} (${Date.now() - t0} ms)`); }
  catch (e) { results.push(false); console.log(`FAIL ${name} (${Date.now() - t0} ms): ${e.message}`); }
}

let browser = null, host = null, site = null, api = null, rakorId = null, siteId = null, op = null;

async function enter(link, label) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.log(`  [${label} page error] ${e.message}`));
  await page.goto(link);
  await page.waitForSelector('#pj-join:not([disabled])', { timeout: 15000 });
  await page.click('#pj-join');
  return page;
}

try {
  const base = await startRakor();
  api = new Api(base);
  await api.login();
  const hostSite = (await api.call('POST', '/sites', { name: 'Command Room Diskominfo', kind: 'other' })).json().id;
  const dinkes = (await api.call('POST', '/sites', { name: 'Dinas Kesehatan', kind: 'opd' })).json().id;
  rakorId = (await api.call('POST', '/rakor', { title: 'Rakor DBD', start: wibIn(10), end: wibIn(70), host_site_id: hostSite, invited_site_ids: [dinkes] })).json().id;
  const links = (await api.call('GET', `/rakor/${rakorId}/invitations`)).json();
  const linkOf = (id) => links.find((l) => l.site_id === id).link;
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });

  await test('host and site enter the rakor (the site through the lobby)', async () => {
    host = await enter(linkOf(hostSite), 'host');
    await pollUntil(host, () => window.rakorTest?.state(), (s) => s === 'connected', 20000, 'host connected');
    site = await enter(linkOf(dinkes), 'site');
    await pollUntil(site, () => document.body.dataset.lobby, (s) => s === 'waiting', 15000, 'site waits');
    await api.call('POST', `/rakor/${rakorId}/lobby/admit-all`, {});
    await pollUntil(site, () => window.rakorTest?.state(), (s) => s === 'connected', 20000, 'site connected');
    siteId = await site.evaluate(() => window.rakorTest.participantId());
    await pollUntil(host, () => window.rakorTest.participants().map((p) => p.id), (ids) => ids.includes(siteId), 10000, 'host sees the site');
  });

  await test('chat from a site appears as text on the command room page; markup stays inert', async () => {
    await site.click('#btn-chat');
    await site.fill('#chat-input', MARKUP);
    await site.press('#chat-input', 'Enter');
    await host.click('#btn-chat');
    await host.waitForFunction((t) => [...document.querySelectorAll('#chat-list .chat-text')].some((e) => e.textContent === t), MARKUP, { timeout: 10000 });
    for (const [label, page] of [['host', host], ['site', site]]) {
      await page.waitForFunction((t) => [...document.querySelectorAll('#chat-list .chat-text')].some((e) => e.textContent === t), MARKUP, { timeout: 10000 });
      const probe = await page.evaluate(() => ({
        imgs: document.querySelectorAll('#chat-list img, #chat-list b').length,
        xss: window.__xss ?? null,
        from: document.querySelector('#chat-list .chat-from')?.textContent,
      }));
      assert(probe.imgs === 0, `${label}: markup made elements: ${JSON.stringify(probe)}`);
      assert(probe.xss === null, `${label}: the onerror script ran`);
      assert(probe.from === 'Dinas Kesehatan', `${label}: sender shown as ${probe.from}`);
    }
    // An oversized message is refused with a clear message on the sender's page only.
    await site.evaluate(() => window.rakorTest.send({ type: 'chat', text: 'x'.repeat(2001) }));
    await site.waitForSelector('#chat-error:not([hidden])', { timeout: 5000 });
    const err = await site.textContent('#chat-error');
    assert(err.includes('terlalu panjang'), `oversized chat message: ${err}`);
    const hostErrors = await host.evaluate(() => window.rakorTest.serverErrors());
    assert(hostErrors.length === 0, `the host saw an error: ${JSON.stringify(hostErrors)}`);
  });

  await test('the chat is in the record (JSON, and escaped in the printable page)', async () => {
    let rec = null;
    for (let i = 0; i < 50; i++) {
      rec = (await api.call('GET', `/rakor/${rakorId}/record`)).json();
      if (rec.chat.length >= 1) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert(rec.chat.length === 1, `record chat: ${JSON.stringify(rec.chat)}`);
    assert(rec.chat[0].text === MARKUP && rec.chat[0].from_site === 'Dinas Kesehatan', `record: ${JSON.stringify(rec.chat[0])}`);
    const html = (await api.call('GET', `/rakor/${rakorId}/record?format=html`)).text;
    assert(html.includes('&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;') && !html.includes('<img'), 'the printable page escapes the message');
    // The operator's console opens it as a page: nothing runs there either.
    const opCtx = await browser.newContext();
    const [name, value] = api.cookie.split('=');
    await opCtx.addCookies([{ name, value, url: api.base }]);
    const op = await opCtx.newPage();
    await op.goto(`${api.base}/api/v1/rakor/${rakorId}/record?format=html`);
    const cell = await op.textContent('#record-chat tbody td.text');
    assert(cell === MARKUP, `record page cell: ${cell}`);
    assert(await op.evaluate(() => document.querySelectorAll('#record-chat img').length === 0 && window.__xss === undefined), 'record page inert');
    await opCtx.close();
  });

  await test('the operator console opens the rakor live panel', async () => {
    const opCtx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const [name, value] = api.cookie.split('=');
    await opCtx.addCookies([{ name, value, url: api.base }]);
    op = await opCtx.newPage();
    op.on('pageerror', (e) => console.log(`  [console page error] ${e.message}`));
    await op.goto(`${api.base}/console`);
    await op.waitForSelector(`#view-rakor:not([hidden]) li[data-rakor-id="${rakorId}"] button`, { timeout: 15000 });
    await op.click(`li[data-rakor-id="${rakorId}"] button`);
    await op.waitForSelector(`#view-detail:not([hidden]) #live-list li[data-participant-id="${siteId}"]`, { timeout: 15000 });
    const none = await op.textContent('#live-presentation-text');
    assert(none === 'Tidak ada yang presentasi.', `console before any presentation: ${none}`);
  });

  await test('a raised hand appears on the host page; "give the floor" unmutes and spotlights the site', async () => {
    await api.call('POST', `/rakor/${rakorId}/participants/${siteId}/mute`, { muted: true });
    await pollUntil(host, (id) => window.rakorTest.participants().find((p) => p.id === id)?.audioMuted, (m) => m === true, 10000, 'site muted on the host page', siteId);
    await site.click('#btn-hand');
    await host.waitForSelector(`#hands-box:not([hidden]) li[data-participant-id="${siteId}"]`, { timeout: 10000 });
    const name = await host.textContent(`#hands-box li[data-participant-id="${siteId}"] .hand-name`);
    assert(name === 'Dinas Kesehatan', `hand shown as ${name}`);
    await pollUntil(site, () => document.getElementById('btn-hand').getAttribute('aria-pressed'), (v) => v === 'true', 5000, 'the site sees its hand up');
    // The operator console's hand queue shows it too (refreshed every 2 s).
    await op.waitForSelector(`#hands-list li[data-participant-id="${siteId}"]`, { timeout: 10000 });
    const queued = await op.textContent(`#hands-list li[data-participant-id="${siteId}"]`);
    assert(queued.includes('1. Dinas Kesehatan'), `console hand queue: ${queued}`);
    const label = await host.textContent(`#hands-box li[data-participant-id="${siteId}"] .btn-floor`);
    assert(label === 'Beri kesempatan bicara', `button label: ${label}`);
    await host.click(`#hands-box li[data-participant-id="${siteId}"] .btn-floor`);
    await pollUntil(host, (id) => window.rakorTest.participants().find((p) => p.id === id)?.audioMuted, (m) => m === false, 10000, 'site unmuted on the host page', siteId);
    await pollUntil(host, () => window.rakorTest.spotlight(), (s) => s === siteId, 10000, 'site spotlighted', undefined);
    await pollUntil(host, () => window.rakorTest.mainParticipantId(), (m) => m === siteId, 10000, 'site on the host main view');
    await host.waitForSelector('#hands-box', { state: 'hidden', timeout: 5000 });
    await pollUntil(site, () => document.getElementById('btn-hand').getAttribute('aria-pressed'), (v) => v === 'false', 5000, 'the site hand is down');
    await op.waitForSelector('#hands-empty:not([hidden])', { timeout: 10000 });
    const rec = (await api.call('GET', `/rakor/${rakorId}/record`)).json();
    assert(rec.floor.length === 1 && rec.floor[0].site === 'Dinas Kesehatan', `record floor: ${JSON.stringify(rec.floor)}`);
  });

  await test('the console and the host page show who presents; the operator stops it', async () => {
    await site.click('#btn-screen');
    await pollUntil(site, () => window.rakorTest.screenShare(), (v) => v.live && v.trackId, 20000, 'the site shares its screen');
    // The host page: the presentation label and the participant list name the presenter.
    // (The participant panel itself is closed at this width: the list is there, not shown.)
    await host.waitForSelector(`#participant-list li[data-participant-id="${siteId}"][data-presenting="true"] .pl-presenting:not([hidden])`, { state: 'attached', timeout: 20000 });
    const chip = await host.textContent(`#participant-list li[data-participant-id="${siteId}"] .pl-presenting`);
    assert(chip === 'presentasi', `host page chip: ${chip}`);
    const label = await host.textContent('#presentation-view .presentation-name');
    assert(label.includes('Dinas Kesehatan'), `host page presentation label: ${label}`);
    // The operator console's live panel.
    await op.waitForSelector(`#live-presentation[data-participant-id="${siteId}"]`, { timeout: 10000 });
    const text = await op.textContent('#live-presentation-text');
    assert(text === 'Sedang presentasi: Dinas Kesehatan', `console presentation: ${text}`);
    const row = await op.textContent(`#live-list li[data-participant-id="${siteId}"]`);
    assert(row.includes('sedang presentasi'), `console participant row: ${row}`);
    const live = (await api.call('GET', `/rakor/${rakorId}/live`)).json();
    assert(live.presentation?.participant_id === siteId && live.presentation.name === 'Dinas Kesehatan', `live API: ${JSON.stringify(live.presentation)}`);
    assert(live.participants.find((p) => p.participant_id === siteId)?.sources.includes('screen'), `live sources: ${JSON.stringify(live.participants)}`);
    await op.screenshot({ path: path.join(OUT, 'present-console.png') });
    // The operator stops it from the console: gone everywhere.
    await op.click('#live-presentation-stop');
    await pollUntil(host, () => window.rakorTest.presentation(), (v) => v === null, 15000, 'host: presentation gone');
    await pollUntil(site, () => window.rakorTest.screenShare(), (v) => !v.live, 15000, 'site capture stopped');
    await op.waitForSelector('#live-presentation-stop[hidden]', { state: 'attached', timeout: 10000 });
    assert(await host.evaluate((id) => document.querySelector(`#participant-list li[data-participant-id="${id}"]`)?.dataset.presenting, siteId) === 'false', 'host chip cleared');
  });
} catch (e) {
  results.push(false);
  console.log(`FAIL setup: ${e.message}`);
} finally {
  try { await host?.screenshot({ path: path.join(OUT, 'present-host.png') }); } catch { /* closed */ }
  try { await site?.screenshot({ path: path.join(OUT, 'present-site.png') }); } catch { /* closed */ }
  try { await browser?.close(); } catch { /* gone */ }
  rakor?.kill('SIGTERM');
  fs.rmSync(dataDir, { recursive: true, force: true });
}
const passed = results.filter(Boolean).length;
const failed = results.length - passed;
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
