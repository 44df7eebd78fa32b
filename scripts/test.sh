#!/usr/bin/env bash
# Runs every test of the project: sets up the Python test oracles (signedjson, canonicaljson,
# in a venv under target/), builds the release binary for the hostile-federation tests, then
# runs the whole cargo workspace's tests. This is the test command of README.md, and what
# .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/proxy.rs runs a real nginx and a real Caddy (Debian's packages) in front of invited.
scripts/install-proxies.sh

INVITED_ORACLE_PYTHON="$(scripts/setup-oracles.sh | tail -n 1)"
export INVITED_ORACLE_PYTHON

# tests/abuse.rs runs against the release binary (its memory and latency bounds are what a
# deployment sees); without INVITED_RELEASE_BIN it falls back to the debug build.
cargo build --release --locked --bin invited
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
INVITED_RELEASE_BIN="$(cd "$TARGET_DIR" && pwd)/release/invited"
export INVITED_RELEASE_BIN

cargo test --workspace --locked "$@"
