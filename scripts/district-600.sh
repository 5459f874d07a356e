#!/usr/bin/env bash
# The seed district on this machine: 1 district, 5 towns, 87 villages, 600
# terminals, real QUIC on loopback. Fails unless every terminal verified and
# played the whole alert, nothing was refused, and the village notice stayed
# in its village. About a minute after the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p platform
summary=$(./target/release/platform demo --json)
echo "$summary"
python3 - "$summary" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
problems = []
if s["connected"] != s["terminals"]: problems.append(f'{s["connected"]} of {s["terminals"]} connected')
if s["played_full"] != s["terminals"]: problems.append(f'{s["played_full"]} of {s["terminals"]} played the alert in full')
if s["refused"] != 0: problems.append(f'{s["refused"]} refusals')
if s["notice_outside_village"] != 0: problems.append(f'{s["notice_outside_village"]} notices outside the village')
if s["notice_played"] != s["notice_village_terminals"]: problems.append(f'notice played by {s["notice_played"]} of {s["notice_village_terminals"]} in the village')
a = s["activation_ms"]
print(f'{s["played_full"]}/{s["terminals"]} played in full; activation p50 {a["p50"]} ms, p95 {a["p95"]} ms, max {a["max"]} ms')
if problems:
    print("FAILED: " + "; ".join(problems))
    sys.exit(1)
PY
