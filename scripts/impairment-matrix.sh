#!/usr/bin/env bash
# The loss/outage matrix: one alert to a village whose terminals (the real
# programs, as processes) each sit behind a differently impaired link (the
# seeded UDP proxy of tests/src/impair.rs), measured from what each played.
# FIRE_SEED=N picks another seed. Writes the table to target/impairment-matrix.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export FIRE_MATRIX_OUT="$PWD/target/impairment-matrix.md"
cargo test --release -p tests --test under_fire impairment_matrix -- --ignored --nocapture
cat "$FIRE_MATRIX_OUT"
