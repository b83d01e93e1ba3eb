// Browser scenario for screen sharing: the real `rakor serve` and the web client in Debian
// Chromium (playwright-core). Headless Chromium's getDisplayMedia with
// --use-fake-ui-for-media-stream --use-fake-device-for-media-stream returns a fake 1280x720
// "screen" without a picker. A command room (host) and two sites: a site shares its screen and
// every page's main view shows it (decoded frames); a second site's share is refused; a site's
// stop of another's presentation is refused; the host stops it.
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
const WAIT_MS = Number(process.env.E2E_MEDIA_TIMEOUT_MS || 30000);
const ROOM = 'rakor-screen';
fs.mkdirSync(OUT, { recursive: true });

const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows',
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const assert = (cond, msg) => { if (!cond) throw new Error(msg); };

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rakor-screen-'));
let rakor = null;

async function startRakor() {
  const log = fs.createWriteStream(path.join(OUT, 'rakor-screen.log'));
  rakor = spawn(BIN, ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--media-port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  rakor.stderr.pipe(log);
  let stdout = '';
  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`rakor printed no banner in 15 s; stdout: ${stdout}`)), 15000);
    rakor.stdout.on('data', (d) => {
      stdout += d;
      log.write(d);
      const m = /HTTP \+ WebSocket\s+(http:\/\/[\d.]+:\d+)/.exec(stdout);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    rakor.on('exit', (code) => { clearTimeout(timer); reject(new Error(`rakor exited with ${code}`)); });
  });
  const t0 = Date.now();
  while (Date.now() - t0 < 10000) {
    try { if ((await fetch(`${base}/healthz`)).ok) return base; } catch { /* not yet */ }
    await sleep(100);
  }
  throw new Error('rakor /healthz did not answer');
}

function mint(role, identity, name) {
  const out = execFileSync(BIN, ['token', '--data-dir', dataDir, '--room', ROOM, '--identity', identity,
    '--name', name, '--role', role, '--ttl', '10m'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return out.split('\n')[0].trim();
}

async function pollUntil(page, fn, pred, timeoutMs, what, arg) {
  const t0 = Date.now(); let last;
  while (Date.now() - t0 < timeoutMs) {
    last = await page.evaluate(fn, arg);
    if (pred(last)) return last;
    await sleep(150);
  }
  throw new Error(`timeout after ${timeoutMs} ms waiting for ${what}; last=${JSON.stringify(last)}`);
}

const results = [];
async function test(name, fn) {
  const t0 = Date.now();
  try { await fn(); results.push(true); console.log(`PASS ${name} (${Date.now() - t0} ms)`); }
  catch (e) { results.push(false); console.log(`FAIL ${name} (${Date.now() - t0} ms): ${e.message}`); }
}

class Peer {
  constructor(label, token) { Object.assign(this, { label, token, id: null, page: null }); }

  async open(browser, base) {
    this.ctx = await browser.newContext({ viewport: { width: 1100, height: 650 } });
    this.page = await this.ctx.newPage();
    this.page.on('pageerror', (e) => console.log(`  [${this.label}] pageerror: ${e.message}`));
    await this.page.goto(`${base}/join?token=${encodeURIComponent(this.token)}&quality=low`);
    await pollUntil(this.page, () => window.rakorTest?.phase(), (p) => p === 'prejoin', 10000, `${this.label} pre-join`);
    await this.page.waitForSelector('#pj-join:not([disabled])', { timeout: 10000 });
    await this.page.click('#pj-join');
    await pollUntil(this.page, () => window.rakorTest.state(), (s) => s === 'connected', 15000, `${this.label} connected`);
    this.id = await this.page.evaluate(() => window.rakorTest.participantId());
  }

  eval(fn, arg) { return this.page.evaluate(fn, arg); }
  presentation() { return this.eval(() => window.rakorTest.presentation()); }
  errors() { return this.eval(() => window.rakorTest.serverErrors().map((e) => e.code)); }
}

let browser;
try {
  const base = await startRakor();
  const host = new Peer('command-room', mint('host', 'command-room', 'Ruang Komando'));
  const site1 = new Peer('bappeda', mint('participant', 'bappeda', 'Bappeda'));
  const site2 = new Peer('dinkes', mint('participant', 'dinkes', 'Dinas Kesehatan'));
  const all = [host, site1, site2];
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });

  await test('screen: command room and two sites join', async () => {
    for (const p of all) await p.open(browser, base);
    assert(new Set(all.map((p) => p.id)).size === 3, 'three participants');
  });

  await test('screen: a site shares its screen and every main view shows it', async () => {
    await site1.page.click('#btn-screen');
    await pollUntil(site1.page, () => window.rakorTest.screenShare(), (s) => s.live && s.trackId, WAIT_MS, 'site1 screen track published');
    for (const p of all) {
      const pres = await pollUntil(p.page, () => window.rakorTest.presentation(),
        (v) => v && v.visible && v.inMainView && v.width > 0, WAIT_MS, `${p.label} shows the presentation`);
      assert(pres.participantId === site1.id, `${p.label}: presenter ${pres.participantId}, expected ${site1.id}`);
    }
    // The remote pages decode the shared screen at its size (fake capture: 1280x720, low quality or not).
    for (const p of [host, site2]) {
      const pres = await p.presentation();
      assert(pres.width >= 640, `${p.label} shows the screen at ${pres.width}x${pres.height}`);
    }
    // The presenter's camera is no longer the main view: it is in the strip / wall.
    const main = await site2.eval(() => window.rakorTest.mainParticipantId());
    assert(main === null, `site2 main view shows ${main} besides the presentation`);
    assert(await site1.eval(() => document.getElementById('btn-screen').dataset.on) === 'true', 'share button shows sharing');
    await host.page.screenshot({ path: path.join(OUT, 'screen-host.png') });
  });

  await test('screen: a second presenter is refused; a site cannot stop another presentation', async () => {
    await site2.page.click('#btn-screen');
    await pollUntil(site2.page, () => window.rakorTest.serverErrors().map((e) => e.code),
      (c) => c.includes('presentation_active'), WAIT_MS, 'site2 refused');
    await pollUntil(site2.page, () => window.rakorTest.screenShare(), (s) => !s.live, WAIT_MS, 'site2 capture stopped');
    await site2.eval(() => window.rakorTest.send({ type: 'moderate', action: 'stop_presentation' }));
    await pollUntil(site2.page, () => window.rakorTest.serverErrors().map((e) => e.code),
      (c) => c.includes('forbidden'), WAIT_MS, 'site2 stop refused');
    for (const p of all) {
      const pres = await p.presentation();
      assert(pres?.participantId === site1.id, `${p.label} still shows site1: ${JSON.stringify(pres)}`);
    }
    for (const p of [host, site1]) {
      const errs = await p.errors();
      assert(errs.length === 0, `${p.label} got errors ${errs}`);
    }
  });

  await test('screen: the host stops the presentation', async () => {
    await host.page.waitForSelector('#btn-stop-presentation:not([hidden])', { timeout: 10000 });
    assert(await site2.eval(() => document.getElementById('btn-stop-presentation').hidden), 'a site has no stop button');
    await host.page.click('#btn-stop-presentation');
    for (const p of all) {
      await pollUntil(p.page, () => window.rakorTest.presentation(), (v) => v === null, WAIT_MS, `${p.label} presentation gone`);
      assert(await p.eval(() => document.getElementById('presentation-view').hidden), `${p.label} view hidden`);
    }
    await pollUntil(site1.page, () => window.rakorTest.screenShare(), (s) => !s.live, WAIT_MS, 'site1 capture stopped');
    assert(await site1.eval(() => document.getElementById('btn-screen').dataset.on) === 'false', 'share button back');
  });
} catch (e) {
  results.push(false);
  console.log(`FAIL screen setup: ${e.message}`);
} finally {
  await browser?.close().catch(() => {});
  rakor?.kill('SIGTERM');
}
const passed = results.filter(Boolean).length;
console.log(`${passed} passed, ${results.length - passed} failed`);
process.exit(results.length && passed === results.length ? 0 : 1);
