# Shared by the shell benchmarks (sourced, not run): a fresh work
# directory, servers started in the background and stopped on exit, and
# waiting for one to answer.
#   fresh_work DIR     empty DIR, and stop every pid in PIDS when the script exits
#   wait_http URL [S]  wait up to S seconds (20) for URL to answer 2xx
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
fresh_work() { rm -rf "$1"; mkdir -p "$1"; trap cleanup EXIT; }
wait_http() {
  local tries=$(( ${2:-20} * 10 ))
  for _ in $(seq 1 "$tries"); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not up: $1" >&2; exit 1
}
