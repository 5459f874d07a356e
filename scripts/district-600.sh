#!/usr/bin/env bash
# The seed district on this machine: 1 district, 5 towns, 87 villages, 600
# terminals, real QUIC on loopback, on an idle machine; then the same tree
# of 92 platforms with 200 terminals beside a CPU hog that this script
# starts and stops (two busy loops in other processes: one loop alone did
# not disturb the old terminal design here, two cut it to 303/600). Each
# run fails unless every terminal verified and played the whole alert,
# nothing was refused, and the village notice stayed in its village. About
# two minutes after the release build.
#
# Why 200 beside the hog: two loops leave the demo's process about 0.8 of
# the 2 cores, and the whole district in one process needs 0.9 of this VM
# with nothing playing (2026-12-02; mostly clock probes) and 1.75 while the
# alert plays (the 600 terminals' Opus decoders alone take 0.5). No design
# plays through a deficit; what the hog run checks is that contention
# (every wake-up waiting behind a busy loop) cuts nothing, and 200
# terminals need about 0.7 core there.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p testbed --bin demo

check() {
    python3 - "$1" "$2" <<'PY'
import json, sys
label, s = sys.argv[1], json.loads(sys.argv[2])
problems = []
if s["connected"] != s["terminals"]: problems.append(f'{s["connected"]} of {s["terminals"]} connected')
if s["played_full"] != s["terminals"]: problems.append(f'{s["played_full"]} of {s["terminals"]} played the alert in full')
if s["refused"] != 0: problems.append(f'{s["refused"]} refusals')
if s["notice_outside_village"] != 0: problems.append(f'{s["notice_outside_village"]} notices outside the village')
if s["notice_played"] != s["notice_village_terminals"]: problems.append(f'notice played by {s["notice_played"]} of {s["notice_village_terminals"]} in the village')
a, f = s["activation_ms"], s["alert_frames"]
print(f'{label}: {s["played_full"]}/{s["terminals"]} played in full (fewest frames {f["played_min"]} of {f["total"]}, '
      f'late {s["late_frames"]}, concealed at most {f["concealed_max"]}); activation p50 {a["p50"]} ms, max {a["max"]} ms')
if problems:
    print(f'FAILED ({label}): ' + "; ".join(problems))
    sys.exit(1)
PY
}

summary=$(./target/release/demo --json)
echo "$summary"
check idle "$summary"

# Someone else's work for the whole run; bounded, so a killed script
# cannot leave it spinning. This VM's own neighbours vary: on 2026-12-01
# the design before the console (7547a96) played 553 and 593 of 600 here
# beside the hog in one hour and 600 of 600 in another, so the run beside
# the hog gets a second attempt, and each attempt is printed. Both failing
# fails the script.
beside_hog() {
    local hogs=()
    for _ in 1 2; do
        timeout 600 sh -c 'while :; do :; done' &
        hogs+=($!)
    done
    trap 'kill "${hogs[@]}" 2>/dev/null || true' EXIT
    summary=$(./target/release/demo --json --terminals 200)
    kill "${hogs[@]}" 2>/dev/null || true
    trap - EXIT
    echo "$summary"
    check "beside a CPU hog (attempt $1)" "$summary"
}
beside_hog 1 || beside_hog 2
