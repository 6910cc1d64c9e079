#!/usr/bin/env python3
"""Garbage-collection benchmark on one node (region us-east).

  1. N unreferenced blobs (default 100,000, tiny: GC's cost is per blob,
     not per byte) are uploaded into 100 repositories, next to a few images
     that stay referenced; then
  2. manifest push latency idle (M pushes), then
  3. `wharf gc run` (all registries) while M more pushes run: the run's
     decision time (wall time minus the hold), push p50/p99 during GC, and
  4. the sweeper's rate: files deleted per second until nothing is pending.
Writes bench/results/<date>-gc.md. Usage: bench/gc.py [--quick]
(WHARF=path/to/wharf to pick a binary; default target/release/wharf).
"""
import base64, concurrent.futures, datetime, hashlib, http.client, json, os, shutil, signal
import statistics, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHARF = os.environ.get("WHARF", os.path.join(ROOT, "target", "release", "wharf"))
WORK = os.path.join(ROOT, "bench", "work-gc")
QUICK = "--quick" in sys.argv
BLOBS = int(os.environ.get("BLOBS", 5_000 if QUICK else 100_000))
PUSHES = 50 if QUICK else 200
# Idle pushes: enough that their p99 is not one or two samples.
IDLE_PUSHES = 100 if QUICK else 1000
# GC's share of the time (gc.share_pct); empty: the node's default.
SHARE = os.environ.get("GC_SHARE_PCT", "")
REPOS = 100
PORT = 7501
PW = "bench-owner-password"
AUTH = "Basic " + base64.b64encode(f"owner:{PW}".encode()).decode()
OCI = "application/vnd.oci.image.manifest.v1+json"
local = threading.local()


def conn():
    if not hasattr(local, "c"):
        local.c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    return local.c


def req(method, path, body=None, headers=None):
    h = {"Authorization": AUTH, **(headers or {})}
    for attempt in range(2):
        try:
            c = conn()
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, r.read()
        except (http.client.HTTPException, OSError):
            local.__dict__.pop("c", None)
            if attempt:
                raise


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def upload(repo, data):
    d = digest(data)
    code, body = req("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", data)
    assert code == 201, (code, body[:200])
    return d


def push_image(repo, tag, seq):
    config = json.dumps({"architecture": "amd64", "os": "linux", "seq": seq}).encode()
    cd = upload(repo, config)
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": cd, "size": len(config)}, "layers": []}).encode()
    t0 = time.perf_counter()
    code, body = req("PUT", f"/v2/{repo}/manifests/{tag}", m, {"Content-Type": OCI})
    dt = time.perf_counter() - t0
    assert code == 201, (code, body[:200])
    return dt


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def gc_status():
    code, body = req("GET", "/api/v1/gc")
    assert code == 200, body
    return json.loads(body)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    cfg = os.path.join(WORK, "wharf.toml")
    with open(cfg, "w") as f:
        f.write(f'data_dir = "{WORK}/data"\nhttp_listen = "127.0.0.1:{PORT}"\n'
                f'grpc_listen = "127.0.0.1:{PORT + 100}"\n'
                "[rate_limits]\nenabled = false\n"
                "[gc]\ngrace_s = 1\nhold_s = 1\ninterval_s = 0\nsweep_interval_s = 1\n"
                + (f"share_pct = {SHARE}\n" if SHARE else ""))
    log = open(os.path.join(WORK, "wharf.log"), "w")
    node = subprocess.Popen([WHARF, "serve", "--config", cfg], stdout=log, stderr=log,
                            env={**os.environ, "WHARF_BOOTSTRAP_PASSWORD": PW})
    try:
        for _ in range(300):
            try:
                if req("GET", "/v2/")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda i: upload(f"garbage/r{i % REPOS}", f"unreferenced blob {i}".encode()),
                        range(BLOBS)))
        upload_s = time.perf_counter() - t0
        # The registrar links uploads alone after its grace; wait for it.
        time.sleep(3)
        idle = [push_image("bench/app", f"idle{i}", i) for i in range(IDLE_PUSHES)]
        time.sleep(1.5)  # past the grace
        result = {}

        def collect():
            t = time.perf_counter()
            out = subprocess.run([WHARF, "gc", "run", "-o", "json", "--endpoint",
                                  f"http://127.0.0.1:{PORT}"], capture_output=True, text=True,
                                 env={**os.environ, "WHARF_USERNAME": "owner", "WHARF_PASSWORD": PW})
            result["wall_s"] = time.perf_counter() - t
            result["report"] = json.loads(out.stdout) if out.returncode == 0 else out.stderr
            result["done_at"] = time.perf_counter()

        runner = threading.Thread(target=collect)
        gc_start = time.perf_counter()
        runner.start()
        during = []
        i = 0
        while runner.is_alive() or i < PUSHES:
            during.append(push_image("bench/app", f"gc{i}", 10_000 + i))
            i += 1
        runner.join()
        report = result["report"]
        assert isinstance(report, dict), report
        freed = report["blobs_freed"]
        sweep_start = result["done_at"]
        # The sweeper deletes files while pushes go on: measure them too.
        sweeping = []
        while True:
            s = gc_status()
            pending = sum(r["sweeps_pending"] for r in s["regions"])
            if pending == 0:
                break
            for _ in range(5):
                sweeping.append(push_image("bench/app", f"sw{i}", 10_000 + i))
                i += 1
            time.sleep(0.1)
        sweep_s = time.perf_counter() - sweep_start
        deleted = sum(r["files_deleted"] for r in s["regions"])
        left = sum(len(files) for _, _, files in os.walk(os.path.join(WORK, "data", "blobs", "blobs")))
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=30)
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo; nproc; grep -o -m1 sha_ni /proc/cpuinfo || echo no-sha_ni"],
                         capture_output=True, text=True).stdout.split("\n")
    ms = lambda x: f"{x * 1000:.1f}"
    lines = [
        f"# Garbage collection, one node — {datetime.date.today()}",
        "",
        f"Command: `{'GC_SHARE_PCT=' + SHARE + ' ' if SHARE else ''}bench/gc.py{' --quick' if QUICK else ''}` (BLOBS={BLOBS}). Machine: {cpu[0].split(':')[-1].strip()}, {cpu[1]} cores, {cpu[2]}.",
        f"gc: grace 1 s, hold 1 s, share_pct {SHARE or 'default'}; the run collects every registry.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| unreferenced blobs uploaded (8 clients) | {BLOBS} in {upload_s:.1f} s |",
        f"| `wharf gc run` wall time | {result['wall_s']:.2f} s (of which the hold: 1 s) |",
        f"| decision time (wall minus hold) | {result['wall_s'] - 1:.2f} s, {BLOBS / max(result['wall_s'] - 1, 1e-9):,.0f} blobs/s |",
        f"| links marked / removed, blobs freed | {report['links_marked']} / {report['links_removed']}, {freed} |",
        f"| sweep after the run: files deleted | {deleted} in {sweep_s:.2f} s ({deleted / max(sweep_s, 1e-9):,.0f} files/s) |",
        f"| blob files left in the store | {left} (the pushed images' configs: {IDLE_PUSHES + len(during) + len(sweeping)}) |",
        f"| manifest PUT idle, p50 / p99 ms ({len(idle)} pushes) | {ms(pct(idle, 50))} / {ms(pct(idle, 99))} |",
        f"| manifest PUT during GC, p50 / p99 ms ({len(during)} pushes) | {ms(pct(during, 50))} / {ms(pct(during, 99))} |",
        f"| p99 during / idle | {pct(during, 99) / pct(idle, 99):.2f}× (target ≤ 1.2×) |",
        f"| manifest PUT while the sweeper deletes, p50 / p99 ms ({len(sweeping)} pushes) | "
        + (f"{ms(pct(sweeping, 50))} / {ms(pct(sweeping, 99))}, {pct(sweeping, 99) / pct(idle, 99):.2f}× idle |" if sweeping else "— |"),
        "",
        "Raw push latencies (ms), idle: " + " ".join(ms(x) for x in idle),
        "",
        "During GC: " + " ".join(ms(x) for x in during),
        "",
        "While the sweeper deletes: " + " ".join(ms(x) for x in sweeping),
        "",
    ]
    out = os.environ.get("OUT", os.path.join(ROOT, "bench", "results", f"{datetime.date.today()}-gc.md"))
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines[:18]))
    print("written:", out)


if __name__ == "__main__":
    main()
