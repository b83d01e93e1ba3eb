// Browser scenario for the operator console (/console): the real `rakor serve` with a fresh
// data dir, the first operator created with `rakor operator add --password-stdin`, and Debian
// Chromium. An operator logs in, adds two sites, schedules a rakor (times in WIB), opens a
// site's invitation link in a second page, admits it from the lobby ("Menunggu diizinkan
// operator" on the site's page), and downloads the attendance CSV and checks the site's row.
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
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const assert = (cond, msg) => { if (!cond) throw new Error(msg); };

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rakor-console-'));
let rakor = null;

async function startRakor() {
  execFileSync(BIN, ['operator', 'add', '--data-dir', dataDir, '--username', 'operator', '--password-stdin'],
    { input: `${PASSWORD}\n`, encoding: 'utf8' });
  const log = fs.createWriteStream(path.join(OUT, 'rakor-console.log'));
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

/** WIB wall-clock time `minutes` from now, as a datetime-local value. */
const wibIn = (minutes) => new Date(Date.now() + 7 * 3600e3 + minutes * 60e3).toISOString().slice(0, 16);

const results = [];
async function test(name, fn) {
  const t0 = Date.now();
  try { await fn(); results.push(true); console.log(`PASS ${name} (${Date.now() - t0} ms)`); }
  catch (e) { results.push(false); console.log(`FAIL ${name} (${Date.now() - t0} ms): ${e.message}`); }
}

let browser = null;
let op = null;      // the operator's page
let site = null;    // the site's page
let rakorId = null;
let link = null;
const SITES = ['Command Room Diskominfo', 'Dinas Perhubungan'];

try {
  const base = await startRakor();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  const opCtx = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  op = await opCtx.newPage();
  op.on('pageerror', (e) => console.log(`  [console page error] ${e.message}`));

  await test('console: unauthenticated API refused, login form in Indonesian', async () => {
    const r = await fetch(`${base}/api/v1/sites`);
    assert(r.status === 401, `GET /api/v1/sites without login: ${r.status}`);
    await op.goto(`${base}/console`);
    await op.waitForSelector('#view-login:not([hidden])', { timeout: 10000 });
    const title = await op.textContent('#view-login h1');
    assert(title.includes('Masuk sebagai operator'), `login title: ${title}`);
    await op.fill('#login-user', 'operator');
    await op.fill('#login-pass', 'salah-sekali');
    await op.click('#login-submit');
    await op.waitForSelector('#login-error:not([hidden])', { timeout: 5000 });
    assert((await op.textContent('#login-error')).includes('salah'), 'wrong password message');
    await op.fill('#login-pass', PASSWORD);
    await op.click('#login-submit');
    await op.waitForSelector('#view-rakor:not([hidden])', { timeout: 10000 });
    const cookies = await opCtx.cookies();
    const c = cookies.find((x) => x.name === 'rakor_session');
    assert(c && c.httpOnly && c.sameSite === 'Strict', `session cookie: ${JSON.stringify(c)}`);
  });

  await test('console: add two sites to the directory', async () => {
    await op.click('#nav-sites');
    for (const [i, name] of SITES.entries()) {
      await op.fill('#site-name', name);
      await op.selectOption('#site-kind', i === 0 ? 'other' : 'opd');
      await op.fill('#site-contact', 'Bapak Kepala');
      await op.fill('#site-phone', '0811-3373-119');
      await op.click('#site-add');
      await op.waitForFunction((n) => [...document.querySelectorAll('#site-list tr td:first-child')].some((td) => td.textContent === n), name, { timeout: 5000 });
    }
    // A duplicate name is refused with a clear message.
    await op.fill('#site-name', 'dinas perhubungan');
    await op.click('#site-add');
    await op.waitForSelector('#site-error:not([hidden])', { timeout: 5000 });
    assert((await op.textContent('#site-error')).includes('already exists'), 'duplicate site message');
    assert(await op.locator('#site-list tr').count() === 2, 'two sites listed');
  });

  await test('console: schedule a rakor and get the invitation links', async () => {
    await op.click('#nav-rakor');
    await op.fill('#rk-title', 'Rakor Penanganan COVID-19');
    await op.fill('#rk-agenda', 'Kesiapan OPD: cuci tangan, termometer, jarak duduk');
    await op.fill('#rk-start', wibIn(10));
    await op.fill('#rk-end', wibIn(70));
    await op.selectOption('#rk-host', { label: SITES[0] });
    await op.check(`#rk-invited input[data-site-name="${SITES[1]}"]`);
    await op.click('#rk-submit');
    await op.waitForSelector('#view-detail:not([hidden])', { timeout: 10000 });
    await op.waitForSelector('#d-links tr a.invite-link', { timeout: 10000 });
    const rows = await op.$$eval('#d-links tr', (trs) => trs.map((tr) => ({ site: tr.children[0].textContent, href: tr.querySelector('a')?.href })));
    assert(rows.length === 2, `links: ${JSON.stringify(rows)}`);
    link = rows.find((r) => r.site === SITES[1])?.href;
    assert(link && link.includes('/join?token='), `site link: ${link}`);
    rakorId = Number(new URL(await op.getAttribute('#att-csv', 'href'), base).pathname.split('/')[4]);
    assert(rakorId > 0, 'rakor id');
    const when = await op.textContent('#d-when');
    assert(when.includes('WIB'), `times shown in WIB: ${when}`);
  });

  await test('site: opens its invitation, waits in the lobby, the operator admits it', async () => {
    const siteCtx = await browser.newContext({ viewport: { width: 960, height: 640 } });
    site = await siteCtx.newPage();
    site.on('pageerror', (e) => console.log(`  [site page error] ${e.message}`));
    await site.goto(link);
    await site.waitForSelector('#pj-join:not([disabled])', { timeout: 15000 });
    await site.click('#pj-join');
    await site.waitForFunction(() => document.body.dataset.lobby === 'waiting', null, { timeout: 15000 });
    const banner = await site.textContent('#banner');
    assert(banner.includes('Menunggu diizinkan operator'), `site banner: ${banner}`);
    await op.waitForSelector('#lobby-list li .lobby-admit', { timeout: 10000 });
    assert((await op.textContent('#lobby-list li')).includes(SITES[1]), 'lobby shows the site');
    await op.click('#lobby-list li .lobby-admit');
    await site.waitForFunction(() => document.body.dataset.lobby === 'admitted', null, { timeout: 10000 });
    await site.waitForSelector('#conn-state[data-state="connected"]', { timeout: 20000 });
    await op.waitForFunction((n) => [...document.querySelectorAll('#live-list li strong')].some((s) => s.textContent === n), SITES[1], { timeout: 10000 });
  });

  await test('console: attendance CSV has the site row (UTF-8 BOM)', async () => {
    await sleep(1500);
    await site.click('#btn-leave');
    await op.waitForFunction((n) => {
      const row = [...document.querySelectorAll('#att-rows tr')].find((tr) => tr.children[0].textContent === n);
      return row && row.children[2].textContent !== '–';
    }, SITES[1], { timeout: 10000 });
    const [download] = await Promise.all([op.waitForEvent('download', { timeout: 10000 }), op.click('#att-csv')]);
    const file = path.join(OUT, 'daftar-hadir.csv');
    await download.saveAs(file);
    const bytes = fs.readFileSync(file);
    assert(bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf, 'UTF-8 BOM');
    const lines = bytes.toString('utf8').slice(1).split('\r\n');
    assert(lines[0].startsWith('No,Lokasi,Jenis'), `header: ${lines[0]}`);
    const row = lines.find((l) => l.includes(SITES[1]));
    assert(row, `no row for ${SITES[1]}: ${lines.join(' | ')}`);
    const cells = row.split(',');
    assert(cells[2] === 'opd' && cells[4] === 'participant' && cells[9] === 'hadir', `row: ${row}`);
    assert(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/.test(cells[5]) && /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/.test(cells[6]), `times: ${row}`);
  });
} catch (e) {
  results.push(false);
  console.log(`FAIL setup: ${e.message}`);
} finally {
  try { await op?.screenshot({ path: path.join(OUT, 'console.png'), fullPage: true }); } catch { /* closed */ }
  try { await browser?.close(); } catch { /* gone */ }
  rakor?.kill('SIGTERM');
  fs.rmSync(dataDir, { recursive: true, force: true });
}
const passed = results.filter(Boolean).length;
const failed = results.length - passed;
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
