#!/usr/bin/env bash
# P2: live voice mouth to ear (bench/src/bin/mouth_to_ear.rs): speech over
# the district's WebSocket, through town and village, each terminal's last
# hop through the impairment proxy at 100 ms RTT and 2 % loss, onto a
# modelled sound card. Prints one JSON line (p50/p95/p99, frames).
#   scripts/latency.sh          4 terminals, 60 s of speech
#   scripts/latency.sh short    CI: 2 terminals, 10 s (figures, no verdict)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "short" ]]; then
    args=(--terminals 2 --secs 10)
else
    args=(--terminals 4 --secs 60)
fi
cargo build --release -q -p bench --bin mouth_to_ear
target/release/mouth_to_ear "${args[@]}"
