#!/usr/bin/env bash
# Single-node benchmarks: Wharf side by side with Debian's docker-registry
# (CNCF Distribution 2.8.2) and nginx serving the same bytes (the ceiling).
# Usage: bench/run.sh [--quick]   (from the repository root; `make bench`)
# Writes bench/results/<date>-single-node.md (or $OUT) with the raw numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work
BLOB_MIB=${BLOB_MIB:-1024}
RUNS=${RUNS:-3}
WRK_SECONDS=${WRK_SECONDS:-10}
[ "${1:-}" = "--quick" ] && { BLOB_MIB=128; RUNS=1; WRK_SECONDS=3; }
WHARF_PORT=7101 DIST_PORT=7102 NGINX_PORT=7103
WHARF=${WHARF:-$ROOT/target/release/wharf}
[ -x "$WHARF" ] || { echo "build first: make release" >&2; exit 1; }
for t in wrk docker-registry nginx curl openssl; do command -v $t >/dev/null || { echo "missing $t: make deps-bench" >&2; exit 1; }; done

. bench/lib.sh
fresh_work "$WORK"

# --- servers -----------------------------------------------------------------
# Wharf is private: the bench logs in as the bootstrap owner (lib.sh). Distribution
# and nginx ignore the credentials, so every server gets the same requests.
# Throughput, not throttling: the limiter's own cost is bench/ratelimit.sh's.
printf '[rate_limits]\nenabled = false\n' >"$WORK/wharf.toml"
WHARF_BOOTSTRAP_PASSWORD=$PW "$WHARF" serve --config "$WORK/wharf.toml" --data-dir "$WORK/wharf" --http-listen 127.0.0.1:$WHARF_PORT --grpc-listen 127.0.0.1:7201 \
  >"$WORK/wharf.log" 2>&1 & PIDS+=($!); WHARF_PID=$!
cat >"$WORK/dist.yml" <<YML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/dist}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$DIST_PORT}
YML
docker-registry serve "$WORK/dist.yml" >"$WORK/dist.log" 2>&1 & PIDS+=($!); DIST_PID=$!
mkdir -p "$WORK/nginx/root/v2/bench/app/manifests" "$WORK/nginx/root/blobs" "$WORK/nginx/tmp"
cat >"$WORK/nginx.conf" <<NGX
worker_processes 2;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on;
  client_body_temp_path $WORK/nginx/tmp; proxy_temp_path $WORK/nginx/tmp;
  fastcgi_temp_path $WORK/nginx/tmp; uwsgi_temp_path $WORK/nginx/tmp; scgi_temp_path $WORK/nginx/tmp;
  types { }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/nginx/root;
    location /v2/ { default_type application/vnd.oci.image.manifest.v1+json; }
  }
}
NGX
nginx -c "$WORK/nginx.conf" & PIDS+=($!); NGINX_PID=$!
wait_http http://127.0.0.1:$WHARF_PORT/readyz
wait_http http://127.0.0.1:$DIST_PORT/v2/
sleep 0.5

# --- content -----------------------------------------------------------------
echo "generating a $BLOB_MIB MiB blob" >&2
dd if=/dev/urandom of="$WORK/blob" bs=4M count=$((BLOB_MIB / 4)) status=none
BLOB_DIGEST=sha256:$(sha256sum "$WORK/blob" | cut -c1-64)
BLOB_SIZE=$(stat -c %s "$WORK/blob")
printf '{"architecture":"amd64","os":"linux"}' >"$WORK/config.json"
CFG_DIGEST=sha256:$(sha256sum "$WORK/config.json" | cut -c1-64)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
  "$CFG_DIGEST" "$(stat -c %s "$WORK/config.json")" "$BLOB_DIGEST" "$BLOB_SIZE" >"$WORK/manifest.json"
cp "$WORK/manifest.json" "$WORK/nginx/root/v2/bench/app/manifests/v1"
cp "$WORK/blob" "$WORK/nginx/root/blobs/blob"

# POST then PUT (the monolithic upload every registry supports). Prints wall seconds.
push() { # base repo file digest
  local loc
  loc=$(curl -sS "${AUTH[@]}" -o /dev/null -D - -X POST "$1/v2/$2/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
  case "$loc" in http*) ;; *) loc="$1$loc";; esac
  case "$loc" in *\?*) loc="$loc&digest=$4";; *) loc="$loc?digest=$4";; esac
  curl -sS "${AUTH[@]}" -o /dev/null -w '%{http_code} %{time_total}\n' -X PUT -H 'Content-Type: application/octet-stream' -T "$3" "$loc"
}
cpu_ticks() { # total utime+stime of a process and its threads/children
  local t=0
  for p in $(pgrep -g "$(ps -o pgid= "$1" | tr -d ' ')" 2>/dev/null || echo "$1"); do
    [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat)))
  done
  echo $t
}
HZ=$(getconf CLK_TCK)
secs() { awk -v t="$1" -v hz="$HZ" 'BEGIN{printf "%.2f", t/hz}'; }

for base in http://127.0.0.1:$WHARF_PORT http://127.0.0.1:$DIST_PORT; do
  push "$base" bench/app "$WORK/config.json" "$CFG_DIGEST" >/dev/null
  push "$base" bench/app "$WORK/blob" "$BLOB_DIGEST" >/dev/null
  code=$(curl -sS "${AUTH[@]}" -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary @"$WORK/manifest.json" "$base/v2/bench/app/manifests/v1")
  [ "$code" = 201 ] || { echo "manifest push to $base answered $code" >&2; exit 1; }
done

TOKEN=$(curl -sS "${AUTH[@]}" "http://127.0.0.1:$WHARF_PORT/auth/token?service=wharf&scope=repository:bench/app:pull" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

REPORT=()
say() { REPORT+=("$*"); echo "$*" >&2; }

# --- 1. manifest GET by tag ----------------------------------------------------
say "## Manifest GET by tag (wrk -t2 -c32 -d${WRK_SECONDS}s)"
say ""
say "| server | req/s | p50 | p99 | raw |"
say "|---|---|---|---|---|"
declare -A RPS P99
for name in wharf distribution nginx; do
  case $name in wharf) port=$WHARF_PORT;; distribution) port=$DIST_PORT;; nginx) port=$NGINX_PORT;; esac
  # As docker does: a Bearer token from the token endpoint on every request.
  out=$(wrk -t2 -c32 -d${WRK_SECONDS}s --latency -H 'Accept: application/vnd.oci.image.manifest.v1+json' -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$port/v2/bench/app/manifests/v1")
  echo "$out" >"$WORK/wrk-$name.txt"
  RPS[$name]=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  P99[$name]=$(echo "$out" | awk '$1=="99%"{print $2}')
  p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}')
  say "| $name | ${RPS[$name]} | $p50 | ${P99[$name]} | non-2xx: ${non2xx:-0} |"
done
say ""
say "Wharf / nginx req/s: $(awk -v a=${RPS[wharf]} -v b=${RPS[nginx]} 'BEGIN{printf "%.2f", a/b}') (target >= 0.5); Wharf p99 ${P99[wharf]} (target < 5 ms); Wharf / Distribution: $(awk -v a=${RPS[wharf]} -v b=${RPS[distribution]} 'BEGIN{printf "%.1f", a/b}')x"
say ""

# --- 2. blob GET: server CPU per GiB ------------------------------------------------
say "## ${BLOB_MIB} MiB blob GET: server CPU seconds (median of $RUNS)"
say ""
say "| server | CPU s | CPU s per GiB | wall s (median) |"
say "|---|---|---|---|"
declare -A GETCPU
for name in wharf distribution nginx; do
  case $name in
    wharf) url=http://127.0.0.1:$WHARF_PORT/v2/bench/app/blobs/$BLOB_DIGEST; pid=$WHARF_PID;;
    distribution) url=http://127.0.0.1:$DIST_PORT/v2/bench/app/blobs/$BLOB_DIGEST; pid=$DIST_PID;;
    nginx) url=http://127.0.0.1:$NGINX_PORT/blobs/blob; pid=$NGINX_PID;;
  esac
  cpus=(); walls=()
  for _ in $(seq 1 $RUNS); do
    before=$(cpu_ticks $pid)
    wall=$(curl -sS "${AUTH[@]}" -L -o /dev/null -w '%{time_total}' "$url")
    after=$(cpu_ticks $pid)
    cpus+=($((after - before))); walls+=("$wall")
  done
  med=$(printf '%s\n' "${cpus[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  wmed=$(printf '%s\n' "${walls[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  GETCPU[$name]=$(awk -v t=$med -v hz=$HZ -v mib=$BLOB_MIB 'BEGIN{printf "%.3f", t/hz*1024/mib}')
  say "| $name | $(secs $med) | ${GETCPU[$name]} | $wmed |"
done
say ""
say "Wharf / nginx CPU per GiB: $(awk -v a=${GETCPU[wharf]} -v b=${GETCPU[nginx]} 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "n/a (nginx below clock resolution)"}') (target <= 1.2)"
say ""

# --- 3. monolithic push with fsync --------------------------------------------------
say "## ${BLOB_MIB} MiB monolithic blob push (POST then PUT), median of $RUNS"
say ""
say "| what | wall s | server CPU s |"
say "|---|---|---|"
walls=()
for i in $(seq 1 $RUNS); do
  rm -f "$WORK/dd.out"; sync
  s=$(date +%s.%N); dd if="$WORK/blob" of="$WORK/dd.out" bs=4M conv=fsync status=none; e=$(date +%s.%N)
  walls+=($(awk -v s=$s -v e=$e 'BEGIN{printf "%.3f", e-s}'))
done
DD=$(printf '%s\n' "${walls[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
rm -f "$WORK/dd.out"
s=$(date +%s.%N); openssl dgst -sha256 "$WORK/blob" >/dev/null; e=$(date +%s.%N)
SSL=$(awk -v s=$s -v e=$e 'BEGIN{printf "%.3f", e-s}')
say "| dd conv=fsync | $DD | - |"
say "| openssl sha256 | $SSL | - |"
declare -A PUSHWALL PUSHCPU
for name in wharf distribution; do
  case $name in wharf) base=http://127.0.0.1:$WHARF_PORT; pid=$WHARF_PID;; distribution) base=http://127.0.0.1:$DIST_PORT; pid=$DIST_PID;; esac
  walls=(); cpus=()
  for i in $(seq 1 $RUNS); do
    sync
    before=$(cpu_ticks $pid)
    read -r code wall < <(push "$base" "bench/push$i" "$WORK/blob" "$BLOB_DIGEST")
    after=$(cpu_ticks $pid)
    [ "$code" = 201 ] || { echo "push to $name answered $code" >&2; exit 1; }
    walls+=("$wall"); cpus+=($((after - before)))
  done
  PUSHWALL[$name]=$(printf '%s\n' "${walls[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  med=$(printf '%s\n' "${cpus[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  PUSHCPU[$name]=$(awk -v t=$med -v hz=$HZ -v mib=$BLOB_MIB 'BEGIN{printf "%.2f", t/hz*1024/mib}')
  say "| $name | ${PUSHWALL[$name]} | $(secs $med) |"
done
say ""
say "Wharf wall / dd: $(awk -v a=${PUSHWALL[wharf]} -v b=$DD 'BEGIN{printf "%.2f", a/b}') (target <= 1.15); Wharf server CPU per GiB: ${PUSHCPU[wharf]} s (target <= 1.5); Distribution wall / dd: $(awk -v a=${PUSHWALL[distribution]} -v b=$DD 'BEGIN{printf "%.2f", a/b}') (Distribution does not fsync blobs)"

# --- report ----------------------------------------------------------------------
mkdir -p bench/results
OUT=${OUT:-bench/results/$(date -u +%Y-%m-%d)-single-node.md}
{
  echo "# Single-node benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- command: \`bench/run.sh $*\` (BLOB_MIB=$BLOB_MIB RUNS=$RUNS WRK_SECONDS=$WRK_SECONDS)"
  echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
  echo "- machine: $(nproc) cores, $(awk -F: '/model name/{print $2; exit}' /proc/cpuinfo | xargs), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), filesystem $(df -T "$WORK" | awk 'NR==2{print $2}')"
  echo "- servers: wharf (release build, one node), docker-registry $(docker-registry --version 2>/dev/null | awk '{print $3}'), nginx $(nginx -v 2>&1 | cut -d/ -f2) with sendfile; client and servers share the machine"
  echo
  printf '%s\n' "${REPORT[@]}"
  echo
  echo "## Raw wrk output"
  for name in wharf distribution nginx; do echo; echo "### $name"; echo '```'; cat "$WORK/wrk-$name.txt"; echo '```'; done
} >"$OUT"
echo "wrote $OUT" >&2
