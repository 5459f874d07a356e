#!/usr/bin/env python3
"""The README's fan-out table from the fanout harness's JSON lines and the
peers' result files: relay CPU per client per second of audio (above the
server's idle with no client, as the peers count it), memory per client.

fanout_table.py THIN.jsonl REAL.jsonl PEER_RESULTS_DIR
"""
import glob
import json
import os
import sys


def ours(path):
    rows = []
    for line in open(path):
        r = json.loads(line)
        rec, live = r["recorded"], r.get("live") or {}
        spread = lambda s: f'{s["p50_ms"]} / {s["p99_ms"]}' if s else "–"
        rows.append({
            "n": r["terminals"],
            "who": "ours, " + ("thin load client" if r["client"] == "thin" else "terminal-agent processes"),
            "recorded": rec["cpu_ms_per_terminal_s"]["above_no_terminal"],
            "live": (live.get("cpu_ms_per_terminal_s") or {}).get("above_no_terminal", "–"),
            "idle": r["idle_ms_per_terminal_s"],
            "rss": r["rss_kb_per_terminal"]["idle"],
            "notes": f'connected {r["connected"]} in {r["connect_s"]} s; spread p50/p99 ms recorded {spread(rec.get("spread"))}, '
                     f'live {spread(live.get("spread"))}; above its idle with the connections: '
                     f'recorded {rec["cpu_ms_per_terminal_s"]["above_connected"]}, '
                     f'live {(live.get("cpu_ms_per_terminal_s") or {}).get("above_connected", "–")}',
        })
    return rows


def peers(folder):
    rows = []
    for p in sorted(glob.glob(os.path.join(folder, "*.json"))):
        r = json.load(open(p))
        if r["peer"] == "icecast2":
            page = "1 s pages" if "1000 ms" in r["codec"] else r["codec"].split("page_duration ")[1] + " pages"
            who = f"icecast2, {page}"
        elif r["peer"] == "snapcast":
            who = "snapserver"
        else:
            continue
        rows.append({
            "n": r["n"], "who": who,
            "recorded": r["server_cpu_ms_per_client_per_s_above_baseline"], "live": "–", "idle": "–",
            "rss": r["server_rss_kb_per_client"],
            "notes": f'connected {r.get("connected_before")}',
        })
    return rows


rows = ours(sys.argv[1]) + ours(sys.argv[2]) + peers(sys.argv[3])
rows.sort(key=lambda r: (r["n"], not r["who"].startswith("ours"), r["who"]))
print("| clients | server | CPU ms per client-second, recorded (peers: their stream) | live (40 ms segments) | idle, per connected client-second | RSS kB per client | notes |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f'| {r["n"]} | {r["who"]} | {r["recorded"]} | {r["live"]} | {r["idle"]} | {r["rss"]} | {r["notes"]} |')
