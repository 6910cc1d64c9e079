#!/usr/bin/env bash
# One binary against another on big blobs, alternated in one run: a node
# of each (rate limits off, a data dir each on the same disk), then ROUNDS
# times a monolithic push (POST, PUT with curl -T) to each in turn, and
# ROUNDS times a GET of the blob from each in turn. Prints wall seconds
# (curl) and server CPU-seconds (utime+stime from /proc around the
# request) per request, then the medians. Alternating is what makes two
# builds comparable on a machine whose disk and CPU vary run to run.
# Usage: BASE_WHARF=path/to/other/wharf bench/blob_ab.sh
#   (WHARF=path/to/wharf, default target/release/wharf; BLOB_MIB=1024;
#   ROUNDS=5; EXTRA_TOML=$'[uploads]\ndirect_io = true' adds config to
#   the first node only). Writes bench/results/<date>-blob-ab.md (or $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work-blob-ab
WHARF=${WHARF:-$ROOT/target/release/wharf}
BLOB_MIB=${BLOB_MIB:-1024}
ROUNDS=${ROUNDS:-5}
. bench/lib.sh
fresh_work "$WORK"
declare -A PORT PID
ab_nodes 7501 7502

echo "generating a $BLOB_MIB MiB blob" >&2
dd if=/dev/urandom of="$WORK/blob" bs=1M count="$BLOB_MIB" status=none
DIGEST=sha256:$(sha256sum "$WORK/blob" | cut -c1-64)
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
# Prints "wall cpu" of one request; $1 node, then curl's arguments.
timed() {
  local n=$1; shift
  local t0 wall t1
  t0=$(ticks "${PID[$n]}")
  wall=$(curl -sS "${AUTH[@]}" -o /dev/null -w '%{http_code} %{time_total}' "$@")
  t1=$(ticks "${PID[$n]}")
  case "$wall" in 20[01]\ *) ;; *) echo "request to $n answered ${wall%% *}" >&2; exit 1;; esac
  awk -v w="${wall#* }" -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN{printf "%.3f %.2f", w, t/hz}'
}
push() {
  local base=http://127.0.0.1:${PORT[$1]} loc
  loc=$(curl -sS "${AUTH[@]}" -o /dev/null -D - -X POST "$base/v2/ab/app/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
  case "$loc" in *\?*) loc="$loc&digest=$DIGEST";; *) loc="$loc?digest=$DIGEST";; esac
  timed "$1" -X PUT -H 'Content-Type: application/octet-stream' -T "$WORK/blob" "$base$loc"
}
get() { timed "$1" "http://127.0.0.1:${PORT[$1]}/v2/ab/app/blobs/$DIGEST"; }

REPORT=("# Blob push and GET, this build against another, alternated — $(date -u +%Y-%m-%dT%H:%MZ)" ""
  "- command: \`BASE_WHARF=$BASE_WHARF bench/blob_ab.sh\` (BLOB_MIB=$BLOB_MIB ROUNDS=$ROUNDS EXTRA_TOML='${EXTRA_TOML:-}')"
  "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "- machine: $(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), kernel $(uname -r), filesystem $(stat -f -c %T "$WORK")"
  "" "| round | push this (wall s, CPU s) | push base | GET this | GET base |" "|---|---|---|---|---|")
declare -A ALL
for r in $(seq 1 "$ROUNDS"); do
  pt=$(push this); pb=$(push base)
  [ "$r" = 1 ] && { get this >/dev/null; get base >/dev/null; } # sums, cache
  gt=$(get this); gb=$(get base)
  REPORT+=("| $r | $pt | $pb | $gt | $gb |"); echo "${REPORT[-1]}" >&2
  ALL[pt]+="$pt"$'\n'; ALL[pb]+="$pb"$'\n'; ALL[gt]+="$gt"$'\n'; ALL[gb]+="$gb"$'\n'
done
median() { sort -n -k"$2" <<<"${ALL[$1]}" | sed '/^$/d' | awk -v k="$2" '{a[NR]=$k} END{print a[int((NR+1)/2)]}'; }
REPORT+=("" "Medians (wall s / CPU s): push this $(median pt 1) / $(median pt 2), base $(median pb 1) / $(median pb 2); GET this $(median gt 1) / $(median gt 2), base $(median gb 1) / $(median gb 2).")
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y-%m-%d)-blob-ab.md}
printf '%s\n' "${REPORT[@]}" >"$OUT"
echo "wrote $OUT" >&2
