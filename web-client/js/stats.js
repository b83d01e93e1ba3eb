// getStats: per remote participant media counters (for the speaking highlight and the test
// hooks) and a network-quality verdict (packet loss, round-trip time) for the badge.

const SPEAKING_LEVEL = 0.03;       // inbound-rtp audioLevel (0..1, linear) above which someone speaks
const SPEAKING_HOLD_MS = 700;      // keep the highlight this long after the level drops

/** Fresh per-participant counters from the subscriber connection. */
export async function collectMediaStats(session) {
  const out = {};
  const pc = session?.pcs.subscriber;
  if (!pc) return out;
  const report = await pc.getStats();
  const byMid = session.subMap;
  const byTrack = new Map([...byMid.values()].map((e) => [e.track.id, e]));
  for (const s of report.values()) {
    if (s.type !== 'inbound-rtp') continue;
    const e = (s.mid != null && byMid.get(s.mid)) || byTrack.get(s.trackIdentifier);
    if (!e) continue;
    const p = (out[e.participantId] ??= {
      framesDecoded: 0, framesPerSecond: 0, frameWidth: 0, frameHeight: 0, videoPacketsReceived: 0,
      audioPacketsReceived: 0, audioLevel: 0, totalAudioEnergy: 0, totalSamplesDuration: 0, packetsLost: 0,
    });
    p.packetsLost += s.packetsLost ?? 0;
    if (s.kind === 'video') {
      p.framesDecoded += s.framesDecoded ?? 0;
      p.framesPerSecond = s.framesPerSecond ?? p.framesPerSecond;
      p.frameWidth = s.frameWidth ?? p.frameWidth;
      p.frameHeight = s.frameHeight ?? p.frameHeight;
      p.videoPacketsReceived += s.packetsReceived ?? 0;
    } else if (s.kind === 'audio') {
      p.audioPacketsReceived += s.packetsReceived ?? 0;
      p.audioLevel = Math.max(p.audioLevel, s.audioLevel ?? 0);
      p.totalAudioEnergy += s.totalAudioEnergy ?? 0;
      p.totalSamplesDuration += s.totalSamplesDuration ?? 0;
    }
  }
  return out;
}

/** Loss and RTT over both connections since the previous sample. */
async function collectNetwork(session, prev) {
  const acc = { received: 0, lost: 0, rtts: [], fractionLost: [] };
  for (const pc of [session.pcs.publisher, session.pcs.subscriber]) {
    if (!pc || pc.connectionState === 'closed') continue;
    const report = await pc.getStats();
    for (const s of report.values()) {
      if (s.type === 'inbound-rtp') { acc.received += s.packetsReceived ?? 0; acc.lost += Math.max(0, s.packetsLost ?? 0); }
      if (s.type === 'remote-inbound-rtp') {
        if (typeof s.fractionLost === 'number') acc.fractionLost.push(s.fractionLost);
        if (typeof s.roundTripTime === 'number') acc.rtts.push(s.roundTripTime * 1000);
      }
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && typeof s.currentRoundTripTime === 'number') {
        acc.rtts.push(s.currentRoundTripTime * 1000);
      }
    }
  }
  const dRecv = acc.received - (prev?.received ?? 0);
  const dLost = acc.lost - (prev?.lost ?? 0);
  const downLoss = dRecv + dLost > 0 ? dLost / (dRecv + dLost) : null;
  const upLoss = acc.fractionLost.length ? Math.max(...acc.fractionLost) : null;
  const losses = [downLoss, upLoss].filter((x) => x !== null);
  return {
    totals: { received: acc.received, lost: acc.lost },
    loss: losses.length ? Math.max(...losses) : null,
    rttMs: acc.rtts.length ? Math.max(...acc.rtts) : null,
  };
}

/**
 * Which path the media takes, from the selected candidate pair of the first connected peer
 * connection: 'UDP', 'TCP' (ICE over TCP), 'TURN/UDP', 'TURN/TCP', 'TURN/TLS', or null.
 */
export async function networkPath(session) {
  for (const pc of [session.pcs.subscriber, session.pcs.publisher]) {
    if (!pc || pc.connectionState !== 'connected') continue;
    const report = await pc.getStats();
    let pair = null;
    for (const s of report.values()) {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) ?? pair;
    }
    if (!pair) {
      for (const s of report.values()) {
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') { pair = s; break; }
      }
    }
    const local = pair && report.get(pair.localCandidateId);
    if (!local) continue;
    return pathLabel(local);
  }
  return null;
}

/** The badge label of a local candidate (RTCIceCandidateStats). */
export function pathLabel(local) {
  if (local.candidateType === 'relay') {
    const via = String(local.relayProtocol ?? 'udp').toUpperCase();
    return `TURN/${via}`;
  }
  return String(local.protocol ?? 'udp').toUpperCase() === 'TCP' ? 'TCP' : 'UDP';
}

/** 'good' | 'fair' | 'poor' | 'unknown' from loss (0..1) and RTT (ms). */
export function gradeNetwork(loss, rttMs) {
  if (loss === null && rttMs === null) return 'unknown';
  const l = loss ?? 0, r = rttMs ?? 0;
  if (l < 0.02 && r < 200) return 'good';
  if (l < 0.08 && r < 500) return 'fair';
  return 'poor';
}

/** Polls stats while the call runs: speaking flags into the Room, network verdicts to a callback. */
export class StatsMonitor {
  constructor(call, onNetwork) {
    this.call = call;
    this.onNetwork = onNetwork;
    this.speakingUntil = new Map();
    this.prevEnergy = new Map();
    this.netPrev = null;
    this.tickNo = 0;
    this.busy = false;
    this.timer = setInterval(() => this.tick(), 400);
  }

  async tick() {
    const session = this.call.session;
    if (this.busy || !session) return;
    this.busy = true;
    try {
      const now = Date.now();
      const stats = await collectMediaStats(session);
      for (const [id, s] of Object.entries(stats)) {
        // audioLevel needs playout; fall back to the energy delta when it is missing.
        let level = s.audioLevel;
        const prev = this.prevEnergy.get(id);
        if (!level && prev && s.totalSamplesDuration > prev.d) {
          level = Math.sqrt(Math.max(0, s.totalAudioEnergy - prev.e) / (s.totalSamplesDuration - prev.d));
        }
        this.prevEnergy.set(id, { e: s.totalAudioEnergy, d: s.totalSamplesDuration });
        const p = this.call.room.get(id);
        const audible = level > SPEAKING_LEVEL && p && !p.isMuted('audio');
        if (audible) this.speakingUntil.set(id, now + SPEAKING_HOLD_MS);
        this.call.room.setSpeaking(id, (this.speakingUntil.get(id) ?? 0) > now, level);
      }
      if (this.tickNo++ % 5 === 0) {
        const net = await collectNetwork(session, this.netPrev);
        net.path = await networkPath(session);
        this.netPrev = net.totals;
        if (net.rttMs === null && this.call.wsRttMs !== null) net.rttMs = this.call.wsRttMs;
        this.onNetwork({ ...net, grade: gradeNetwork(net.loss, net.rttMs) });
      }
    } catch { /* a connection closed mid-poll */ }
    finally { this.busy = false; }
  }

  stop() { clearInterval(this.timer); }
}
