#!/usr/bin/env bash
# Runs every test of the project: sets up the Python test oracles (signedjson, canonicaljson,
# in a venv under target/), then the whole cargo workspace's tests. This is the test command
# of README.md, and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

INVITED_ORACLE_PYTHON="$(scripts/setup-oracles.sh | tail -n 1)"
export INVITED_ORACLE_PYTHON
cargo test --workspace --locked "$@"
