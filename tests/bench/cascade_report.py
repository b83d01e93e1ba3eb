#!/usr/bin/env python3
"""The figures of one tests/bench/cascade.sh run (argv: run directory, N, owner node id).

Inputs in the run directory: A/B/C.json (the load tools' reports), A/B/C.m0 and .m1 (each
node's /metrics at the window's start and end), A/B/C.c0 and .c1 (its CPU ticks), `window`
(t0 t1 CLK_TCK and each node's peak RSS in KiB), `loadavg`, `exit_codes`.

Cascaded: the sum of `rakor_cascade_bytes_total` over every leg and direction (RTP payload
bytes), per second of the window. Counterfactual "every track to every remote participant":
for every receiving bot r and every participant s on another node than r, the payload bytes r
actually received from s in its load tool's window (a participant not among the bots of r's
load tool is a republisher, i.e. on another node), per second, summed. That is each remote
track's measured rate at the layer that receiver gets, times its remote receivers: what the
nodes would exchange if each remote participant were sent its own copy of every track it
receives (no cascade, no sharing of a crossing).
"""
import json
import statistics
import sys
from pathlib import Path

run, n, owner = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
NODES = "ABC"


def read_metrics(path):
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or " " not in line:
            continue
        k, v = line.rsplit(" ", 1)
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


t0, t1, clk, *peaks = (run / "window").read_text().split()
window = float(t1) - float(t0)
clk = int(clk)
m0 = {x: read_metrics(run / f"{x}.m0") for x in NODES}
m1 = {x: read_metrics(run / f"{x}.m1") for x in NODES}

legs = []
cascade_bytes = 0.0
tracks_now = 0
for x in NODES:
    for k, v in sorted(m1[x].items()):
        if k.startswith("rakor_cascade_bytes_total{"):
            d = v - m0[x].get(k, 0.0)
            cascade_bytes += d
            labels = k[k.index("{"):]
            t = int(m1[x].get("rakor_cascade_tracks" + labels, 0))
            tracks_now += t
            legs.append(f"{x}{labels}: {d * 8 / 1000 / window:.0f} kbit/s, {t} tracks")
cascade_kbps = cascade_bytes * 8 / 1000 / window

def participants(m):
    return sum(v for k, v in m.items() if k == "rakor_participants" or k.startswith("rakor_participants{"))


nodes = []
for i, x in enumerate(NODES):
    c0 = float((run / f"{x}.c0").read_text() or 0)
    c1 = float((run / f"{x}.c1").read_text() or 0)
    nodes.append(
        f"{x}: {(c1 - c0) / clk / window:.2f} cores, RSS peak {int(peaks[i]) / 1024:.0f} MiB, "
        f"{participants(m1[x]):.0f} participants"
    )

naive_bps = 0.0
local_bps = 0.0
deliveries = {"audio": 0, "video": 0}
unknown = 0
gaps = {"local": [0, 0, 0], "remote": [0, 0, 0]}  # packets, seq_gaps, out_of_order
host_wall = None
sites = sites_f = sites_h = 0
joins = {}
outcomes = {}
tool_cores = {}
for x in NODES:
    p = run / f"{x}.json"
    if not p.exists():
        outcomes[x] = "no report"
        continue
    r = json.loads(p.read_text())
    outcomes[x] = r.get("outcome")
    tool_cores[x] = (r.get("machine") or {}).get("loadtest_cpu_cores_avg")
    w = r.get("window_s") or 0
    mine = {b["identity"] for b in r["bots"]}
    joined, media = [], []
    for b in r["bots"]:
        remote_b = local_b = 0
        for key, peer in b["received"].items():
            remote = key not in mine
            unknown += key == "?"
            g = gaps["remote" if remote else "local"]
            g[0] += peer["packets"]
            g[1] += peer["seq_gaps"]
            g[2] += peer["out_of_order"]
            if remote:
                remote_b += peer.get("bytes", 0)
                deliveries["audio"] += peer["audio_packets"] > 0
                deliveries["video"] += sum(peer["video_layers"]) > 0
            else:
                local_b += peer.get("bytes", 0)
        if w > 0:
            naive_bps += remote_b / w
            local_bps += local_b / w
        if b["role"] == "host":
            host_wall = sum(sum(p["video_layers"]) > 0 for p in b["received"].values())
        if b["role"] == "site":
            sites += 1
            sites_f += any(p["video_layers"][2] > 0 for p in b["received"].values())
            sites_h += any(p["video_layers"][1] > 0 for p in b["received"].values())
            if b.get("joined_ms") is not None:
                joined.append(b["joined_ms"])
            if b.get("media_ms") is not None:
                media.append(b["media_ms"])
    med = lambda v: f"{statistics.median(v):.0f}" if v else "-"
    joins[x] = f"{x}: joined p50 {med(joined)} ms, media p50 {med(media)} ms max {max(media) if media else 0:.0f} ms ({len(media)} sites)"

naive_kbps = naive_bps * 8 / 1000

# The same with every remote participant receiving every track (every video at the top layer,
# as the 60-site calculation assumed): per-track rates from what the bots received (audio: a
# sender whose video did not arrive; video: a sender at f, minus its audio), times the
# participants on the other nodes (the host included, the relay participants not).
audio_rates, f_rates = [], []
for x in NODES:
    p = run / f"{x}.json"
    if not p.exists():
        continue
    r = json.loads(p.read_text())
    w = r.get("window_s") or 0
    for b in r["bots"]:
        for peer in b["received"].values():
            if w <= 0 or peer["audio_packets"] == 0:
                continue
            if sum(peer["video_layers"]) == 0:
                audio_rates.append(peer["bytes"] / w)
            elif peer["video_layers"][2] > 0 and peer["video_layers"][:2] == [0, 0]:
                f_rates.append(peer["bytes"] / w)
audio_rate = statistics.median(audio_rates) if audio_rates else 0.0
video_rate = max(statistics.median(f_rates) - audio_rate, 0.0) if f_rates else 0.0
per_node = [n - 2 * (n // 3) + 1, n // 3, n // 3]  # participants (A: + the host), all publishing
everyone_bps = sum(
    per_node[i] * (audio_rate + video_rate) * (sum(per_node) - per_node[i]) for i in range(3)
)
everyone_kbps = everyone_bps * 8 / 1000


def loss(g):
    packets, seq_gaps, ooo = g
    expected = packets - ooo + seq_gaps
    return f"{seq_gaps * 100 / expected:.3f} %" if expected > 0 else "-"


print(f"== N={n} sites ({run}), window {window:.1f} s, owner {owner}")
print(f"load average (1/5/15 min) at the window's start | end: {(run / 'loadavg').read_text().strip()}")
print(f"load tools: {outcomes}; exit codes {(run / 'exit_codes').read_text().split() if (run / 'exit_codes').exists() else '?'}; their CPU (cores) {tool_cores}")
print("legs: " + "; ".join(legs))
print(f"cascaded: {cascade_kbps:.0f} kbit/s across nodes, {tracks_now} track crossings (rakor_cascade_tracks)")
print(
    f"every track to every remote participant: {naive_kbps:.0f} kbit/s "
    f"({deliveries['audio']} audio + {deliveries['video']} video remote deliveries); "
    f"ratio {cascade_kbps / naive_kbps if naive_kbps else float('nan'):.3f}"
)
print(
    f"every track to every remote participant, all shown at the top layer: {everyone_kbps:.0f} kbit/s "
    f"(per track: audio {audio_rate * 8 / 1000:.0f} kbit/s, video f {video_rate * 8 / 1000:.0f} kbit/s); "
    f"ratio {cascade_kbps / everyone_kbps if everyone_kbps else float('nan'):.3f}"
)
print(f"(received from the own node: {local_bps * 8 / 1000:.0f} kbit/s; unknown senders {unknown})")
print("nodes: " + "; ".join(nodes))
print(
    f"delivery: host wall {host_wall}/{n} sites' video; sites receiving the host at f "
    f"{sites_f}/{sites}, a spotlight at h {sites_h}/{sites} (the spotlight itself gets none)"
)
print(f"loss: from the own node {loss(gaps['local'])}, across nodes {loss(gaps['remote'])}")
print("joins (connect →): " + "; ".join(joins.values()))
