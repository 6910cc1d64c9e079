#!/usr/bin/env bash
# Instructions one manifest GET costs the node, counted by callgrind: the
# same binary, request and data give the same count whatever else the
# machine is doing, so a change to the hot path is measured to a fraction
# of a percent where wrk's req/s spreads ±10 % run to run on 2 cores.
# One node, auth on (a Bearer token from the token endpoint, as docker
# sends), rate limits off; REQUESTS GETs by tag over one keep-alive
# connection after a warm-up, counted with instrumentation on only then.
# Usage: bench/callgrind.sh [REQUESTS]   (default 2000; WHARF= another binary)
# Prints instructions per request and the top functions by self cost;
# writes bench/work-callgrind/callgrind.out for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work-callgrind
N=${1:-2000}
PORT=${PORT:-7111}
WHARF=${WHARF:-$ROOT/target/release/wharf}
[ -x "$WHARF" ] || { echo "build first: make release" >&2; exit 1; }
for t in valgrind callgrind_control callgrind_annotate curl; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install valgrind curl" >&2; exit 1; }
done
rm -rf "$WORK"; mkdir -p "$WORK"
PW=bench-owner-password
AUTH=(-u "owner:$PW")
BASE=http://127.0.0.1:$PORT
printf '[rate_limits]\nenabled = false\n' >"$WORK/wharf.toml"
WHARF_BOOTSTRAP_PASSWORD=$PW valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$WORK/callgrind.out" \
  "$WHARF" serve --config "$WORK/wharf.toml" --data-dir "$WORK/data" \
  --http-listen 127.0.0.1:$PORT --grpc-listen 127.0.0.1:$((PORT + 100)) \
  >"$WORK/wharf.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do curl -sf -o /dev/null "$BASE/readyz" && break; sleep 0.2; done
curl -sf -o /dev/null "$BASE/readyz" || { echo "node not ready; see $WORK/wharf.log" >&2; exit 1; }

# One image: a config blob, a layer blob, a manifest tagged v1.
push() { # file digest
  local loc
  loc=$(curl -sS "${AUTH[@]}" -o /dev/null -D - -X POST "$BASE/v2/bench/app/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
  case "$loc" in http*) ;; *) loc="$BASE$loc";; esac
  case "$loc" in *\?*) loc="$loc&digest=$2";; *) loc="$loc?digest=$2";; esac
  curl -sSf "${AUTH[@]}" -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$1" "$loc"
}
printf '{"architecture":"amd64","os":"linux"}' >"$WORK/config.json"
head -c 4096 /dev/urandom >"$WORK/layer"
CFG=sha256:$(sha256sum "$WORK/config.json" | cut -c1-64)
LAYER=sha256:$(sha256sum "$WORK/layer" | cut -c1-64)
push "$WORK/config.json" "$CFG"
push "$WORK/layer" "$LAYER"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":4096}]}' \
  "$CFG" "$(stat -c %s "$WORK/config.json")" "$LAYER" >"$WORK/manifest.json"
code=$(curl -sS "${AUTH[@]}" -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary @"$WORK/manifest.json" "$BASE/v2/bench/app/manifests/v1")
[ "$code" = 201 ] || { echo "manifest push answered $code" >&2; exit 1; }
TOKEN=$(curl -sS "${AUTH[@]}" "$BASE/auth/token?service=wharf&scope=repository:bench/app:pull" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

# curl reuses one connection for every URL of one invocation.
gets() { # count
  local cfg=$WORK/curl-$1.cfg
  : >"$cfg"
  for _ in $(seq 1 "$1"); do printf 'url = "%s/v2/bench/app/manifests/v1"\noutput = "/dev/null"\n' "$BASE" >>"$cfg"; done
  curl -sS -K "$cfg" -H 'Accept: application/vnd.oci.image.manifest.v1+json' -H "Authorization: Bearer $TOKEN" \
    -w '%{http_code}\n' | sort | uniq -c >"$WORK/codes-$1.txt"
  grep -qv ' 200$' "$WORK/codes-$1.txt" && { echo "non-200 answers: $(cat "$WORK/codes-$1.txt")" >&2; exit 1; } || true
}
gets 200
callgrind_control -i on "$PID" >/dev/null 2>&1
gets "$N"
callgrind_control -i off "$PID" >/dev/null 2>&1
callgrind_control -d "$PID" >/dev/null 2>&1
sleep 1
OUTFILE=$(ls -t "$WORK"/callgrind.out* | head -1)
callgrind_annotate --threshold=90 "$OUTFILE" >"$WORK/annotate.txt" 2>/dev/null
TOTAL=$(awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1; exit}' "$WORK/annotate.txt")
[ -n "$TOTAL" ] || { echo "no totals in $OUTFILE" >&2; exit 1; }
echo "binary: $WHARF"
echo "requests: $N; instructions: $TOTAL; per request: $((TOTAL / N))"
# RocksDB formats its statistics into its LOG every 10 minutes of wall
# clock; a window that includes it counts ~7 k more per request. Say so,
# with the count without it, so two runs compare like with like.
DUMP=$(callgrind_annotate --inclusive=yes --threshold=100 "$OUTFILE" 2>/dev/null \
  | awk 'index($0, "rocksdb::DBImpl::DumpStats()") && !n {gsub(",","",$1); print $1; n=1}')
if [ -n "$DUMP" ]; then
  echo "this window included RocksDB's periodic stats dump ($DUMP instructions):" \
    "per request without it: $(((TOTAL - DUMP) / N))"
fi
echo
sed -n '/file:function/,$p' "$WORK/annotate.txt" | head -40
