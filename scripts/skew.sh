#!/usr/bin/env bash
# P4: skew between the terminals of one village (bench/src/bin/skew.rs).
# Each terminal on an emulated clock (±2 s, ±50 ppm) and a modelled sound
# card (±50 ppm), each behind the seeded impairment proxy (round trips
# 40–200 ms with jitter); a chirp train plays and the cards' recordings are
# cross-correlated. Prints one JSON line per run: symmetric paths, then
# asymmetric ones (reported against half the asymmetry).
#   scripts/skew.sh            the long run: 8 terminals, 120 s to settle, 120 s of audio
#   scripts/skew.sh short      CI: 4 terminals, 10 s to settle, 12 s of audio (figures, no verdict)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "short" ]]; then
    args=(--terminals 4 --warmup 10 --secs 12)
else
    args=(--terminals 8 --warmup 120 --secs 120)
fi
cargo build --release -q -p bench --bin skew
target/release/skew "${args[@]}"
target/release/skew "${args[@]}" --asymmetric
