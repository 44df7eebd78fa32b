#!/usr/bin/env bash
# Interop test with a real Synapse: Synapse invites a user of invited, over TLS, in every room
# version it creates, and invited's refusals travel back to Synapse's client.
#
#   scripts/interop-synapse.sh            # from the repository root or anywhere
#   KEEP=1 scripts/interop-synapse.sh     # keep the work directory (logs, databases) afterwards
#
# What it does, all on loopback:
#   1. installs the pinned matrix-synapse from PyPI into target/synapse-venv (reused if present);
#   2. builds invited (debug: `cargo build -p invited`, quick after `cargo test`);
#   3. makes a test CA and one certificate per server for IP 127.0.0.1 (openssl);
#   4. starts Synapse (SQLite, TLS federation listener, plain client listener, server name
#      127.0.0.1:<port>, trusting only the test CA, allowed to reach loopback and nothing else)
#      and invited (HTTPS, [federation] ca_file = the test CA);
#   5. runs tests/interop/synapse_interop.py, which registers a Synapse user, creates rooms of
#      room versions 1..12, invites @bob:<invited> to each and checks both servers' results,
#      then checks that invited's refusals reach Synapse's client with invited's errcode,
#      then the rest of an invite's life in room versions 1, 11 and 12: invited rejects over
#      federation, Synapse's inviter withdraws (kick), another member's kick is refused;
#   6. checks Synapse's fallback to /v1/invite (room versions 1, 2) against a second invited
#      behind a small proxy (in the driver) that answers /v2/invite with 404 M_UNRECOGNIZED;
#   7. stops every server it started by PID (also on failure or Ctrl-C).
#
# Logs: <work>/synapse/homeserver.log and <work>/invited{,-v1}/invited.log (RUST_LOG=debug,
# less rustls's and ureq_proto's chatter); their tails are printed when something fails, and
# the work directory (under $TMPDIR) is then kept. The last line is `N passed, M failed`;
# the exit status is 1 on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The Synapse release this test pins (README "Interop with Synapse" names it too).
SYNAPSE_VERSION="1.163.2"
VENV="$ROOT/target/synapse-venv"
PY="$VENV/bin/python"
DRIVER="$ROOT/tests/interop/synapse_interop.py"

log() { echo "interop: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T_START="$(now)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/invited-interop.XXXXXX")"
SUMMARY="0 passed, 1 failed" # until the test has run: any earlier failure is one failure
SYNAPSE_PID=""
INVITED_PID=""
INVITED1_PID=""
FAILED_STEP=""

stop_pid() { # PID NAME: SIGTERM, wait up to 10 s, then SIGKILL; only our own child.
    local pid="$1" name="$2" i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) did not stop on SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

show_logs() {
    echo "---- invited log (last 60 lines of $WORK/invited/invited.log)"
    tail -n 60 "$WORK/invited/invited.log" 2>/dev/null || true
    echo "---- second invited log (last 30 lines of $WORK/invited-v1/invited.log)"
    tail -n 30 "$WORK/invited-v1/invited.log" 2>/dev/null || true
    echo "---- Synapse log (last 60 lines of $WORK/synapse/homeserver.log)"
    tail -n 60 "$WORK/synapse/homeserver.log" 2>/dev/null || true
    [ -s "$WORK/synapse/stderr.log" ] && { echo "---- Synapse stderr"; tail -n 30 "$WORK/synapse/stderr.log"; }
    echo "----"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$INVITED_PID" invited
    stop_pid "$INVITED1_PID" "second invited"
    stop_pid "$SYNAPSE_PID" Synapse
    if [ "$rc" -ne 0 ] && [ -n "$FAILED_STEP" ]; then
        log "failed at: $FAILED_STEP"
        show_logs >&2
    fi
    if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    # The last line, for people and for CI: `N passed, M failed`.
    echo "$SUMMARY"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { FAILED_STEP="$*"; log "$*"; }

# ---- 1. Synapse venv ------------------------------------------------------------------------
step "Synapse $SYNAPSE_VERSION venv at $VENV"
T0="$(now)"
STAMP="$VENV/.invited-synapse"
if [ -x "$PY" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "matrix-synapse==$SYNAPSE_VERSION" ] &&
    "$PY" -c 'import synapse, signedjson' 2>/dev/null; then
    log "reusing venv"
else
    rm -rf "$VENV"
    mkdir -p "$ROOT/target"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-input \
        "matrix-synapse==$SYNAPSE_VERSION" >&2
    echo "matrix-synapse==$SYNAPSE_VERSION" >"$STAMP"
fi
GOT="$("$PY" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))')"
[ "$GOT" = "$SYNAPSE_VERSION" ] || { log "venv has Synapse $GOT, want $SYNAPSE_VERSION"; exit 1; }
T_VENV="$(since "$T0")"

# ---- 2. invited -----------------------------------------------------------------------------
step "cargo build -p invited"
T0="$(now)"
cargo build -p invited --locked --quiet
INVITED_BIN="$(cargo metadata --format-version 1 --no-deps |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/invited"
[ -x "$INVITED_BIN" ] || { log "no binary at $INVITED_BIN"; exit 1; }
T_BUILD="$(since "$T0")"

# ---- 3. ports, CA, certificates -------------------------------------------------------------
step "test CA and certificates"
command -v openssl >/dev/null || { log "openssl not found (apt-get install openssl)"; exit 1; }
read -r SYN_FED_PORT SYN_CLIENT_PORT INV_PORT PROXY_PORT INV1_PORT < <("$PY" - <<'EOF'
import socket
socks = []
for _ in range(5):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*[s.getsockname()[1] for s in socks])
EOF
)
SYN_NAME="127.0.0.1:$SYN_FED_PORT"
INV_NAME="127.0.0.1:$INV_PORT"
# A second invited, reached only through a proxy that hides /v2/invite (Synapse's v1 fallback).
INV1_NAME="127.0.0.1:$PROXY_PORT"
mkdir -p "$WORK/ca" "$WORK/synapse" "$WORK/invited" "$WORK/invited-v1"
(
    cd "$WORK/ca"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=invited interop test CA" -keyout ca.key -out ca.pem \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >leaf.ext
    for who in synapse invited; do
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=$who 127.0.0.1" -keyout "$who.key" -out "$who.csr" 2>/dev/null
        openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile leaf.ext -out "$who.pem" 2>/dev/null
    done
)

# ---- 4. start Synapse and invited -----------------------------------------------------------
SHARED_SECRET="$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
step "start Synapse as $SYN_NAME (client API on 127.0.0.1:$SYN_CLIENT_PORT)"
SYN_CONFIG="$("$PY" "$DRIVER" setup --dir "$WORK/synapse" --server-name "$SYN_NAME" \
    --federation-port "$SYN_FED_PORT" --client-port "$SYN_CLIENT_PORT" \
    --tls-cert "$WORK/ca/synapse.pem" --tls-key "$WORK/ca/synapse.key" --ca "$WORK/ca/ca.pem" \
    --shared-secret "$SHARED_SECRET")"
T0="$(now)"
(cd "$WORK/synapse" && exec "$PY" -m synapse.app.homeserver --config-path "$SYN_CONFIG") \
    >"$WORK/synapse/stderr.log" 2>&1 </dev/null &
SYNAPSE_PID=$!

write_invited_config() { # DIR SERVER_NAME LISTEN_PORT
cat >"$1/invited.toml" <<EOF
server_name = "$2"
listen = "127.0.0.1:$3"
data_dir = "data"
workers = 2

[tls]
certificate = "$WORK/ca/invited.pem"
private_key = "$WORK/ca/invited.key"

[federation]
ca_file = "$WORK/ca/ca.pem"
# The default blocklist has loopback in it; Synapse is on loopback here.
ip_range_allowlist = ["127.0.0.0/8", "::1/128"]

[rate_limits]
per_invitee_burst = 100
EOF
}
start_invited() { # DIR
    (cd "$1" && RUST_LOG="debug,rustls=info,ureq_proto=info" exec "$INVITED_BIN" --config invited.toml serve) \
        >"$1/stdout.log" 2>"$1/invited.log" </dev/null &
}
step "start invited as $INV_NAME"
write_invited_config "$WORK/invited" "$INV_NAME" "$INV_PORT"
start_invited "$WORK/invited"
INVITED_PID=$!
step "start a second invited as $INV1_NAME (listening on 127.0.0.1:$INV1_PORT, behind the proxy)"
write_invited_config "$WORK/invited-v1" "$INV1_NAME" "$INV1_PORT"
start_invited "$WORK/invited-v1"
INVITED1_PID=$!

wait_for() { # NAME PID URL SECONDS
    local name="$1" pid="$2" url="$3" secs="$4" i
    for i in $(seq 1 $((secs * 5))); do
        kill -0 "$pid" 2>/dev/null || { log "$name exited during start-up"; return 1; }
        if "$PY" - "$url" "$WORK/ca/ca.pem" <<'EOF' 2>/dev/null; then
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                     urllib.request.HTTPSHandler(context=ctx))
opener.open(sys.argv[1], timeout=2).read()
EOF
            return 0
        fi
        sleep 0.2
    done
    log "$name did not answer $url within $secs s"
    return 1
}
step "wait for invited"
wait_for invited "$INVITED_PID" "https://$INV_NAME/_matrix/federation/v1/version" 30
wait_for "second invited" "$INVITED1_PID" "https://127.0.0.1:$INV1_PORT/_matrix/federation/v1/version" 30
step "wait for Synapse"
wait_for Synapse "$SYNAPSE_PID" "http://127.0.0.1:$SYN_CLIENT_PORT/health" 90
wait_for "Synapse federation" "$SYNAPSE_PID" "https://$SYN_NAME/_matrix/key/v2/server" 30
T_START_SERVERS="$(since "$T0")"

# ---- 5. the test ----------------------------------------------------------------------------
step "run tests/interop/synapse_interop.py"
T0="$(now)"
set +e
(cd "$WORK" && "$PY" "$DRIVER" run \
    --synapse-client-url "http://127.0.0.1:$SYN_CLIENT_PORT" \
    --synapse-federation-url "https://$SYN_NAME" \
    --synapse-name "$SYN_NAME" --synapse-db "$WORK/synapse/homeserver.db" \
    --shared-secret "$SHARED_SECRET" \
    --invited-url "https://$INV_NAME" --invited-name "$INV_NAME" \
    --invited-db "$WORK/invited/data/invited.db" \
    --invited-bin "$INVITED_BIN" --invited-config "$WORK/invited/invited.toml" \
    --invited-log "$WORK/invited/invited.log" \
    --v1-invited-name "$INV1_NAME" --v1-invited-db "$WORK/invited-v1/data/invited.db" \
    --v1-invited-config "$WORK/invited-v1/invited.toml" \
    --v1-proxy-port "$PROXY_PORT" --v1-upstream-port "$INV1_PORT" \
    --v1-proxy-cert "$WORK/ca/invited.pem" --v1-proxy-key "$WORK/ca/invited.key" \
    --ca "$WORK/ca/ca.pem" --report "$WORK/report.json" --counts "$WORK/counts")
DRIVER_RC=$?
set -e
T_RUN="$(since "$T0")"
FAILED_STEP=""

read -r PASSED FAILED <"$WORK/counts" 2>/dev/null || { PASSED=0; FAILED=1; }
[ "$DRIVER_RC" -eq 0 ] || [ "$FAILED" -gt 0 ] || FAILED=1
if [ "$FAILED" -gt 0 ]; then
    show_logs
fi
log "Synapse $SYNAPSE_VERSION; times: venv ${T_VENV}s, build ${T_BUILD}s, servers up ${T_START_SERVERS}s, test ${T_RUN}s, total $(since "$T_START")s"
SUMMARY="$PASSED passed, $FAILED failed" # printed last, by cleanup
[ "$FAILED" -eq 0 ]
