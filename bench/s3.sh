#!/usr/bin/env bash
# Blob storage backends side by side: push (monolithic, curl) and pull of a
# SIZE_MIB blob through a single node on the filesystem, on S3 (a local
# SeaweedFS, started if none runs on :8333), and on S3 with
# `storage.redirect` (the pull follows the 307 to the store). Reports wall
# seconds and the node's CPU seconds (utime+stime from /proc) per phase, and
# SeaweedFS's CPU too: on one machine the store competes with the node, so
# compare CPU, and take wall times as this machine's only.
# Usage: bench/s3.sh   (WHARF=path/to/wharf; SIZE_MIB=1024; RUNS=3)
# Writes bench/results/<date>-s3.md (or $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work-s3
WHARF=${WHARF:-$ROOT/target/release/wharf}
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
S3=${S3:-http://127.0.0.1:8333}
WEED=${WEED:-$ROOT/.venv/bin/weed}
[ -x "$WHARF" ] || { echo "build first: make release" >&2; exit 1; }
. bench/lib.sh
fresh_work "$WORK"
if ! curl -s -o /dev/null -X PUT "$S3/wharf-probe"; then
  [ -x "$WEED" ] || { echo "no S3 server on $S3 and no $WEED: make deps-test" >&2; exit 1; }
  mkdir -p "$WORK/weed"
  # exec: the pid kept is the server's, so it stops with this script (a
  # server left running had its directory deleted by the next run).
  (cd "$WORK/weed" && exec "$WEED" mini -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 >"$WORK/weed.log" 2>&1) &
  PIDS+=($!)
  for _ in $(seq 1 360); do curl -s -o /dev/null -X PUT "$S3/wharf-probe" && break; sleep 0.25; done
fi
WEED_PID=$(pgrep -f "weed mini" | head -1)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # clock ticks
TICKS=$(getconf CLK_TCK)
printf 'access_key_id = "bench"\nsecret_access_key = "bench-secret"\n' >"$WORK/creds.toml"
declare -A PORT=([filesystem]=7501 [s3]=7502 [s3-redirect]=7503)
: >"$WORK/fs.toml"
for mode in s3 s3-redirect; do
  bucket=wharf-bench-$mode-$RANDOM
  curl -sf -o /dev/null -X PUT "$S3/$bucket"
  {
    printf '[storage]\nbackend = "s3"\nendpoint = "%s"\nbucket = "%s"\ncredentials_file = "%s"\n' "$S3" "$bucket" "$WORK/creds.toml"
    [ "$mode" = s3-redirect ] && printf 'redirect = true\n'
  } >"$WORK/$mode.toml"
done
cp "$WORK/fs.toml" "$WORK/filesystem.toml"
declare -A NODE
for mode in filesystem s3 s3-redirect; do
  WHARF_BOOTSTRAP_PASSWORD=$PW "$WHARF" serve --config "$WORK/$mode.toml" --data-dir "$WORK/$mode" \
    --http-listen 127.0.0.1:${PORT[$mode]} --grpc-listen 127.0.0.1:$((PORT[$mode] + 100)) >"$WORK/$mode.log" 2>&1 &
  NODE[$mode]=$!
  PIDS+=($!)
done
for mode in filesystem s3 s3-redirect; do wait_http "http://127.0.0.1:${PORT[$mode]}/readyz" 60; done
ROWS=()
for run in $(seq 1 "$RUNS"); do
  blob=$WORK/blob-$run
  dd if=/dev/urandom of="$blob" bs=1M count="$SIZE_MIB" status=none
  D=sha256:$(sha256sum "$blob" | cut -c1-64)
  for mode in filesystem s3 s3-redirect; do
    base=http://127.0.0.1:${PORT[$mode]}
    pid=${NODE[$mode]}
    c0=$(cpu "$pid"); w0=$(cpu "$WEED_PID"); t0=$(date +%s.%N)
    code=$(curl -sS -u "owner:$PW" -o /dev/null -w '%{http_code}' -X POST -T "$blob" \
      "$base/v2/bench/blob/blobs/uploads?digest=$D")
    t1=$(date +%s.%N); c1=$(cpu "$pid"); w1=$(cpu "$WEED_PID")
    [ "$code" = 201 ] || { echo "$mode push answered $code" >&2; exit 1; }
    got=$(curl -sS -L -u "owner:$PW" "$base/v2/bench/blob/blobs/$D" | sha256sum | cut -c1-64)
    t2=$(date +%s.%N); c2=$(cpu "$pid"); w2=$(cpu "$WEED_PID")
    [ "sha256:$got" = "$D" ] || { echo "$mode pull is not byte-exact" >&2; exit 1; }
    row=$(awk -v r="$run" -v m="$mode" -v a="$t0" -v b="$t1" -v c="$t2" -v n0="$c0" -v n1="$c1" -v n2="$c2" \
      -v s0="$w0" -v s1="$w1" -v s2="$w2" -v hz="$TICKS" \
      'BEGIN{printf "| %d | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |", r, m, b-a, (n1-n0)/hz, (s1-s0)/hz, c-b, (n2-n1)/hz, (s2-s1)/hz}')
    ROWS+=("$row")
    echo "$row" >&2
    curl -sS -u "owner:$PW" -o /dev/null -X DELETE "$base/v2/bench/blob/blobs/$D" || true
  done
  rm -f "$blob"
done
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
OUT=${OUT:-$ROOT/bench/results/$(date +%F)-s3.md}
{
  echo "# Blob storage: filesystem vs S3 — $(date +%F)"
  echo
  echo "Command: \`bench/s3.sh\` (SIZE_MIB=$SIZE_MIB, RUNS=$RUNS, release build). Machine: $CPU, $(nproc) cores, $(grep -o -m1 sha_ni /proc/cpuinfo || echo no-sha_ni); SeaweedFS $("$WEED" version 2>/dev/null | head -1 | awk '{print $2, $3}') on the same machine."
  echo "One node per backend, auth on; push: \`curl -T\` monolithic POST; pull: \`curl -L\` GET (s3-redirect follows the 307 to the store)."
  echo "CPU in seconds of utime+stime from /proc: the node's and SeaweedFS's during each phase."
  echo
  echo "| run | backend | push wall s | push node CPU s | push store CPU s | pull wall s | pull node CPU s | pull store CPU s |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} >"$OUT"
echo "wrote $OUT" >&2
