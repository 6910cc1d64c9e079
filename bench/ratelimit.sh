#!/usr/bin/env bash
# The rate limiter's cost on the hot path: manifest GET by tag (wrk -t2
# -c32, Bearer token as docker sends it) against two nodes started alike,
# one with `[rate_limits] enabled = false`, one with limits on and scaled
# out of reach (every request still takes from two buckets), alternated
# RUNS times in one run. Target: on >= 0.95x off.
# With BASE_WHARF=path/to/another/wharf, a third node runs that binary with
# limits off, alternated with the others: what this build's hot path costs
# against it (usage metering counts every request, limits on or off).
# Usage: bench/ratelimit.sh   (WHARF=path/to/wharf; default target/release/wharf)
# Writes bench/results/<date>-ratelimit.md (or $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work-ratelimit
WHARF=${WHARF:-$ROOT/target/release/wharf}
RUNS=${RUNS:-3}
WRK_SECONDS=${WRK_SECONDS:-10}
[ -x "$WHARF" ] || { echo "build first: make release" >&2; exit 1; }
for t in wrk curl; do command -v $t >/dev/null || { echo "missing $t: make deps-bench" >&2; exit 1; }; done
. bench/lib.sh
fresh_work "$WORK"
printf '[rate_limits]\nenabled = false\n' >"$WORK/off.toml"
printf '[rate_limits]\nenabled = true\nscale = 1000.0\n' >"$WORK/on.toml"
declare -A PORT=([off]=7401 [on]=7402 [base]=7403)
declare -A BIN=([off]=$WHARF [on]=$WHARF [base]=${BASE_WHARF:-})
MODES="off on"
if [ -n "${BASE_WHARF:-}" ]; then
  MODES="base off on"
  cp "$WORK/off.toml" "$WORK/base.toml"
fi
for mode in $MODES; do
  WHARF_BOOTSTRAP_PASSWORD=$PW "${BIN[$mode]}" serve --config "$WORK/$mode.toml" --data-dir "$WORK/$mode" \
    --http-listen 127.0.0.1:${PORT[$mode]} --grpc-listen 127.0.0.1:$((PORT[$mode] + 100)) >"$WORK/$mode.log" 2>&1 &
  PIDS+=($!)
done
printf '{"architecture":"amd64","os":"linux"}' >"$WORK/config.json"
CFG=sha256:$(sha256sum "$WORK/config.json" | cut -c1-64)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}' \
  "$CFG" "$(stat -c %s "$WORK/config.json")" >"$WORK/manifest.json"
declare -A TOKEN
for mode in $MODES; do
  base=http://127.0.0.1:${PORT[$mode]}
  wait_http "$base/readyz"
  curl -sSf -u "owner:$PW" -o /dev/null -X POST -H 'Content-Type: application/octet-stream' \
    --data-binary @"$WORK/config.json" "$base/v2/bench/app/blobs/uploads/?digest=$CFG"
  curl -sSf -u "owner:$PW" -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary @"$WORK/manifest.json" "$base/v2/bench/app/manifests/v1"
  TOKEN[$mode]=$(curl -sS -u "owner:$PW" "$base/auth/token?service=wharf&scope=repository:bench/app:pull" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
done
declare -A ALL
ROWS=()
for run in $(seq 1 "$RUNS"); do
  for mode in $MODES; do
    out=$(wrk -t2 -c32 -d${WRK_SECONDS}s --latency -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      -H "Authorization: Bearer ${TOKEN[$mode]}" "http://127.0.0.1:${PORT[$mode]}/v2/bench/app/manifests/v1")
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    p99=$(echo "$out" | awk '$1=="99%"{print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}')
    ALL[$mode]="${ALL[$mode]:-} $rps"
    ROWS+=("| $run | $mode | $rps | $p99 | ${non2xx:-0} |")
    echo "run $run $mode: $rps req/s p99 $p99 non-2xx ${non2xx:-0}" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
OFF=$(echo "${ALL[off]}" | median); ON=$(echo "${ALL[on]}" | median)
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
OUT=${OUT:-$ROOT/bench/results/$(date +%F)-ratelimit.md}
{
  echo "# Rate limiter cost — $(date +%F)"
  echo
  echo "Command: \`bench/ratelimit.sh\` (RUNS=$RUNS, WRK_SECONDS=$WRK_SECONDS${BASE_WHARF:+, BASE_WHARF=$BASE_WHARF}, release build). Machine: $CPU, $(nproc) cores, $(grep -o -m1 sha_ni /proc/cpuinfo || echo no-sha_ni)."
  echo "Manifest GET by tag, wrk -t2 -c32, Bearer token; two nodes alike but for \`[rate_limits]\`; runs alternate."
  echo
  echo "| run | limits | req/s | p99 | non-2xx |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Median req/s: off $OFF, on $ON: on / off = $(awk -v a="$ON" -v b="$OFF" 'BEGIN{printf "%.3f", a/b}') (target >= 0.95)."
  if [ -n "${BASE_WHARF:-}" ]; then
    BASE=$(echo "${ALL[base]}" | median)
    echo
    echo "Against \`$BASE_WHARF\` (limits off, \`base\` rows): median $BASE req/s; this build off / base = $(awk -v a="$OFF" -v b="$BASE" 'BEGIN{printf "%.3f", a/b}'), on / base = $(awk -v a="$ON" -v b="$BASE" 'BEGIN{printf "%.3f", a/b}')."
  fi
} >"$OUT"
cat "$OUT"
