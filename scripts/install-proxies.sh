#!/usr/bin/env bash
# Installs the reverse proxies tests/proxy.rs runs in front of invited, from Debian's
# packages, when they are missing: nginx (nginx-light) and Caddy. Called by scripts/test.sh
# and scripts/proxy-smoke.sh; the tests fail, not skip, without them.
set -euo pipefail

missing=()
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    missing+=(nginx-light)
fi
if ! command -v caddy >/dev/null && [ ! -x /usr/bin/caddy ]; then
    missing+=(caddy)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-proxies: installing ${missing[*]} (for tests/proxy.rs)" >&2
    apt-get update -qq
    # Where services start on install, Debian's Caddy serves :80 with its admin API on
    # :2019; the tests' own instances use neither (free loopback ports, `admin off`).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
