// Small, stable hooks for the browser tests (tests/browser/). Read-only except where noted;
// the UI itself is driven through the DOM by the tests.
import { collectMediaStats, pathLabel } from './stats.js';

const ctx = { call: null, room: null, network: null, serverErrors: [] };

export function setTestContext(patch) { Object.assign(ctx, patch); }

async function selectedPair(pc) {
  if (!pc) return null;
  const report = await pc.getStats();
  let pairId = null;
  for (const s of report.values()) if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
  const pair = pairId && report.get(pairId);
  if (!pair) return null;
  const l = report.get(pair.localCandidateId), r = report.get(pair.remoteCandidateId);
  return { local: `${l?.address}:${l?.port}`, remote: `${r?.address}:${r?.port}/${r?.protocol}`,
    localAddress: l?.address, remoteAddress: r?.address };
}

/** Mean and standard deviation of the luma of a tile's video, drawn into 64x48. */
function tileLuma(participantId) {
  const v = document.querySelector(`#stage .tile[data-participant-id="${CSS.escape(participantId)}"] video`);
  if (!v || !v.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = 64; c.height = 48;
  const g = c.getContext('2d', { willReadFrequently: true });
  g.drawImage(v, 0, 0, 64, 48);
  const d = g.getImageData(0, 0, 64, 48).data;
  let sum = 0, sq = 0;
  const n = d.length / 4;
  for (let i = 0; i < d.length; i += 4) {
    const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
    sum += y; sq += y * y;
  }
  const mean = sum / n;
  return { mean: Math.round(mean), std: Math.round(Math.sqrt(Math.max(0, sq / n - mean * mean))) };
}

export function installTestHooks() {
  window.rakorTest = {
    /** 'loading' | 'prejoin' | 'call' | 'left' | 'error-page' */
    phase: () => document.body.dataset.screen ?? 'loading',
    errorCode: () => document.getElementById('error-page').dataset.errorCode || null,
    state: () => ctx.call?.state ?? null,
    mediaStates: () => ({ ...(ctx.call?.mediaStates ?? {}) }),
    participantId: () => ctx.room?.self?.id ?? null,
    /** Ids of our own camera/microphone MediaStreamTracks (change on a device switch). */
    localTrackIds: () => ({ audio: ctx.call?.media.audioTrack?.id ?? null, video: ctx.call?.media.videoTrack?.id ?? null }),
    role: () => ctx.room?.self?.role ?? null,
    spotlight: () => ctx.room?.spotlight ?? null,
    /** Chat messages as received (`chat`, `chat_history`), oldest first. */
    chat: () => (ctx.room?.chat ?? []).map((c) => ({ ...c })),
    /** Raised hands in order (`hands`). */
    hands: () => (ctx.room?.hands ?? []).map((h) => ({ ...h })),
    /** The room's recording notice: null, or {startedAt}; and whether the REC badge shows. */
    recording: () => ctx.room?.recording ?? null,
    recBadgeVisible: () => !(document.getElementById('rec-badge')?.hidden ?? true),
    /** The order the host's next/previous buttons tour the sites in. */
    tourOrder: () => ctx.room?.tourOrder() ?? [],
    participants: () => (ctx.room?.list() ?? []).map((p) => ({
      id: p.id, name: p.name, role: p.role, audioMuted: p.isMuted('audio'), videoMuted: p.isMuted('video'),
      hasVideo: !!p.media.video, hasAudio: !!p.media.audio, speaking: p.speaking,
    })),
    /** Remote participants' tiles on the page (our own self-view excluded). */
    tileCount: () => document.querySelectorAll('#stage .tile:not([data-self])').length,
    tileIds: () => [...document.querySelectorAll('#stage .tile:not([data-self])')].map((el) => el.dataset.participantId),
    mainParticipantId: () => document.getElementById('main-view').dataset.participantId || null,
    /** The presentation as this page shows it: presenter, track, and the main view's video size
     *  (0 until frames are decoded); null when there is none. */
    presentation: () => {
      const pres = ctx.room?.presentation;
      if (!pres) return null;
      const view = document.getElementById('presentation-view');
      const v = view?.querySelector('video');
      return { participantId: pres.participant_id, trackId: pres.track_id, visible: !!view && !view.hidden,
        width: v?.videoWidth ?? 0, height: v?.videoHeight ?? 0, inMainView: view?.parentElement?.id === 'main-view' };
    },
    /** Our own screen share: the server's track id once published, and whether it is live. */
    screenShare: () => ({ trackId: ctx.call?.session?.ownTracks?.screen ?? null, live: ctx.call?.session?.screenTrack?.readyState === 'live',
      audioTrackId: ctx.call?.session?.ownTracks?.screen_audio ?? null }),
    network: () => ctx.network,
    /** The path of each peer connection's selected candidate pair ('UDP', 'TCP', 'TURN/TLS', …; null
     *  before one is selected) and the network badge's text. */
    async paths() {
      const pcs = ctx.call?.session?.pcs ?? {};
      const one = async (pc) => {
        if (!pc) return null;
        const report = await pc.getStats();
        for (const s of report.values()) {
          if (s.type !== 'transport' || !s.selectedCandidatePairId) continue;
          const local = report.get(report.get(s.selectedCandidatePairId)?.localCandidateId);
          if (local) return pathLabel(local);
        }
        return null;
      };
      const badge = document.getElementById('net-path');
      return { publisher: await one(pcs.publisher).catch(() => null), subscriber: await one(pcs.subscriber).catch(() => null),
        badge: badge && !badge.hidden ? badge.textContent : null };
    },
    /** RIDs of our video sender's encodings (simulcast layers), low to high; [] = one stream. */
    publisherRids: () => ({
      rids: (ctx.call?.session?.pubTransceivers?.video?.sender.getParameters().encodings ?? []).map((e) => e.rid).filter(Boolean),
      width: ctx.call?.media.videoTrack?.getSettings().width ?? null,
    }),
    /** Remote video tracks this page told the server it shows / hides: trackId -> visible. */
    trackViews: () => Object.fromEntries([...(ctx.call?.session?.trackViews ?? new Map())].map(([k, v]) => [k, v.visible])),
    /** The server track id of a participant's video as received here. */
    videoTrackId: (id) => ctx.room?.participants.get(id)?.media.video?.trackId ?? null,
    /** `error` messages the server sent during the call (non-fatal ones), oldest first. */
    serverErrors: () => ctx.serverErrors.slice(),
    /** Send a raw signalling message (tests of server-side enforcement, e.g. spotlight by a non-host). */
    send: (msg) => ctx.call?.session?.send(msg) ?? false,
    /** Drop the WebSocket as a network failure would (no `leave`): the client must rejoin by itself. */
    resumeCount: () => ctx.call?.resumes ?? 0,
    mediaResetCount: () => ctx.call?.mediaResets ?? 0,
    simulateDrop: () => { const ws = ctx.call?.session?.sig?.ws; if (!ws) return false; ws.close(4001, 'test drop'); return true; },
    /** Act as if our peer connections had failed: the client must resume with a media reset. */
    simulateMediaLoss: () => { const s = ctx.call?.session; if (!s) return false; s.mediaFailed('test media loss'); return true; },
    tileLuma,
    /** Per remote participant: framesDecoded, frameWidth/Height, video/audio packetsReceived, audioLevel. */
    async stats() {
      const session = ctx.call?.session;
      const pcs = session?.pcs ?? {};
      return {
        participants: session ? await collectMediaStats(session) : {},
        publisher: pcs.publisher?.connectionState ?? null,
        subscriber: pcs.subscriber?.connectionState ?? null,
        pair: await selectedPair(pcs.subscriber ?? pcs.publisher).catch(() => null),
      };
    },
  };
}
