#!/usr/bin/env bash
# The soak (L5): the seed district (600 terminals) for MINUTES (default 5)
# with an alert every minute, every third cancelled ten seconds in, sampling
# the process's resident memory and CPU every ten seconds. Fails on a panic,
# on an alert that did not reach every terminal, or on memory that keeps
# growing after the warm-up. Samples go to target/soak.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-5}"
cargo build --release -p testbed --bin soak
./target/release/soak --minutes "$minutes" --csv target/soak.csv
