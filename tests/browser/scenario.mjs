// Browser scenario: the real `rakor serve` (temp data dir, 127.0.0.1, any free ports), tokens
// minted with the real `rakor token`, and the web client in Debian Chromium (playwright-core).
// One browser, one page per participant (320x240 fake camera + fake microphone): a command room
// (host) and three sites. Asserts on the DOM and on getStats with polling deadlines.
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
const MEDIA_TIMEOUT_MS = Number(process.env.E2E_MEDIA_TIMEOUT_MS || 30000);
const ROOM = 'rakor-e2e';
fs.mkdirSync(OUT, { recursive: true });

const FLAGS = [
  '--no-sandbox', '--disable-gpu',
  '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  // Several pages play at once in one headless browser: keep background pages running at full speed.
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows',
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const assert = (cond, msg) => { if (!cond) throw new Error(msg); };

// ---- the real server --------------------------------------------------------------------------
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rakor-browser-'));
let rakor = null;

async function startRakor() {
  const log = fs.createWriteStream(path.join(OUT, 'rakor.log'));
  rakor = spawn(BIN, ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--media-port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
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
    rakor.on('exit', (code) => { clearTimeout(timer); reject(new Error(`rakor exited with ${code}; see out/rakor.log`)); });
  });
  const t0 = Date.now();
  while (Date.now() - t0 < 10000) {
    try { if ((await fetch(`${base}/healthz`)).ok) return base; } catch { /* not yet */ }
    await sleep(100);
  }
  throw new Error('rakor /healthz did not answer');
}

function mint(role, identity, name, ttl = '10m') {
  const out = execFileSync(BIN, ['token', '--data-dir', dataDir, '--room', ROOM, '--identity', identity,
    '--name', name, '--role', role, '--ttl', ttl], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return out.split('\n')[0].trim();
}

const tokenExp = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).exp;

// ---- helpers -----------------------------------------------------------------------------------
async function pollUntil(page, fn, pred, timeoutMs, what, arg) {
  const t0 = Date.now(); let last;
  while (Date.now() - t0 < timeoutMs) {
    last = await page.evaluate(fn, arg);
    if (pred(last)) return { value: last, ms: Date.now() - t0 };
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

function browserPssMiB(rootPid = process.pid) {
  const kids = new Map();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
      (kids.get(ppid) || kids.set(ppid, []).get(ppid)).push(Number(d));
    } catch { /* gone */ }
  }
  let kb = 0; const todo = [rootPid];
  while (todo.length) {
    const pid = todo.pop();
    if (pid !== rootPid && pid !== rakor?.pid) {
      try { kb += Number(/^Pss:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))[1]); } catch { /* gone */ }
    }
    if (pid !== rakor?.pid) todo.push(...(kids.get(pid) || []));
  }
  return Math.round(kb / 1024);
}

// One participant = one browser context with one page.
class Peer {
  constructor(label, token, viewport) { Object.assign(this, { label, token, viewport, id: null, page: null }); }

  async open(browser, base, extra = '&quality=low', initScript = null) {
    this.ctx = await browser.newContext({ viewport: this.viewport });
    if (initScript) await this.ctx.addInitScript(initScript);
    this.page = await this.ctx.newPage();
    this.page.on('console', (m) => { if (m.type() === 'error') console.log(`  [${this.label}] console: ${m.text()}`); });
    this.page.on('pageerror', (e) => console.log(`  [${this.label}] pageerror: ${e.message}`));
    await this.page.goto(`${base}/join?token=${encodeURIComponent(this.token)}${extra}`);
  }

  async join() {
    await pollUntil(this.page, () => window.rakorTest?.phase(), (p) => p === 'prejoin', 10000, `${this.label} pre-join`);
    await this.page.waitForSelector('#pj-join:not([disabled])', { timeout: 10000 });
    await this.page.click('#pj-join');
  }

  async connected() {
    await pollUntil(this.page, () => window.rakorTest.state(), (s) => s === 'connected', 15000, `${this.label} connected`);
    this.id = await this.page.evaluate(() => window.rakorTest.participantId());
    return this.id;
  }

  stats() { return this.page.evaluate(() => window.rakorTest.stats()); }
  eval(fn, arg) { return this.page.evaluate(fn, arg); }
}

const decodingAll = (ids) => (s) => ids.every((id) => s.participants[id]?.framesDecoded > 0 && s.participants[id]?.audioPacketsReceived > 0);

// ---- the scenario ------------------------------------------------------------------------------
let browser;
try {
  const base = await startRakor();
  console.log(`rakor at ${base} (data dir ${dataDir})`);
  // Minted now with a 1 s lifetime; used at the end once the clock says it has expired.
  const expiredToken = mint('participant', 'late-site', 'Puskesmas Terlambat', '1s');

  const host = new Peer('command-room', mint('host', 'command-room', 'Ruang Komando Bupati'), { width: 1280, height: 720 });
  const sites = [
    new Peer('site1', mint('participant', 'dishub', 'Dinas Perhubungan'), { width: 960, height: 600 }),
    new Peer('site2', mint('participant', 'rsud', 'RSUD dr. Ashari'), { width: 960, height: 600 }),
    new Peer('site3', mint('participant', 'disdukcapil', 'Disdukcapil'), { width: 960, height: 600 }),
  ];
  const all = [host, ...sites];
  const [site1, site2, site3] = sites;

  const tl = Date.now();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  console.log(`chromium ${browser.version()} launched in ${Date.now() - tl} ms`);

  await test('client modules: wall grid geometry and translations (no browser)', async () => {
    const { bestGrid } = await import('../../web-client/js/grid.js');
    const table = [[1, 1280, 720, 1], [3, 1280, 640, 2], [4, 1280, 720, 2], [9, 1280, 720, 3], [60, 1920, 1000, 8], [60, 390, 700, 5]];
    for (const [n, w, h, cols] of table) {
      const g = bestGrid(n, w, h);
      assert(g.cols === cols && g.cols * g.rows >= n, `bestGrid(${n}, ${w}, ${h}) = ${JSON.stringify(g)}, expected ${cols} columns`);
    }
    const id = (await import('../../web-client/i18n/id.js')).default;
    const en = (await import('../../web-client/i18n/en.js')).default;
    const missing = [...Object.keys(id).filter((k) => !(k in en)), ...Object.keys(en).filter((k) => !(k in id))];
    assert(missing.length === 0, `keys not in both languages: ${missing}`);
  });

  await test('web client pages are served by rakor (landing, join, assets, 404)', async () => {
    const landing = await fetch(`${base}/`);
    assert(landing.ok && landing.headers.get('content-type').startsWith('text/html'), `GET / -> ${landing.status}`);
    const join = await fetch(`${base}/join?token=x`);
    assert(join.ok, `GET /join -> ${join.status}`);
    assert(join.headers.get('cache-control') === 'no-store', `join cache-control ${join.headers.get('cache-control')}`);
    assert(join.headers.get('referrer-policy') === 'no-referrer', 'join page must not leak its URL via Referer');
    const js = await fetch(`${base}/static/js/app.js`);
    assert(js.ok && /javascript/.test(js.headers.get('content-type')), `app.js -> ${js.status} ${js.headers.get('content-type')}`);
    const missing = await fetch(`${base}/static/nope.js`);
    assert(missing.status === 404, `missing asset -> ${missing.status}`);
  });

  let tJoin0;
  await test('command room and three sites join one room', async () => {
    tJoin0 = Date.now();
    for (const p of all) await p.open(browser, base);
    for (const p of all) await p.join();
    for (const p of all) await p.connected();
    const ids = new Set(all.map((p) => p.id));
    assert(ids.size === 4 && !ids.has(null), `participant ids ${[...ids]}`);
    assert(await host.eval(() => window.rakorTest.role()) === 'host', 'host role');
    console.log(`  all four joined after ${Date.now() - tJoin0} ms (incl. page load and pre-join)`);
  });

  await test('every page decodes video and receives audio from every other participant', async () => {
    for (const p of all) {
      const others = all.filter((o) => o !== p).map((o) => o.id);
      const r = await pollUntil(p.page, () => window.rakorTest.stats(), decodingAll(others), MEDIA_TIMEOUT_MS,
        `${p.label}: framesDecoded>0 && audio packetsReceived>0 from ${others.join(',')}`);
      void r;
    }
    console.log(`  all pages decoding all others ${Date.now() - tJoin0} ms after the first page load`);
    // Still flowing: two samples 2 s apart on every page.
    const before = await Promise.all(all.map((p) => p.stats()));
    await sleep(2000);
    const after = await Promise.all(all.map((p) => p.stats()));
    all.forEach((p, i) => {
      for (const o of all.filter((x) => x !== p)) {
        const b = before[i].participants[o.id], a = after[i].participants[o.id];
        const frames = a.framesDecoded - b.framesDecoded, audio = a.audioPacketsReceived - b.audioPacketsReceived;
        assert(frames >= 10 && audio >= 40, `${p.label} <- ${o.label}: +${frames} frames, +${audio} audio packets in 2 s`);
      }
      const s = after[i];
      console.log(`  ${p.label}: pc pub=${s.publisher} sub=${s.subscriber} pair ${s.pair?.local} <-> ${s.pair?.remote}; ` +
        all.filter((x) => x !== p).map((o) => `${o.label} ${s.participants[o.id].frameWidth}x${s.participants[o.id].frameHeight} f=${s.participants[o.id].framesDecoded}`).join(', '));
    });
    console.log(`  browser memory (PSS): ${browserPssMiB()} MiB`);
  });

  await test('command-room wall shows 3 tiles with moving video; sites show the command room large (screenshots)', async () => {
    const ids = sites.map((s) => s.id);
    const wall = await pollUntil(host.page, () => ({ n: window.rakorTest.tileCount(), ids: window.rakorTest.tileIds(), main: window.rakorTest.mainParticipantId() }),
      (w) => w.n === 3 && ids.every((id) => w.ids.includes(id)), 5000, 'wall with the three sites');
    assert(wall.value.main === null, `host wall without spotlight has no main view, got ${wall.value.main}`);
    const s1 = await host.stats();
    await sleep(1000);
    const s2 = await host.stats();
    for (const id of ids) {
      const d = s2.participants[id].framesDecoded - s1.participants[id].framesDecoded;
      const luma = await host.eval((pid) => window.rakorTest.tileLuma(pid), id);
      console.log(`  wall tile ${id}: +${d} frames/s, luma ${JSON.stringify(luma)}`);
      assert(d >= 5, `tile ${id} not moving: +${d} frames in 1 s`);
      assert(luma && luma.std > 5, `tile ${id} looks blank: ${JSON.stringify(luma)}`);
    }
    await host.page.screenshot({ path: path.join(OUT, 'command-room.png') });
    for (const s of sites) {
      const v = await pollUntil(s.page, () => ({ main: window.rakorTest.mainParticipantId(), n: window.rakorTest.tileCount() }),
        (x) => x.main === host.id && x.n === 3, 5000, `${s.label}: command room in main view, 3 tiles`);
      void v;
    }
    await site1.page.screenshot({ path: path.join(OUT, 'site-view.png') });
    console.log(`  screenshots ${path.join(OUT, 'command-room.png')}, site-view.png`);
  });

  await test('phone screen: the strip collapses, its hidden videos are not sent and resume when shown', async () => {
    const page = site1.page;
    await page.setViewportSize({ width: 390, height: 780 });
    const visible = () => page.evaluate(() => {
      const r = document.getElementById('others').getBoundingClientRect();
      const m = document.getElementById('main-view').getBoundingClientRect();
      return { strip: r.width > 0 && r.height > 0, main: Math.round(m.width), mainH: Math.round(m.height) };
    });
    const folded = await visible();
    assert(!folded.strip && folded.main > 300, `strip hidden and main view wide on a phone: ${JSON.stringify(folded)}`);
    await page.screenshot({ path: path.join(OUT, 'site-view-phone.png') });
    // The folded strip's videos are reported hidden, and the server stops sending them while
    // the main view (the command room) keeps decoding.
    const stripTrack = await page.evaluate((id) => window.rakorTest.videoTrackId(id), site2.id);
    assert(stripTrack, 'site 2 video track known on site 1');
    await pollUntil(page, () => window.rakorTest.trackViews(), (v) => v[stripTrack] === false, 5000, 'site 1 reports site 2 hidden');
    const f0 = (await site1.stats()).participants;
    await pollUntil(page, () => window.rakorTest.stats(), (s) => s.participants[host.id].framesDecoded > f0[host.id].framesDecoded + 20, 5000, 'main view keeps decoding');
    const f1 = (await site1.stats()).participants;
    const stalled = f1[site2.id].framesDecoded - f0[site2.id].framesDecoded;
    assert(stalled <= 3, `hidden strip video still arriving: +${stalled} frames`);
    await page.click('#btn-strip');
    const open = await visible();
    assert(open.strip, `strip shown after the toggle: ${JSON.stringify(open)}`);
    // Shown again: it resumes (from a keyframe the server asks for).
    await pollUntil(page, () => window.rakorTest.trackViews(), (v) => v[stripTrack] === true, 5000, 'site 1 reports site 2 shown');
    await pollUntil(page, () => window.rakorTest.stats(), (s) => s.participants[site2.id].framesDecoded > f1[site2.id].framesDecoded + 10, 8000, 'strip video resumes');
    await page.screenshot({ path: path.join(OUT, 'site-view-phone-strip.png') });
    await page.click('#btn-strip');
    await page.setViewportSize(site1.viewport);
  });

  await test('host spotlights site 2: every page shows site 2 in its main view', async () => {
    await host.page.click(`#stage .tile[data-participant-id="${site2.id}"] [data-action="spotlight"]`);
    for (const p of all) {
      await pollUntil(p.page, () => window.rakorTest.mainParticipantId(), (m) => m === site2.id, 5000, `${p.label} main view = site 2`);
    }
    // The site-2 tile in the host's main view keeps decoding.
    const a = (await host.stats()).participants[site2.id].framesDecoded;
    await pollUntil(host.page, () => window.rakorTest.stats(), (s) => s.participants[site2.id].framesDecoded > a + 5, 3000, 'site 2 frames in main view');
    await host.page.screenshot({ path: path.join(OUT, 'command-room-spotlight.png') });
    await site1.page.screenshot({ path: path.join(OUT, 'site-view-spotlight.png') });
  });

  await test('spotlight tour: next / previous in wall order, then clear', async () => {
    const order = await host.eval(() => window.rakorTest.tourOrder());
    assert(order.length === 3 && sites.every((s) => order.includes(s.id)), `tour order ${order}`);
    const i = order.indexOf(site2.id);
    const expectMain = async (id, what) => {
      for (const p of all) await pollUntil(p.page, () => window.rakorTest.mainParticipantId(), (m) => m === id, 5000, `${p.label} main view: ${what}`);
    };
    await host.page.click('#btn-next');
    await expectMain(order[(i + 1) % 3], 'next site');
    await host.page.click('#btn-next');
    await expectMain(order[(i + 2) % 3], 'next site again (wraps around)');
    await host.page.click('#btn-prev');
    await expectMain(order[(i + 1) % 3], 'previous site');
    await host.page.click('#btn-clear');
    await pollUntil(host.page, () => window.rakorTest.mainParticipantId(), (m) => m === null, 5000, 'host wall without main view after clear');
    for (const s of sites) await pollUntil(s.page, () => window.rakorTest.mainParticipantId(), (m) => m === host.id, 5000, `${s.label} main = command room after clear`);
  });

  await test('a site cannot set the spotlight (server enforces host only)', async () => {
    await site1.eval((id) => window.rakorTest.send({ type: 'spotlight', participant_id: id }), site1.id);
    const errs = await pollUntil(site1.page, () => window.rakorTest.serverErrors(), (e) => e.length > 0, 5000, 'an error for the site\'s spotlight');
    const e = errs.value[errs.value.length - 1];
    assert(e.code === 'forbidden', `expected forbidden, got ${JSON.stringify(e)}`);
    for (const p of all) {
      const sp = await p.eval(() => window.rakorTest.spotlight());
      assert(sp === null, `${p.label} spotlight changed to ${sp}`);
    }
  });

  await test('the host records: the red REC badge appears on every page, and goes when it stops', async () => {
    for (const p of all) assert(!(await p.eval(() => window.rakorTest.recBadgeVisible())), `${p.label} shows REC before any recording`);
    await host.eval(() => window.rakorTest.send({ type: 'recording', action: 'start' }));
    for (const p of all) await pollUntil(p.page, () => window.rakorTest.recBadgeVisible(), (v) => v === true, 5000, `${p.label} REC badge`);
    await site1.page.screenshot({ path: path.join(OUT, 'site-view-recording.png') });
    await host.eval(() => window.rakorTest.send({ type: 'recording', action: 'stop' }));
    for (const p of all) await pollUntil(p.page, () => window.rakorTest.recBadgeVisible(), (v) => v === false, 5000, `${p.label} REC badge gone`);
  });

  await test('speaking highlight from received audio; site 1 mutes: muted icon on the wall, highlight off', async () => {
    const sel = `#stage .tile[data-participant-id="${site1.id}"]`;
    // The fake microphone beeps: its received audio level lights the tile up on the wall.
    await pollUntil(host.page, (s) => document.querySelector(s)?.dataset.speaking, (v) => v === 'true', 8000, 'speaking highlight on the wall', sel);
    await site1.page.click('#btn-mic');
    await pollUntil(host.page, (s) => document.querySelector(s)?.dataset.audioMuted, (v) => v === 'true', 5000, 'muted icon on the wall', sel);
    assert(await host.page.isVisible(`${sel} .tile-mic`), 'muted-mic icon visible');
    await pollUntil(host.page, (s) => document.querySelector(s)?.dataset.speaking, (v) => v === 'false', 5000, 'no highlight while muted', sel);
    await site1.page.click('#btn-mic');
    await pollUntil(host.page, (s) => document.querySelector(s)?.dataset.audioMuted, (v) => v === 'false', 5000, 'unmuted on the wall', sel);
  });

  await test('device switch during the call (replaceTrack): the wall keeps receiving site 1', async () => {
    const before = await site1.eval(() => window.rakorTest.localTrackIds());
    await site1.page.click('#btn-devices');
    await site1.page.waitForSelector('#devices-dialog[open]', { timeout: 3000 });
    const cam = await site1.page.$eval('#dev-camera', (el) => el.value);
    await site1.page.selectOption('#dev-camera', cam);
    const after = await pollUntil(site1.page, () => window.rakorTest.localTrackIds(), (x) => x.video && x.video !== before.video, 5000, 'a new camera track');
    void after;
    await site1.page.click('#devices-dialog button[value="close"]');
    const f0 = (await host.stats()).participants[site1.id].framesDecoded;
    await pollUntil(host.page, () => window.rakorTest.stats(), (s) => s.participants[site1.id].framesDecoded > f0 + 10, 5000, 'site 1 frames after the switch');
    const pubState = (await site1.stats()).publisher;
    assert(pubState === 'connected', `publisher stayed connected (no renegotiation): ${pubState}`);
  });

  await test('dropped signalling: resumes as the same participant, media keeps flowing', async () => {
    const oldId = site3.id;
    const before = await site3.eval(() => window.rakorTest.resumeCount());
    assert(await site3.eval(() => window.rakorTest.simulateDrop()), 'no socket to drop');
    await pollUntil(site3.page, () => ({ s: window.rakorTest.state(), n: window.rakorTest.resumeCount() }),
      (x) => x.s === 'connected' && x.n === before + 1, 20000, 'resumed');
    const id = await site3.eval(() => window.rakorTest.participantId());
    assert(id === oldId, `same participant id after the resume (${oldId} -> ${id})`);
    await pollUntil(site3.page, () => window.rakorTest.stats(), decodingAll([host.id, site1.id, site2.id]), MEDIA_TIMEOUT_MS, 'site 3 still decoding');
    await pollUntil(host.page, () => window.rakorTest.stats(), decodingAll([site3.id]), MEDIA_TIMEOUT_MS, 'host still decoding site 3');
    await pollUntil(host.page, () => window.rakorTest.tileIds(), (ids) => ids.length === 3 && ids.includes(oldId), 10000, 'site 3 keeps its tile on the wall');
  });

  await test('media lost: resumes with a media reset as the same participant, video back both ways', async () => {
    const oldId = site3.id;
    const before = await site3.eval(() => ({ r: window.rakorTest.resumeCount(), m: window.rakorTest.mediaResetCount() }));
    const oldTrack = await host.eval((id) => window.rakorTest.videoTrackId(id), oldId);
    const t0 = Date.now();
    assert(await site3.eval(() => window.rakorTest.simulateMediaLoss()), 'no session');
    await pollUntil(site3.page, () => ({ s: window.rakorTest.state(), r: window.rakorTest.resumeCount(), m: window.rakorTest.mediaResetCount() }),
      (x) => x.s === 'connected' && x.r === before.r + 1 && x.m === before.m + 1, 20000, 'resumed with a media reset');
    const id = await site3.eval(() => window.rakorTest.participantId());
    assert(id === oldId, `same participant id after the reset (${oldId} -> ${id})`);
    await pollUntil(host.page, (id) => window.rakorTest.videoTrackId(id), (t) => t && t !== oldTrack, 10000, 'site 3 published a new video track', oldId);
    await pollUntil(host.page, () => window.rakorTest.stats(), decodingAll([site3.id]), MEDIA_TIMEOUT_MS, 'host decodes site 3 again');
    console.log(`    site 3 video back at the host ${Date.now() - t0} ms after its media reset began`);
    await pollUntil(site3.page, () => window.rakorTest.stats(), decodingAll([host.id, site1.id, site2.id]), MEDIA_TIMEOUT_MS, 'site 3 decodes everyone again');
    await pollUntil(host.page, () => window.rakorTest.tileIds(), (ids) => ids.length === 3 && ids.includes(oldId), 10000, 'site 3 keeps its tile on the wall');
  });

  await test('a site leaves: its tile disappears everywhere', async () => {
    await site3.page.click('#btn-leave');
    await pollUntil(site3.page, () => window.rakorTest.phase(), (p) => p === 'left', 5000, 'site 3 sees the left screen');
    for (const p of [host, site1, site2]) {
      await pollUntil(p.page, (id) => ({ n: window.rakorTest.tileCount(), gone: !document.querySelector(`[data-participant-id="${id}"]`) }),
        (x) => x.n === 2 && x.gone, 5000, `${p.label}: site 3 tile gone`, site3.id);
    }
  });

  await test('simulcast: a 720p site sends 3 layers; each page gets the layer its tile needs, the spotlight a larger one', async () => {
    const hd = new Peer('site-hd', mint('participant', 'diskominfo', 'Diskominfo (HD)'), { width: 960, height: 600 });
    // Chromium's fake camera stays at 320x240 here; a moving 1280x720 canvas stands in for an HD camera.
    const hdCamera = () => {
      const orig = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
      navigator.mediaDevices.getUserMedia = async (c) => {
        const s = await orig({ audio: c.audio, video: false });
        if (c.video) {
          const cv = Object.assign(document.createElement('canvas'), { width: 1280, height: 720 });
          const g = cv.getContext('2d');
          let n = 0;
          setInterval(() => {
            n++;
            g.fillStyle = `hsl(${(n * 7) % 360} 60% 40%)`; g.fillRect(0, 0, 1280, 720);
            g.fillStyle = '#fff'; g.fillRect((n * 23) % 1180, (n * 11) % 620, 100, 100);
            g.font = '96px sans-serif'; g.fillText(String(n), 40, 120);
          }, 66);
          for (const t of cv.captureStream(15).getVideoTracks()) s.addTrack(t);
        }
        return s;
      };
    };
    await hd.open(browser, base, '&quality=high', hdCamera);
    await hd.join();
    await hd.connected();
    try {
      await pollUntil(hd.page, () => window.rakorTest.publisherRids(), (r) => r.rids.join(',') === 'q,h,f', 8000, 'publisher sends rids q,h,f');
      const width = (page, id) => page.evaluate(() => window.rakorTest.stats()).then((s) => s.participants[id] ?? {});
      // The wall's 2x2 grid (tiles ~320 px high) gets the half layer; site 1's strip tile
      // (~116 px high) the quarter layer.
      const wall = await pollUntil(host.page, () => window.rakorTest.stats(),
        (s) => s.participants[hd.id]?.framesDecoded > 15 && s.participants[hd.id].frameWidth > 0 && s.participants[hd.id].frameWidth <= 640,
        MEDIA_TIMEOUT_MS, 'host wall decodes the HD site at the half layer');
      const small = wall.value.participants[hd.id].frameWidth;
      const strip = await pollUntil(site1.page, () => window.rakorTest.stats(),
        (s) => s.participants[hd.id]?.framesDecoded > 5 && s.participants[hd.id].frameWidth > 0 && s.participants[hd.id].frameWidth <= 320,
        MEDIA_TIMEOUT_MS, 'site 1 strip decodes the HD site at the quarter layer');
      // Spotlighted: large in the host's main view, so a larger layer, still decoding.
      await host.page.click(`#stage .tile[data-participant-id="${hd.id}"] [data-action="spotlight"]`);
      const big = await pollUntil(host.page, () => window.rakorTest.stats(), (s) => s.participants[hd.id]?.frameWidth > small, 30000, 'host main view switches to a larger layer');
      const f = big.value.participants[hd.id].framesDecoded;
      await pollUntil(host.page, () => window.rakorTest.stats(), (s) => s.participants[hd.id].framesDecoded > f + 10, 5000, 'host keeps decoding after the switch');
      const w = await width(site1.page, hd.id);
      console.log(`  HD site: host wall ${small} px wide -> host main view ${big.value.participants[hd.id].frameWidth} px after ${big.ms} ms; site 1 strip ${strip.value.participants[hd.id].frameWidth} px -> main view ${w.frameWidth} px`);
      await host.eval(() => window.rakorTest.send({ type: 'spotlight', participant_id: null }));
    } finally {
      await hd.page.click('#btn-leave').catch(() => {});
      await hd.ctx.close();
    }
    for (const p of [host, site1, site2]) {
      await pollUntil(p.page, () => window.rakorTest.tileCount(), (n) => n === 2, 8000, `${p.label}: HD site tile gone`);
    }
  });

  let viewerLike = null;
  await test('camera and microphone denied: clear message, joins receive-only and sees everyone', async () => {
    viewerLike = new Peer('no-devices', mint('participant', 'camat-bantaran', 'Kecamatan Bantaran'), { width: 960, height: 600 });
    await viewerLike.open(browser, base, '&quality=low', () => {
      navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
    });
    await pollUntil(viewerLike.page, () => window.rakorTest?.phase(), (p) => p === 'prejoin', 10000, 'pre-join');
    await viewerLike.page.waitForSelector('#pj-join:not([disabled])', { timeout: 10000 });
    const msg = await viewerLike.page.textContent('#pj-media-error');
    const btn = await viewerLike.page.textContent('#pj-join');
    assert(/ditolak/.test(msg) && /melihat dan mendengar/.test(msg), `permission message, got "${msg}"`);
    assert(/tanpa kamera/.test(btn), `receive-only join button, got "${btn}"`);
    await viewerLike.page.screenshot({ path: path.join(OUT, 'prejoin-denied.png') });
    await viewerLike.page.click('#pj-join');
    await viewerLike.connected();
    await pollUntil(viewerLike.page, () => window.rakorTest.stats(), decodingAll([host.id, site1.id, site2.id]), MEDIA_TIMEOUT_MS, 'receive-only page decoding everyone');
    const sel = `#stage .tile[data-participant-id="${viewerLike.id}"]`;
    await pollUntil(host.page, (s) => { const el = document.querySelector(s); return el && { video: el.dataset.videoMuted, audio: el.dataset.audioMuted }; },
      (x) => x && x.video === 'true' && x.audio === 'true', 5000, 'receive-only site on the wall without video, mic muted', sel);
  });

  await test('the same link opened again: the older page says so', async () => {
    const again = new Peer('site2-again', site2.token, { width: 960, height: 600 });
    await again.open(browser, base);
    await again.join();
    await again.connected();
    const r = await pollUntil(site2.page, () => ({ phase: window.rakorTest.phase(), code: window.rakorTest.errorCode() }),
      (x) => x.phase === 'error-page', 10000, 'older page shows the error page');
    assert(r.value.code === 'replaced', `error code ${r.value.code}`);
    await pollUntil(host.page, (id) => window.rakorTest.tileIds().includes(id), (x) => x, 5000, 'the new page on the wall', again.id);
    await pollUntil(again.page, () => window.rakorTest.stats(), decodingAll([host.id, site1.id]), MEDIA_TIMEOUT_MS, 'the new page decoding');
  });

  await test('an expired token shows the error page', async () => {
    const exp = tokenExp(expiredToken);
    const t0 = Date.now();
    while (Date.now() <= exp * 1000 + 500) { assert(Date.now() - t0 < 5000, 'clock did not pass the expiry'); await sleep(100); }
    const p = new Peer('expired', expiredToken, { width: 800, height: 600 });
    await p.open(browser, base, '');
    const r = await pollUntil(p.page, () => ({ phase: window.rakorTest?.phase(), code: window.rakorTest?.errorCode() }),
      (x) => x.phase === 'error-page', 5000, 'error page');
    assert(r.value.code === 'token_expired', `error code ${r.value.code}`);
    const title = await p.page.textContent('#err-title');
    assert(/kedaluwarsa/.test(title), `Indonesian title, got "${title}"`);
    await p.page.screenshot({ path: path.join(OUT, 'error-expired.png') });
    await p.page.click('#lang-toggle');
    const en = await p.page.textContent('#err-title');
    assert(/expired/i.test(en), `English title after the toggle, got "${en}"`);
    await p.ctx.close();
  });

  await test('a token with a bad signature is refused by the server: error page', async () => {
    const good = site1.token.split('.');
    const bad = `${good[0]}.${good[1]}.${good[2].slice(0, -4)}AAAA`;
    const p = new Peer('forged', bad, { width: 800, height: 600 });
    await p.open(browser, base, '&quality=low');
    await p.join();
    const r = await pollUntil(p.page, () => ({ phase: window.rakorTest.phase(), code: window.rakorTest.errorCode() }),
      (x) => x.phase === 'error-page', 10000, 'error page');
    assert(r.value.code === 'invalid_token', `error code ${r.value.code}`);
    await p.ctx.close();
  });
} catch (e) {
  results.push(false);
  console.log(`FAIL setup: ${e.message}`);
} finally {
  await browser?.close().catch(() => {});
  if (rakor && rakor.exitCode === null) {
    rakor.kill('SIGTERM');
    await Promise.race([new Promise((r) => rakor.once('exit', r)), sleep(5000)]);
    if (rakor.exitCode === null) rakor.kill('SIGKILL');
  }
  fs.rmSync(dataDir, { recursive: true, force: true });
}
const passed = results.filter(Boolean).length, failed = results.length - passed;
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
