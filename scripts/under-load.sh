#!/usr/bin/env bash
# S1 under load (README, "Under load"): a village platform in its own
# process with N genuine thin terminals linked; a recorded alert calm, the
# same alert while strangers flood the QUIC port (certificate-less
# handshakes and half-open ones from many addresses), then a 60 s freeze of
# the relay (every link dies at both ends, as in a carrier outage) and an
# alert issued the moment it thaws, with every terminal redialling at once.
# Fails unless every terminal got both alerts whole and got back and heard
# the third. Writes target/under-load/*.jsonl.
#
#   scripts/under-load.sh [COUNTS]   full run (default 2000,10000: the
#                                    flood is 16 addresses of each kind)
#   scripts/under-load.sh --short    CI: 300 terminals, a lighter flood
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p platform
cargo build --release -p bench --bin under_load
out=target/under-load
mkdir -p "$out"
if [ "${1:-}" = "--short" ]; then
    ./target/release/under_load --terminals 300 --flood-sources 4 --flood-loops 2 \
        --half-open-rate 100 --check | tee "$out/short.jsonl"
    exit 0
fi
: > "$out/full.jsonl"
for n in $(echo "${1:-2000,10000}" | tr , ' '); do
    ./target/release/under_load --terminals "$n" --check | tee -a "$out/full.jsonl"
done
