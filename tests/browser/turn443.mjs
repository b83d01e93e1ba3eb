// Browser scenario for the 443-only site (issue 12): the real `rakor serve` with built-in HTTPS
// (a test CA and server certificate made with openssl at test time), TURN enabled, TURN over TLS
// on the HTTPS port and no ICE-TCP there; the web client in two Debian Chromium instances.
//  - the open site: Chromium as root, unrestricted (UDP to the media port).
//  - the 443-only site: Chromium as uid 65534 (nobody, through a setpriv wrapper); nftables in this
//    namespace lets that uid open only TCP to the server's HTTPS port and drops the rest (counted),
//    so its only media path is TURN over TLS on 443 (`turns:` from `joined.ice_servers`).
// Both sites join, each decodes the other's video, the 443-only page's selected candidate pairs are
// relayed over TLS and its network badge says TURN/TLS; the server's TURN counters and the firewall
// counters confirm it. Needs root (nft, setpriv, port 443) in a private network namespace (run.sh).
// Prints "PASS/FAIL <name> (ms)" per test and "<N> passed, <M> failed"; exit 0 only if all passed.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.resolve(process.env.E2E_OUT || path.join(HERE, 'out'));
const BIN = process.env.RAKOR_BIN || path.join(HERE, '../../target/release/rakor');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = Number(process.env.E2E_MEDIA_TIMEOUT_MS || 30000);
const ROOM = 'rakor-443';
const HOST = '127.0.0.1';
const PORT = 443;
const SITE_UID = 65534;
const NFT_TABLE = 'rakor_turn443';
fs.mkdirSync(OUT, { recursive: true });

const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows',
  // The test CA is not in Chromium's store. Chromium verifies the TURN/TLS server's certificate
  // too, separately from the page: with only Playwright's ignoreHTTPSErrors (CDP, per context) the
  // page and WebSocket load but the `turns:` allocation fails and no media flows (tried). This
  // switch covers the network service's verifier, so the page, the WebSocket and TURN/TLS alike.
  '--ignore-certificate-errors',
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const assert = (cond, msg) => { if (!cond) throw new Error(msg); };
const sh = (cmd, args, input) => execFileSync(cmd, args, { encoding: 'utf8', input, stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'] });

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rakor-443-'));
const tlsDir = path.join(dataDir, 'tls');
let rakor = null;

/** A private CA and a server certificate for 127.0.0.1 (IP SAN), made with openssl. */
function makeCerts() {
  fs.mkdirSync(tlsDir, { recursive: true });
  const f = (n) => path.join(tlsDir, n);
  sh('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', '/CN=Rakor test CA', '-keyout', f('ca.key'), '-out', f('ca.pem')]);
  sh('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-subj', `/CN=${HOST}`, '-keyout', f('server.key'), '-out', f('server.csr')]);
  fs.writeFileSync(f('ext.cnf'), `subjectAltName=IP:${HOST}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
  sh('openssl', ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
    '-days', '2', '-extfile', f('ext.cnf'), '-out', f('server.pem')]);
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key') };
}

/** GET over HTTPS trusting the test CA; resolves {status, body}. */
function get(url, ca) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca: fs.readFileSync(ca), timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

async function startRakor(tls) {
  const log = fs.createWriteStream(path.join(OUT, 'rakor-turn443.log'));
  rakor = spawn(BIN, ['serve', '--data-dir', dataDir, '--listen', `${HOST}:${PORT}`, '--media-port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env, RUST_LOG: process.env.RUST_LOG || 'info',
      RAKOR_SERVER_TLS_CERT_FILE: tls.cert, RAKOR_SERVER_TLS_KEY_FILE: tls.key,
      RAKOR_TURN_ENABLED: 'true', RAKOR_TURN_LISTEN: `${HOST}:0`,
      // No passive ICE-TCP on the HTTPS port: only TURN over TLS may carry the 443-only site's media.
      RAKOR_MEDIA_ICE_TCP_ON_HTTP_PORT: 'false',
    },
  });
  rakor.stderr.pipe(log);
  let stdout = '';
  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`rakor printed no banner in 15 s; stdout: ${stdout}`)), 15000);
    rakor.stdout.on('data', (d) => {
      stdout += d;
      log.write(d);
      const m = /HTTPS \+ WSS\s+(https:\/\/[\d.]+:\d+)/.exec(stdout);
      if (m && /TURN/.test(stdout)) { clearTimeout(timer); resolve(m[1]); }
    });
    rakor.on('exit', (code) => { clearTimeout(timer); reject(new Error(`rakor exited with ${code}`)); });
  });
  const t0 = Date.now();
  while (Date.now() - t0 < 10000) {
    try { if ((await get(`${base}/healthz`, tls.ca)).status === 200) return { base, banner: stdout }; } catch { /* not yet */ }
    await sleep(100);
  }
  throw new Error('rakor /healthz did not answer over HTTPS');
}

/** The 443-only site's firewall: its uid may open TCP to the HTTPS port only; the rest is dropped. */
function firewall() {
  sh('nft', ['-f', '-'], `table inet ${NFT_TABLE} {
  chain out {
    type filter hook output priority 0; policy accept;
    meta skuid ${SITE_UID} ip daddr ${HOST} tcp dport ${PORT} counter accept
    meta skuid ${SITE_UID} meta l4proto udp counter drop
    meta skuid ${SITE_UID} counter drop
  }
}
`);
}

/** Packet counts of the firewall's three rules: [tcp443, udpDropped, otherDropped]. */
function nftCounters() {
  const out = sh('nft', ['list', 'table', 'inet', NFT_TABLE]);
  return [...out.matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
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

  async open(ctx, base) {
    this.page = await ctx.newPage();
    this.page.on('pageerror', (e) => console.log(`  [${this.label}] pageerror: ${e.message}`));
    await this.page.goto(`${base}/join?token=${encodeURIComponent(this.token)}&quality=low`);
    await pollUntil(this.page, () => window.rakorTest?.phase(), (p) => p === 'prejoin', 10000, `${this.label} pre-join`);
    await this.page.waitForSelector('#pj-join:not([disabled])', { timeout: 10000 });
    await this.page.click('#pj-join');
    await pollUntil(this.page, () => window.rakorTest.state(), (s) => s === 'connected', WAIT_MS, `${this.label} connected`);
    this.id = await this.page.evaluate(() => window.rakorTest.participantId());
  }

  eval(fn, arg) { return this.page.evaluate(fn, arg); }
  stats() { return this.eval(() => window.rakorTest.stats()); }
  paths() { return this.eval(() => window.rakorTest.paths()); }
}

/** Chromium as the 443-only site's uid: a wrapper drops to it; a profile and HOME it owns. */
async function launchRestricted() {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'rakor-443-site-'));
  fs.chmodSync(home, 0o755);
  const profile = path.join(home, 'profile');
  fs.mkdirSync(profile);
  fs.chownSync(home, SITE_UID, SITE_UID);
  fs.chownSync(profile, SITE_UID, SITE_UID);
  const wrapper = path.join(home, 'chromium-as-site');
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec setpriv --reuid=${SITE_UID} --regid=${SITE_UID} --clear-groups ` +
    `env HOME=${home} XDG_CONFIG_HOME=${home} XDG_CACHE_HOME=${home} ${CHROMIUM} "$@"\n`);
  fs.chmodSync(wrapper, 0o755);
  return chromium.launchPersistentContext(profile, {
    executablePath: wrapper, headless: true, args: FLAGS, viewport: { width: 1000, height: 600 },
    ignoreHTTPSErrors: true,
  });
}

let openBrowser, siteCtx;
try {
  const tls = makeCerts();
  const { base, banner } = await startRakor(tls);
  const turnsLine = banner.split('\n').find((l) => /turns:/.test(l));
  firewall();
  const open = new Peer('open-site', mint('participant', 'open-site', 'Kantor Bupati'));
  const site = new Peer('site-443', mint('participant', 'site-443', 'Puskesmas (443 only)'));

  await test('turn443: the server serves HTTPS on 443 and offers TURN over TLS there', async () => {
    assert(base === `https://${HOST}:${PORT}`, `banner address ${base}`);
    assert(turnsLine && turnsLine.includes(`turns:${HOST}:${PORT}`), `banner TURN line: ${turnsLine}`);
    // The firewall is in force: the site's uid cannot reach the TURN/TCP port or plain UDP.
    const [tcp443] = nftCounters();
    assert(tcp443 === 0, `nothing counted before the site starts: ${tcp443}`);
  });

  await test('turn443: the open site and the 443-only site join', async () => {
    openBrowser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
    const openCtx = await openBrowser.newContext({ viewport: { width: 1000, height: 600 }, ignoreHTTPSErrors: true });
    await open.open(openCtx, base);
    siteCtx = await launchRestricted();
    await site.open(siteCtx, base);
    assert(open.id && site.id && open.id !== site.id, `two participants: ${open.id} ${site.id}`);
  });

  await test('turn443: the 443-only site sends and receives video through TURN over TLS', async () => {
    // The 443-only page decodes the open site's video and audio ...
    const s = await pollUntil(site.page, () => window.rakorTest.stats(),
      (v) => v.participants[open.id]?.framesDecoded > 10 && v.participants[open.id]?.audioPacketsReceived > 0,
      WAIT_MS, '443-only site decodes the open site');
    // ... and the open page decodes the 443-only site's: it sends.
    const o = await pollUntil(open.page, () => window.rakorTest.stats(),
      (v) => v.participants[site.id]?.framesDecoded > 10, WAIT_MS, 'open site decodes the 443-only site');
    const a = s.participants[open.id], b = o.participants[site.id];
    console.log(`  site-443 <- open: ${a.framesDecoded} frames ${a.frameWidth}x${a.frameHeight}; ` +
      `open <- site-443: ${b.framesDecoded} frames ${b.frameWidth}x${b.frameHeight}`);
    // Frames keep coming (not one lucky keyframe).
    await sleep(2000);
    const s2 = await site.stats(), o2 = await open.stats();
    assert(s2.participants[open.id].framesDecoded > a.framesDecoded + 10, 'video to the 443-only site stopped');
    assert(o2.participants[site.id].framesDecoded > b.framesDecoded + 10, 'video from the 443-only site stopped');
  });

  await test('turn443: both peer connections are relayed over TLS and the badge says TURN/TLS', async () => {
    const p = await pollUntil(site.page, () => window.rakorTest.paths(),
      (v) => v.badge === 'TURN/TLS', WAIT_MS, '443-only badge TURN/TLS');
    assert(p.publisher === 'TURN/TLS' && p.subscriber === 'TURN/TLS', `443-only paths ${JSON.stringify(p)}`);
    assert(await site.eval(() => document.getElementById('net-path').dataset.path) === 'TURN/TLS', 'badge data-path');
    // The open site is not relayed: the test distinguishes the paths.
    const q = await pollUntil(open.page, () => window.rakorTest.paths(), (v) => v.badge, WAIT_MS, 'open site badge');
    assert(q.badge === 'UDP', `open site badge ${JSON.stringify(q)}`);
    // The firewall saw the site's TCP to 443 and dropped its UDP (host candidates, STUN).
    const [tcp443, udpDropped] = nftCounters();
    console.log(`  nft: site tcp to ${PORT} accepted ${tcp443}, site udp dropped ${udpDropped}`);
    assert(tcp443 > 100, `site TCP to ${PORT}: ${tcp443} packets`);
    assert(udpDropped > 0, 'the site tried UDP and it was dropped');
    await site.page.screenshot({ path: path.join(OUT, 'turn443-site.png') });
  });
} catch (e) {
  results.push(false);
  console.log(`FAIL turn443 setup: ${e.message}`);
} finally {
  await siteCtx?.close().catch(() => {});
  await openBrowser?.close().catch(() => {});
  rakor?.kill('SIGTERM');
  try { sh('nft', ['delete', 'table', 'inet', NFT_TABLE]); } catch { /* not created */ }
}
const passed = results.filter(Boolean).length;
console.log(`${passed} passed, ${results.length - passed} failed`);
process.exit(results.length && passed === results.length ? 0 : 1);
