#!/usr/bin/env bash
# The soak (L5): the seed district (600 terminals) for MINUTES (default 5)
# with an alert every minute, every third cancelled ten seconds in, sampling
# the process's resident memory and CPU every ten seconds. Fails on a panic,
# on an alert that did not reach every terminal, or on memory that keeps
# growing after the warm-up. Samples go to target/soak.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-5}"
# A short run sits inside the warm-up (caches filling, ended broadcasts kept
# for an hour): it checks crashes and delivery and catches gross growth;
# flatness is judged by a long run (README, "Soak").
growth="${SOAK_MAX_GROWTH_PERCENT:-$([ "$minutes" -lt 30 ] && echo 30 || echo 10)}"
cargo build --release -p testbed --bin soak
./target/release/soak --minutes "$minutes" --max-growth-percent "$growth" --csv target/soak.csv
