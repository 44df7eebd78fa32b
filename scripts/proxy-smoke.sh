#!/usr/bin/env bash
# The reverse-proxy smoke test alone: README "Deployment" topology (b) behind a real nginx
# and a real Caddy (Debian's packages, installed when missing) in front of invited
# (tests/proxy.rs). CI runs the same test within scripts/test.sh; this is for checking a
# proxy config change quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-proxies.sh
cargo test --locked --test proxy "$@"
