#!/usr/bin/env bash
# Sets up the Python oracles the differential tests of crates/matrix compare against:
# a venv at target/oracle-venv with pinned signedjson and canonicaljson (Synapse's own
# libraries for canonical JSON and JSON signatures). Idempotent and fast when already done.
# Prints the venv's python path on the last line of stdout.
#
#   scripts/setup-oracles.sh            # then: cargo test -p invited-matrix
#   INVITED_ORACLE_PYTHON=/path/to/python cargo test -p invited-matrix   # use another interpreter
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/target/oracle-venv"
PY="$VENV/bin/python"

# Exact pins: the oracle must not move under us. cffi/pycparser come with pynacl.
REQUIREMENTS=(
    "signedjson==1.1.4"
    "canonicaljson==2.0.0"
    "unpaddedbase64==2.1.0"
    "pynacl==1.6.2"
    "prometheus_client==0.21.1"
)
STAMP="$VENV/.invited-oracles"
WANT="${REQUIREMENTS[*]}"

log() { echo "setup-oracles: $*" >&2; }

ready() {
    [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] &&
        "$PY" -c 'import signedjson.sign, signedjson.key, canonicaljson, nacl.signing, prometheus_client.openmetrics.parser' 2>/dev/null
}

if ready; then
    echo "$PY"
    exit 0
fi

PYTHON3="${PYTHON3:-python3}"
command -v "$PYTHON3" >/dev/null || { log "python3 not found"; exit 1; }
mkdir -p "$ROOT/target"

if [ ! -x "$PY" ]; then
    log "creating venv at $VENV"
    if ! "$PYTHON3" -m venv "$VENV" >&2; then
        # Debian without python3-venv has no ensurepip: make a pip-less venv and let the
        # system pip install into it (pip >= 22.3 has --python).
        log "python3 -m venv failed (python3-venv missing?); trying --without-pip"
        rm -rf "$VENV"
        "$PYTHON3" -m venv --without-pip "$VENV" >&2
    fi
fi

if "$PY" -m pip --version >/dev/null 2>&1; then
    PIP=("$PY" -m pip)
else
    PIP=("$PYTHON3" -m pip --python "$PY")
fi

log "installing ${REQUIREMENTS[*]}"
"${PIP[@]}" install --quiet --disable-pip-version-check --no-input "${REQUIREMENTS[@]}" >&2

"$PY" -c 'import signedjson.sign, signedjson.key, canonicaljson, nacl.signing'
echo "$WANT" >"$STAMP"
echo "$PY"
