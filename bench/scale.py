#!/usr/bin/env python3
"""Metadata at scale: fill a cluster with tags and measure, at each size,
what users and operators do against it.

Starts `wharf up --regions 3` (no emulated WAN: this measures the state,
not the links), then, for each target size in --sizes (tags in all;
TAGS_PER_REPO tags per repository, each tag its own manifest), pushes
until the cluster holds that many and records:
  - manifest GET by tag, random tags of the whole set (wrk -t2 -c32, a Lua
    script picking a tag per request): req/s, p50, p99;
  - tags/list of one repository (n=100), catalog first page (n=100):
    latency p50/p99 over 50 calls;
  - a page of `wharf repository list` (the API, n=1000 after a random
    repository): p50/p99; the whole `wharf repository list` (the CLI
    following every page) and `wharf replication list`: wall time;
  - the fill rate (tags/s) and the leader's RSS.
Reads are timed SETTLE_S (30 s) after each fill, so that a snapshot the
fill started is not measured instead of the state.
Writes bench/results/<date>-scale.md (or $OUT). WHARF= benches another binary.
Usage: bench/scale.py [--sizes 10000,100000] [--quick]
"""
import cluster as local_cluster
import report as report_file
import concurrent.futures, hashlib, http.client, json, os, random, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHARF = os.environ.get("WHARF") or os.path.join(ROOT, "target", "release", "wharf")
WORK = os.path.join(ROOT, "bench", "work-scale")
BASE = 7600
TAGS_PER_REPO = 10
PUSHERS = 16
SETTLE_S = 30
OCI = "application/vnd.oci.image.manifest.v1+json"
CFG = b'{"architecture":"amd64","os":"linux"}'
LAYER = b"scale benchmark layer\n"


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Conn:
    """One keep-alive HTTP connection per thread, as the owner."""

    def __init__(self, port, auth):
        self.port, self.auth = port, auth
        self.c = None

    def req(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        headers["Authorization"] = self.auth
        for attempt in range(3):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self.c.request(method, path, body=body, headers=headers)
                r = self.c.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.c = None
                if attempt == 2:
                    raise
                time.sleep(0.2)


local = threading.local()


def conn(port, auth):
    if getattr(local, "conn", None) is None:
        local.conn = Conn(port, auth)
    return local.conn


def manifest(repo, tag):
    # Each tag its own manifest: an annotation makes the digest unique.
    return json.dumps({"schemaVersion": 2, "mediaType": OCI,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(CFG), "size": len(CFG)},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(LAYER), "size": len(LAYER)}],
                       "annotations": {"bench": f"{repo}:{tag}"}}, separators=(",", ":")).encode()


def fill_repo(port, auth, r):
    c = conn(port, auth)
    repo = f"scale/r{r:06d}"
    for blob in (CFG, LAYER):
        code, body = c.req("POST", f"/v2/{repo}/blobs/uploads/?digest={sha(blob)}", blob,
                           {"Content-Type": "application/octet-stream"})
        assert code == 201, (code, body[:200])
    for t in range(TAGS_PER_REPO):
        code, body = c.req("PUT", f"/v2/{repo}/manifests/t{t}", manifest(repo, t), {"Content-Type": OCI})
        assert code == 201, (code, body[:200])


def timed(n, f):
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        xs.append((time.perf_counter() - t) * 1000)
    return pct(xs, 50), pct(xs, 99)


def rss_mb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def write(report):
    """The report so far (after every size: a long run keeps what it measured)."""
    report_file.write("scale", report_file.head(
        "Metadata at scale", f"bench/scale.py {' '.join(sys.argv[1:])}", f"; binary: {WHARF}",
        "the three nodes, wrk and this script share it",
        f"cluster: `wharf up --regions 3` (no emulated WAN), rate limits off; {TAGS_PER_REPO} tags per repository, each its own manifest (one shared config and layer); {PUSHERS} pushing threads to the leader; reads through node 1 (a follower or the leader)") + report)


def main():
    sizes = [10_000, 100_000]
    if "--quick" in sys.argv:
        sizes = [1_000, 5_000]
    if "--sizes" in sys.argv:
        sizes = [int(x) for x in sys.argv[sys.argv.index("--sizes") + 1].split(",")]
    # A million tags take gigabytes per node: say what each holds at the end.
    up = local_cluster.start(WHARF, WORK, os.path.join(WORK, "data"), BASE)
    report = []
    say = lambda s="": (report.append(s), print(s, file=sys.stderr))
    try:
        cluster, auth, leader = local_cluster.ready(up, WORK, os.path.join(WORK, "data"), BASE)
        cj = os.path.join(WORK, "data", "cluster.json")
        port = BASE + 1
        leader_port = BASE + leader
        leader_pid = next(n["pid"] for r in cluster["regions"] for n in r["nodes"] if n["id"] == leader)
        say(f"Pushes go to the leader (node {leader}); reads to node 1.")
        say()
        say("| tags | repositories | fill tags/s | manifest GET req/s | p50 | p99 | tags/list p50 / p99 | catalog page p50 / p99 | `repository list` page of 1,000 p50 / p99 | whole `repository list` | `replication list` | leader RSS |")
        say("|---|---|---|---|---|---|---|---|---|---|---|---|")
        lua = os.path.join(WORK, "tags.lua")
        env = dict(os.environ, WHARF_CREDENTIALS=cj, WHARF_ENDPOINT=f"http://127.0.0.1:{port}")
        repos = 0
        for size in sizes:
            want = size // TAGS_PER_REPO
            t = time.time()
            with concurrent.futures.ThreadPoolExecutor(PUSHERS) as pool:
                for f in concurrent.futures.as_completed([pool.submit(fill_repo, leader_port, auth, r) for r in range(repos, want)]):
                    f.result()
            fill_rate = (want - repos) * TAGS_PER_REPO / (time.time() - t)
            repos = want
            # Every node builds a snapshot each 100,000 entries (15 s and
            # 1.5 GB at a million tags): let one the fill started finish
            # before anything is timed.
            time.sleep(SETTLE_S)
            with open(lua, "w") as f:
                f.write(f'math.randomseed(os.time())\nrequest = function()\n'
                        f'  local path = string.format("/v2/scale/r%06d/manifests/t%d", math.random(0, {repos - 1}), math.random(0, {TAGS_PER_REPO - 1}))\n'
                        f'  return wrk.format("GET", path)\nend\n')
            out = subprocess.run(["wrk", "-t2", "-c32", "-d8s", "--latency", "-s", lua, "-H", f"Authorization: {auth}",
                                  "-H", f"Accept: {OCI}", f"http://127.0.0.1:{port}"], capture_output=True, text=True).stdout
            with open(os.path.join(WORK, f"wrk-{size}.txt"), "w") as f:
                f.write(out)
            rps = next((l.split()[1] for l in out.splitlines() if l.startswith("Requests/sec")), "?")
            p50 = next((l.split()[1] for l in out.splitlines() if l.strip().startswith("50%")), "?")
            p99 = next((l.split()[1] for l in out.splitlines() if l.strip().startswith("99%")), "?")
            non2xx = next((l for l in out.splitlines() if "Non-2xx" in l), "")
            assert not non2xx, non2xx
            c = Conn(port, auth)
            tl = timed(50, lambda: c.req("GET", f"/v2/scale/r{random.randrange(repos):06d}/tags/list?n=100"))
            cat = timed(50, lambda: c.req("GET", "/v2/_catalog?n=100"))
            rpage = timed(20, lambda: c.req("GET", f"/api/v1/repositories?n=1000&last=scale/r{random.randrange(repos):06d}"))
            t = time.time()
            subprocess.run([WHARF, "repository", "list", "-o", "json"], env=env, capture_output=True, check=True)
            rl = time.time() - t
            t = time.time()
            subprocess.run([WHARF, "replication", "list", "-o", "json"], env=env, capture_output=True, check=True)
            repl = time.time() - t
            say(f"| {size:,} | {repos:,} | {fill_rate:,.0f} | {float(rps):,.0f} | {p50} | {p99} | {tl[0]:.1f} / {tl[1]:.1f} ms | {cat[0]:.1f} / {cat[1]:.1f} ms | {rpage[0]:.1f} / {rpage[1]:.1f} ms | {rl:.2f} s | {repl:.2f} s | {rss_mb(leader_pid):.0f} MB |")
            write(report)
        for node in ("node-1",):
            d = os.path.join(WORK, "data", node, "data")
            sizes_mb = {part: sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(d, part)) for f in fs) / 2**20
                        for part in ("meta", "raft-log", "snapshots", "blobs")}
            wal = sum(os.path.getsize(os.path.join(d, "meta", f)) for f in os.listdir(os.path.join(d, "meta")) if f.endswith(".log")) / 2**20
            say()
            say(f"Disk of {node} at the end: " + ", ".join(f"{k} {v:,.0f} MiB" for k, v in sizes_mb.items()) + f" (of meta, write-ahead logs {wal:,.0f} MiB)")
    finally:
        local_cluster.stop(up)
    write(report)


if __name__ == "__main__":
    main()
