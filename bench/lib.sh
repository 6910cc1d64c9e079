# Shared by the shell benchmarks (sourced, not run): a fresh work
# directory, servers started in the background and stopped on exit, and
# waiting for one to answer.
#   fresh_work DIR     empty DIR, and stop every pid in PIDS when the script exits
#   wait_http URL [S]  wait up to S seconds (20) for URL to answer 2xx
# The bootstrap owner every benchmark logs in as (other registries ignore
# the credentials, so every server gets the same requests).
PW=bench-owner-password
AUTH=(-u "owner:$PW")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
fresh_work() { rm -rf "$1"; mkdir -p "$1"; trap cleanup EXIT; }
wait_http() {
  local tries=$(( ${2:-20} * 10 ))
  for _ in $(seq 1 "$tries"); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not up: $1" >&2; exit 1
}
# ab_nodes THIS_PORT BASE_PORT: two nodes in $WORK for an A/B run, "this"
# running $WHARF (its config gets $EXTRA_TOML too) and "base" running
# $BASE_WHARF, rate limits off, logged in as owner with $PW; fills PORT and
# PID (associative arrays the caller declares) and waits for both.
ab_nodes() {
  [ -x "$WHARF" ] || { echo "build first: make release" >&2; exit 1; }
  [ -x "${BASE_WHARF:-}" ] || { echo "set BASE_WHARF to the binary to compare with" >&2; exit 1; }
  PORT[this]=$1; PORT[base]=$2
  printf '[rate_limits]\nenabled = false\n' >"$WORK/base.toml"
  printf '[rate_limits]\nenabled = false\n%s\n' "${EXTRA_TOML:-}" >"$WORK/this.toml"
  local n bin
  for n in this base; do
    bin=$WHARF; [ "$n" = base ] && bin=$BASE_WHARF
    WHARF_BOOTSTRAP_PASSWORD=$PW "$bin" serve --config "$WORK/$n.toml" --data-dir "$WORK/$n" \
      --http-listen "127.0.0.1:${PORT[$n]}" --grpc-listen "127.0.0.1:$((PORT[$n] + 100))" >"$WORK/$n.log" 2>&1 &
    PIDS+=($!); PID[$n]=$!
  done
  for n in this base; do wait_http "http://127.0.0.1:${PORT[$n]}/readyz"; done
}
