#!/usr/bin/env bash
# Checks contrib/systemd/invited.service with `systemd-analyze verify`: every directive must
# parse, with no warning at all (systemd only warns about a bad value and ignores it, which
# would quietly drop a protection). systemd-analyze also insists that ExecStart exists, so
# the check runs on a copy whose ExecStart names the release binary built here; nothing else
# in the unit changes. Installs systemd (Debian's package) when systemd-analyze is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v systemd-analyze >/dev/null; then
    echo "verify-systemd-unit: installing systemd (for systemd-analyze)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
cargo build --release --locked --quiet --bin invited
BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/invited"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
sed "s#^ExecStart=/usr/local/bin/invited #ExecStart=$BIN #" contrib/systemd/invited.service \
    >"$WORK/invited.service"
grep -q "^ExecStart=$BIN " "$WORK/invited.service" || {
    echo "verify-systemd-unit: no ExecStart=/usr/local/bin/invited line to check" >&2
    exit 1
}
set +e
OUT="$(systemd-analyze verify "$WORK/invited.service" 2>&1)"
RC=$?
set -e
if [ "$RC" -ne 0 ] || [ -n "$OUT" ]; then
    echo "verify-systemd-unit: contrib/systemd/invited.service is not clean:" >&2
    echo "$OUT" >&2
    exit 1
fi
echo "verify-systemd-unit: contrib/systemd/invited.service ok"
