#!/usr/bin/env bash
# Manifest PUT latency, this build against another, alternated in one run:
# a node of each (rate limits off), then ROUNDS rounds of 50 manifest PUTs
# (distinct manifests, one new tag each, over one curl keep-alive
# connection) to each node in turn; prints p50/p90/p99 of every PUT per
# build. For changes on the write path (a proposal, an apply), where one
# node's PUT is about a millisecond.
# Usage: BASE_WHARF=path/to/other/wharf bench/put_ab.sh
#   (WHARF=path/to/wharf, default target/release/wharf; ROUNDS=6).
#   Writes bench/results/<date>-put-ab.md (or $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work-put-ab
WHARF=${WHARF:-$ROOT/target/release/wharf}
ROUNDS=${ROUNDS:-6}
. bench/lib.sh
fresh_work "$WORK"
declare -A PORT PID
ab_nodes 7801 7802
printf '{"architecture":"amd64","os":"linux"}' >"$WORK/config.json"
CD=sha256:$(sha256sum "$WORK/config.json" | cut -c1-64)
for n in this base; do
  base=http://127.0.0.1:${PORT[$n]}
  loc=$(curl -sS "${AUTH[@]}" -o /dev/null -D - -X POST "$base/v2/lat/app/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
  curl -sSf "${AUTH[@]}" -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' \
    --data-binary @"$WORK/config.json" "$base$loc?digest=$CD"
done
for r in $(seq 1 "$ROUNDS"); do
  for n in this base; do
    cfg=$WORK/curl-$n.cfg; : >"$cfg"
    for i in $(seq 1 50); do
      m=$WORK/m-$n-$i.json
      printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":37},"layers":[],"annotations":{"n":"%s-%s"}}' "$CD" "$r" "$i" >"$m"
      printf 'url = "http://127.0.0.1:%s/v2/lat/app/manifests/t%s-%s"\nupload-file = "%s"\nheader = "Content-Type: application/vnd.oci.image.manifest.v1+json"\nwrite-out = "%%{http_code} %%{time_total}\\n"\noutput = "/dev/null"\n' \
        "${PORT[$n]}" "$r" "$i" "$m" >>"$cfg"
    done
    curl -sS "${AUTH[@]}" -K "$cfg" >>"$WORK/lat-$n.txt"
  done
done
REPORT=("# Manifest PUT latency, this build against another, alternated — $(date -u +%Y-%m-%dT%H:%MZ)" ""
  "- command: \`BASE_WHARF=$BASE_WHARF bench/put_ab.sh\` (WHARF=$WHARF ROUNDS=$ROUNDS)"
  "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "- machine: $(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
  "" "| build | PUTs | answered 201 | p50 ms | p90 ms | p99 ms |" "|---|---|---|---|---|---|")
for n in this base; do
  f=$WORK/lat-$n.txt
  REPORT+=("$(sort -k2 -g "$f" | awk -v n="$n" '{ok+=($1=="201"); t[NR]=$2*1000} END{printf "| %s | %d | %d | %.2f | %.2f | %.2f |", n, NR, ok, t[int(NR*0.5)], t[int(NR*0.9)], t[int(NR*0.99)]}')")
done
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y-%m-%d)-put-ab.md}
printf '%s\n' "${REPORT[@]}" >"$OUT"
printf '%s\n' "${REPORT[@]}" >&2
echo "wrote $OUT" >&2
