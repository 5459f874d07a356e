#!/usr/bin/env bash
# schemathesis against the district API's own OpenAPI document, for a
# bounded time: every operation with generated (and hostile) inputs, as an
# account holding every role; any 5xx fails. Needs Python 3 with pip.
# The password change is left out: its wrong old passwords count towards
# the lock-out (as they must), which would lock the fixture's account.
#
#   scripts/schemathesis.sh [SECONDS]   (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_BOUND="${1:-300}"

if ! command -v st >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi

work="$(mktemp -d)"
cargo build --release -q -p testbed --bin api-fixture
target/release/api-fixture --token-file "$work/token" --dir "$work/district" >"$work/url" 2>"$work/log" &
fixture=$!
trap 'kill $fixture 2>/dev/null || true; wait $fixture 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do
    [ -s "$work/url" ] && [ -s "$work/token" ] && break
    sleep 0.5
done
base="$(cat "$work/url")"
[ -n "$base" ] || { echo "the API fixture did not start:" >&2; cat "$work/log" >&2; exit 1; }
echo "API at $base"

status=0
timeout "$SECONDS_BOUND" st run "$base/api/openapi.json" \
    --checks not_a_server_error \
    --header "Authorization: Bearer $(cat "$work/token")" \
    --max-examples "${MAX_EXAMPLES:-30}" \
    --request-timeout 30 \
    --workers 1 \
    --exclude-path /api/session/password \
    --generation-deterministic \
    --generation-with-security-parameters false || status=$?
# 124: the time bound was reached with no failure so far.
if [ "$status" -ne 0 ] && [ "$status" -ne 124 ]; then
    echo "schemathesis found server errors (above); fixture log:" >&2
    tail -50 "$work/log" >&2
    exit 1
fi
if ! kill -0 $fixture 2>/dev/null; then
    echo "the platform died under schemathesis:" >&2
    tail -50 "$work/log" >&2
    exit 1
fi
echo "schemathesis: no server error"
