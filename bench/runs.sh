#!/usr/bin/env bash
# Build task runs: queue-to-start latency and end-to-end time of a one-step
# `wharf run`, against running the same container with `docker run`
# directly; and of a one-line `wharf build` (with and without its push)
# against `docker build` of the same context; alternated in one session.
# Usage: RUNS=10 bench/runs.sh   (from the repository root, after make release)
# Writes bench/results/<date>-runs.md (or $OUT) with the raw numbers.
#
# One node with its task agent (tasks.agent = true); a busybox image
# pushed to it. Each round: `wharf run --cmd '$Registry/bench/busybox:v1
# echo hi' /dev/null` timed from the command's start to its exit, with the
# run's queued, started and ended times read back from /api/v1/runs; then
# `docker run --rm` of the same image from the engine's cache. The engine
# keeps the image after the first run, as it would on an agent. Then a
# Dockerfile `FROM` that image with one `RUN` (a build argument differing
# per round and per tool, so no build is a cache hit) built by `wharf
# build --no-push`, by `wharf build` (pushed), and by `docker build`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work-runs
RUNS=${RUNS:-10}
PORT=7401
WHARF=${WHARF:-$ROOT/target/release/wharf}
[ -x "$WHARF" ] || { echo "build first: make release" >&2; exit 1; }
for t in docker busybox curl python3; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
docker info >/dev/null 2>&1 || { echo "no Docker daemon" >&2; exit 1; }

. bench/lib.sh
fresh_work "$WORK"
printf '[rate_limits]\nenabled = false\n[tasks]\nagent = true\n' >"$WORK/wharf.toml"
WHARF_BOOTSTRAP_PASSWORD=$PW "$WHARF" serve --config "$WORK/wharf.toml" --data-dir "$WORK/data" \
  --http-listen 127.0.0.1:$PORT --grpc-listen 127.0.0.1:$((PORT + 100)) >"$WORK/wharf.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PORT/readyz"

IMAGE=127.0.0.1:$PORT/bench/busybox:v1
mkdir -p "$WORK/root/bin" "$WORK/docker"
cp "$(command -v busybox)" "$WORK/root/bin/busybox"
ln -s busybox "$WORK/root/bin/echo"
ln -s busybox "$WORK/root/bin/sh"
tar -C "$WORK/root" -cf "$WORK/root.tar" .
export DOCKER_CONFIG=$WORK/docker
docker import "$WORK/root.tar" "$IMAGE" >/dev/null
echo "$PW" | docker login 127.0.0.1:$PORT -u owner --password-stdin >/dev/null
docker push "$IMAGE" >/dev/null
export WHARF_USERNAME=owner WHARF_PASSWORD=$PW WHARF_ENDPOINT=http://127.0.0.1:$PORT

now_ms() { date +%s%3N; }
RAW=$WORK/raw.tsv
printf 'round\twharf_run_ms\tqueue_to_start_ms\trun_ms\tdocker_run_ms\twharf_build_nopush_ms\twharf_build_ms\tdocker_build_ms\n' >"$RAW"
CTX=$WORK/context
mkdir -p "$CTX"
printf 'FROM %s\nARG ROUND\nRUN echo "$ROUND" > /round\n' "$IMAGE" >"$CTX/Dockerfile"
for i in $(seq 1 "$RUNS"); do
  t0=$(now_ms)
  out=$("$WHARF" run --cmd "\$Registry/bench/busybox:v1 echo hi" /dev/null)
  t1=$(now_ms)
  id=$(sed -n 's/^Queued a run with ID: //p' <<<"$out")
  read -r queued started ended < <(curl -sf "${AUTH[@]}" "http://127.0.0.1:$PORT/api/v1/runs/$id" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["queued_ms"], r["started_ms"], r["ended_ms"])')
  t2=$(now_ms)
  docker run --rm "$IMAGE" echo hi >/dev/null
  t3=$(now_ms)
  "$WHARF" build --no-push --no-logs -t "bench/app:n$i" --build-arg "ROUND=n$i" "$CTX" >/dev/null 2>&1
  t4=$(now_ms)
  "$WHARF" build --no-logs -t "bench/app:w$i" --build-arg "ROUND=w$i" "$CTX" >/dev/null 2>&1
  t5=$(now_ms)
  DOCKER_BUILDKIT=0 docker build -q -t "bench/app:d$i" --build-arg "ROUND=d$i" "$CTX" >/dev/null
  t6=$(now_ms)
  docker rmi "bench/app:d$i" >/dev/null
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" $((t1 - t0)) $((started - queued)) $((ended - started)) $((t3 - t2)) \
    $((t4 - t3)) $((t5 - t4)) $((t6 - t5)) >>"$RAW"
done

OUT=${OUT:-bench/results/$(date -u +%F)-runs.md}
python3 - "$RAW" "$OUT" "$RUNS" <<'PY'
import statistics, subprocess, sys
raw, out, runs = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [l.rstrip("\n").split("\t") for l in open(raw)][1:]
cols = {k: [int(r[i]) for r in rows] for i, k in enumerate(
    ["round", "wharf", "queue_to_start", "run", "docker", "build_nopush", "build", "docker_build"])}
def p(xs, q):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][:1]
with open(out, "w") as f:
    f.write(f"# Build task runs: queue to start, `wharf run` against `docker run`, `wharf build` against `docker build`\n\n")
    f.write(f"- command: `RUNS={runs} bench/runs.sh`\n- commit: {commit}\n")
    f.write(f"- machine: {len([l for l in open('/proc/cpuinfo') if l.startswith('processor')])} cores, {cpu[0] if cpu else '?'}\n")
    f.write("- one node with its task agent; a busybox image in Wharf; each round a one-step `wharf run` "
            "(`echo hi`), then `docker run --rm` of the same image from the engine's cache\n\n")
    f.write("| figure | p50 ms | p99 ms | mean ms |\n|---|---|---|---|\n")
    for k, name in [("queue_to_start", "queued → started (the agent woken by the apply, the claim's commit)"),
                    ("run", "started → ended (the step: docker run, reports)"),
                    ("wharf", "`wharf run` end to end (queue, wait, log, result)"),
                    ("docker", "`docker run --rm` directly"),
                    ("build_nopush", "`wharf build --no-push` of a one-line Dockerfile (upload, queue, build, result)"),
                    ("build", "`wharf build` of it, pushed to Wharf"),
                    ("docker_build", "`docker build` of the same context directly (classic builder)")]:
        xs = cols[k]
        f.write(f"| {name} | {p(xs, .5)} | {p(xs, .99)} | {statistics.mean(xs):.0f} |\n")
    f.write(f"\n`wharf run` / `docker run`, medians: {p(cols['wharf'], .5) / max(1, p(cols['docker'], .5)):.2f}\n")
    f.write(f"`wharf build --no-push` / `docker build`, medians: {p(cols['build_nopush'], .5) / max(1, p(cols['docker_build'], .5)):.2f}\n")
    f.write(f"`wharf build` (pushed) / `docker build`, medians: {p(cols['build'], .5) / max(1, p(cols['docker_build'], .5)):.2f}\n\n")
    f.write("## Raw (ms)\n\n```\n" + open(raw).read() + "```\n")
print(open(out).read())
PY
