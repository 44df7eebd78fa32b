#!/usr/bin/env bash
# Measures invited's footprint and prints a Markdown table:
#   (a) the size of the stripped release binary (the release profile strips);
#   (b) start-to-first-answer time: from spawning `invited serve` until
#       GET /_matrix/federation/v1/version first answers 200. Cold = fresh data directory
#       (includes signing-key generation and database creation); warm = restart on an existing
#       data directory. Median of RUNS runs each;
#   (c) idle RSS (VmRSS) after start, and after REQUESTS sequential GET /_matrix/key/v2/server
#       (each on a new connection), plus the peak (VmHWM).
#
#   scripts/measure-footprint.sh                  # builds, then measures (RUNS=5, REQUESTS=1000)
#   RUNS=9 REQUESTS=5000 scripts/measure-footprint.sh
#   SKIP_BUILD=1 scripts/measure-footprint.sh     # measure the existing target/release/invited
#
# Needs python3 (process spawning and precise timing; standard library only). Every server
# started is stopped by PID, also on failure or Ctrl-C.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS="${RUNS:-5}"
REQUESTS="${REQUESTS:-1000}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/invited"

log() { echo "measure-footprint: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v python3 >/dev/null || die "python3 is needed"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/invited-footprint.XXXXXX")"
SERVER_PID=""
HELPER_PID=""

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# Stops the running server (SIGTERM, then SIGKILL after 10 s) and its spawning helper.
stop_server() {
    if alive "$SERVER_PID"; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do
            alive "$SERVER_PID" || break
            # A zombie waits for the helper to reap it; it is stopped all the same.
            [ "$(awk '/^State:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null)" = Z ] && break
            sleep 0.1
        done
        if alive "$SERVER_PID" &&
            [ "$(awk '/^State:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null)" != Z ]; then
            log "server $SERVER_PID did not stop on SIGTERM; killing it"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
    fi
    if [ -n "$HELPER_PID" ]; then
        # The helper exits once its server has exited.
        for _ in $(seq 50); do alive "$HELPER_PID" || break; sleep 0.1; done
        alive "$HELPER_PID" && kill -KILL "$HELPER_PID" 2>/dev/null
        wait "$HELPER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
    HELPER_PID=""
}

cleanup() {
    local status=$?
    stop_server
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Writes $1/invited.toml for a fresh port; data in $1/data. Prints the port.
write_config() {
    local dir=$1 port
    port="$(free_port)"
    mkdir -p "$dir"
    cat >"$dir/invited.toml" <<EOF
server_name = "footprint.test"
listen = "127.0.0.1:$port"
data_dir = "data"
EOF
    echo "$port"
}

# Starts `invited serve` with config dir $1 (port $2) and waits for the first 200 on the version
# endpoint. Sets SERVER_PID and START_MS. The helper python process spawns the server (so the
# clock starts at the spawn itself, not at python's own start-up), polls, reports, and then
# stays as the server's parent until it exits.
start_server() {
    local dir=$1 port=$2 out="$WORK/helper.out"
    : >"$out"
    python3 - "$BIN" "$dir/invited.toml" "$dir/server.log" \
        "http://127.0.0.1:$port/_matrix/federation/v1/version" >"$out" <<'PY' &
import subprocess, sys, time, urllib.request, urllib.error
binary, config, log_path, url = sys.argv[1:5]
with open(log_path, "ab") as log:
    t0 = time.monotonic()
    server = subprocess.Popen([binary, "--config", config, "serve"], cwd=config.rsplit("/", 1)[0],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    print("pid", server.pid, flush=True)
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if server.poll() is not None:
            print("fail server exited with", server.returncode, flush=True)
            sys.exit(1)
        if time.monotonic() - t0 > 60:
            print("fail no answer within 60 s", flush=True)
            server.kill()
            sys.exit(1)
        time.sleep(0.0005)
    print("ready %.1f" % ((time.monotonic() - t0) * 1000), flush=True)
    sys.exit(server.wait())
PY
    HELPER_PID=$!
    START_MS=""
    for _ in $(seq 1300); do
        if [ -z "$SERVER_PID" ]; then
            SERVER_PID="$(awk '$1 == "pid" {print $2}' "$out")"
        fi
        if grep -q '^fail' "$out"; then
            cat "$dir/server.log" >&2 || true
            die "$(grep '^fail' "$out")"
        fi
        START_MS="$(awk '$1 == "ready" {print $2}' "$out")"
        [ -n "$START_MS" ] && return 0
        alive "$HELPER_PID" || die "the start-up helper died: $(cat "$out")"
        sleep 0.05
    done
    die "no answer from the server within 65 s"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# Median (and min–max) of the numbers given as arguments.
stats() {
    printf '%s\n' "$@" | sort -n | awk '
        { v[NR] = $1 }
        END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.1f ms (min %.1f, max %.1f)", m, v[1], v[NR]
        }'
}

# ---- (a) build and binary size ------------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ]; then
    log "cargo build --release -p invited"
    cargo build --release -p invited >&2
fi
[ -x "$BIN" ] || die "$BIN not found (build it, or unset SKIP_BUILD)"
SIZE="$(stat -c %s "$BIN")"
STRIPPED="unknown"
if command -v file >/dev/null; then
    case "$(file -b "$BIN")" in
        *"not stripped"*) STRIPPED="not stripped" ;;
        *stripped*) STRIPPED="stripped" ;;
    esac
fi

# ---- (b) start-to-first-answer ------------------------------------------------------------------
COLD=()
for i in $(seq "$RUNS"); do
    dir="$WORK/cold-$i"
    port="$(write_config "$dir")"
    start_server "$dir" "$port"
    log "cold start $i: $START_MS ms"
    COLD+=("$START_MS")
    stop_server
done
WARM=()
for i in $(seq "$RUNS"); do
    dir="$WORK/cold-1"
    port="$(write_config "$dir")"
    start_server "$dir" "$port"
    log "warm restart $i: $START_MS ms"
    WARM+=("$START_MS")
    stop_server
done

# ---- (c) RSS --------------------------------------------------------------------------------------
dir="$WORK/cold-1"
port="$(write_config "$dir")"
start_server "$dir" "$port"
sleep 1
RSS_IDLE="$(rss_kib "$SERVER_PID")"
log "idle RSS after start: $RSS_IDLE KiB; now $REQUESTS sequential key requests"
REQ_SECS="$(python3 - "http://127.0.0.1:$port/_matrix/key/v2/server" "$REQUESTS" <<'PY'
import sys, time, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
t0 = time.monotonic()
for i in range(n):
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read()
        if r.status != 200 or b"verify_keys" not in body:
            sys.exit("request %d: status %d" % (i, r.status))
print("%.2f" % (time.monotonic() - t0))
PY
)"
sleep 1
RSS_AFTER="$(rss_kib "$SERVER_PID")"
HWM="$(hwm_kib "$SERVER_PID")"
THREADS="$(awk '/^Threads:/ {print $2}' "/proc/$SERVER_PID/status")"
stop_server

# ---- report ---------------------------------------------------------------------------------------
CPU="$(lscpu 2>/dev/null | awk -F: '/^Model name/ {sub(/^[ \t]+/, "", $2); print $2; exit}')"
RUSTC="$(rustc --version 2>/dev/null || echo unknown)"
kib_mib() { awk -v k="$1" 'BEGIN { printf "%d KiB (%.1f MiB)", k, k / 1024 }'; }

cat <<EOF

## invited footprint

Machine: $(nproc) cores ($(nproc --all) online), ${CPU:-unknown CPU}, $(uname -sr); ${RUSTC}.
Release profile (lto, codegen-units = 1, strip). Server: default config (workers = default,
log level info to a file), server_name footprint.test, 127.0.0.1, plain HTTP.

| measure | value |
|---|---|
| release binary ($STRIPPED) | $SIZE bytes ($(awk -v b="$SIZE" 'BEGIN { printf "%.2f MiB", b / 1048576 }')) |
| start → first 200, fresh data dir (key generation + DB creation), median of $RUNS | $(stats "${COLD[@]}") |
| start → first 200, warm restart (existing key + DB), median of $RUNS | $(stats "${WARM[@]}") |
| idle RSS 1 s after start (VmRSS) | $(kib_mib "$RSS_IDLE") |
| RSS 1 s after $REQUESTS sequential key requests (VmRSS) | $(kib_mib "$RSS_AFTER") |
| peak RSS (VmHWM) | $(kib_mib "$HWM") |
| $REQUESTS sequential key requests (new connection each, python urllib) | ${REQ_SECS} s ($(awk -v n="$REQUESTS" -v s="$REQ_SECS" 'BEGIN { printf "%.0f", n / s }') req/s) |
| server threads | $THREADS |

Runs (ms): cold ${COLD[*]}; warm ${WARM[*]}.
EOF
