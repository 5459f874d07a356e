#!/usr/bin/env bash
# Runs the attack suite and writes what it observed into docs/security.md
# (the table between the attack-table markers).
set -euo pipefail
cd "$(dirname "$0")/.."
results=target/attack-report
rm -rf "$results"
mkdir -p "$results"
ATTACK_REPORT_DIR="$PWD/$results" cargo test -p tests --test attacks -- --test-threads=2
cargo run -q -p tests --bin attack-report -- "$results" docs/security.md
