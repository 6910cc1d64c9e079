#!/usr/bin/env python3
"""The web console under load: how fast its pages are usable, what a page
view costs the server, and what an open console costs registry traffic.

Starts `wharf up --regions 3` (rate limits off), fills it with 1,000
repositories of 10 tags and one repository (`console/big`) of 10,000 tags
(each tag its own manifest), then drives headless Chromium through
chromedriver (plain WebDriver over HTTP, no client library) and records:
  - per page (repositories, the 10,000-tag repository, an image, the
    replication view): first contentful paint, and the time from navigation
    start until the page is usable (its rows are in the DOM), median and
    max of RUNS loads;
  - server CPU per page view: utime+stime of the serving node over
    VIEWS views of a page (every call the page makes, including the
    sizes and architectures it fetches for its visible rows), less the
    same node's CPU over the same time idle;
  - manifest GET req/s (wrk -t2 -c32 -d10s, as bench/run.sh) against the
    same node with no console open, then with a console open on the
    replication view (which refreshes itself every 2 s) while another tab
    reloads the repositories page every 2 s; alternated, two rounds each.
    Chromium runs on the same two cores, so its own CPU is part of the
    "with console" figure.
Writes bench/results/<date>-console.md (or $OUT). WHARF= benches another
binary. Usage: bench/console.py [--quick]
"""
import cluster as local_cluster
import report as report_file
import concurrent.futures, json, os, signal, socket, statistics, subprocess, sys, time
import urllib.request

from scale import conn, sha, CFG, LAYER, OCI  # the fill's blobs and HTTP client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHARF = os.environ.get("WHARF") or os.path.join(ROOT, "target", "release", "wharf")
WORK = os.path.join(ROOT, "bench", "work-console")
BASE = 7700
QUICK = "--quick" in sys.argv
REPOS, TAGS_PER_REPO, BIG_TAGS = (100, 10, 1000) if QUICK else (1000, 10, 10_000)
RUNS = 3 if QUICK else 7
VIEWS = 5 if QUICK else 20
WRK_S = 3 if QUICK else 10
PUSHERS = 16


def manifest(repo, tag):
    return json.dumps({"schemaVersion": 2, "mediaType": OCI,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(CFG), "size": len(CFG)},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(LAYER), "size": len(LAYER)}],
                       "annotations": {"bench": f"{repo}:{tag}"}}, separators=(",", ":")).encode()


def push_tags(port, auth, repo, tags):
    c = conn(port, auth)
    for blob in (CFG, LAYER):
        code, body = c.req("POST", f"/v2/{repo}/blobs/uploads/?digest={sha(blob)}", blob,
                           {"Content-Type": "application/octet-stream"})
        assert code == 201, (code, body[:200])
    for t in tags:
        code, body = c.req("PUT", f"/v2/{repo}/manifests/t{t}", manifest(repo, t), {"Content-Type": OCI})
        assert code == 201, (code, body[:200])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Browser:
    """One WebDriver session with headless Chromium, 1280×800."""

    def __init__(self, driver):
        self.driver = driver
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"]}}}}
        self.sid = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        req = urllib.request.Request(self.driver + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read()).get("value")

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.sid}{path}", body)

    def go(self, url):
        self.s("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script, *args):
        return self.s("POST", "/execute/async", {"script": script, "args": list(args)})

    def close(self):
        self.s("DELETE", "")

    def login(self, base, user, password):
        """Sign in as the console's login page does (sets the cookie)."""
        self.go(base + "/console/login")
        status = self.js_async(
            "fetch('/console/api/login', {method: 'POST', headers: {'content-type': 'application/json'},"
            " body: JSON.stringify({username: arguments[0], password: arguments[1]})}).then(r => arguments[2](r.status))",
            user, password)
        assert status == 200, status


# Resolves with performance.now() (ms since navigation start) once `sel`
# matches and, if `done` is given, once `done` matches no more (the rows'
# sizes still loading), or -1 after 60 s.
WAIT = """
const [sel, done, cb] = arguments;
const t0 = Date.now();
(function poll() {
  const ok = document.querySelector(sel) && (!done || !document.querySelector(done));
  if (ok) return cb(performance.now());
  if (Date.now() - t0 > 60000) return cb(-1);
  setTimeout(poll, 5);
})();
"""
FCP = "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : -1;"


def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port, auth, path):
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{WRK_S}s", "--latency", "-H", f"Authorization: {auth}",
                          "-H", f"Accept: {OCI}", f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
    rps = float(next(l.split()[1] for l in out.splitlines() if l.startswith("Requests/sec")))
    p99 = next(l.split()[1] for l in out.splitlines() if l.strip().startswith("99%"))
    return rps, p99, out


def main():
    if not os.path.exists("/usr/bin/chromedriver"):
        sys.exit("needs chromium and chromium-driver: make deps-test")
    up = local_cluster.start(WHARF, WORK, os.path.join(WORK, "data"), BASE)
    driver = None
    report = []
    say = lambda s="": (report.append(s), print(s, file=sys.stderr))
    try:
        cluster, auth, leader = local_cluster.ready(up, WORK, os.path.join(WORK, "data"), BASE)
        cred = cluster["credentials"]
        port = BASE + 1
        node_pid = next(n["pid"] for r in cluster["regions"] for n in r["nodes"] if n["id"] == 1)
        t = time.time()
        with concurrent.futures.ThreadPoolExecutor(PUSHERS) as pool:
            jobs = [pool.submit(push_tags, BASE + leader, auth, f"bench/r{r:05d}", range(TAGS_PER_REPO)) for r in range(REPOS)]
            step = BIG_TAGS // PUSHERS
            jobs += [pool.submit(push_tags, BASE + leader, auth, "console/big", range(i, min(BIG_TAGS, i + step))) for i in range(0, BIG_TAGS, step)]
            for f in concurrent.futures.as_completed(jobs):
                f.result()
        fill_s = time.time() - t
        time.sleep(5)

        dport = free_port()
        # Its own process group, so that the browsers go with it.
        driver = subprocess.Popen(["chromedriver", f"--port={dport}"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(1)
        b = Browser(f"http://127.0.0.1:{dport}")
        base = f"http://127.0.0.1:{port}"
        b.login(base, cred["username"], cred["password"])

        # (name, path, the selector that makes it usable, the one that
        # matches while its rows' details are still loading)
        pages = [
            (f"repositories ({REPOS + 1:,})", "/console/#/repositories", "a[data-repo]", None),
            (f"a repository of {BIG_TAGS:,} tags", "/console/#/repository/console%2Fbig", "tr[data-tag]", "td.pending"),
            ("an image (layers by region)", "/console/#/image?repo=console%2Fbig&ref=t1", "tr[data-layer]", None),
            ("replication", "/console/#/replication", ".card[data-region]", None),
        ]
        say(f"Filled {REPOS * TAGS_PER_REPO + BIG_TAGS:,} tags in {fill_s:.0f} s. Pages served by node 1; {RUNS} loads each (a fresh document each time).")
        say()
        say("| page | first contentful paint, median / max | usable (rows in the DOM), median / max | rows' details loaded, median | server CPU per view |")
        say("|---|---|---|---|---|")
        for name, path, sel, loading in pages:
            fcp, usable, full = [], [], []
            for _ in range(RUNS):
                b.go("about:blank")
                b.go(base + path)
                u = b.js_async(WAIT, sel, None)
                # Details: the tags page fills sizes and architectures after.
                f = b.js_async(WAIT, sel, loading) if loading else u
                fcp.append(b.js(FCP))
                usable.append(u)
                full.append(f)
                assert u > 0 and f > 0, f"{name}: never usable"
            # CPU per view: VIEWS loads (each until fully loaded), minus idle.
            c0, t0 = cpu_s(node_pid), time.time()
            for _ in range(VIEWS):
                b.go("about:blank")
                b.go(base + path)
                b.js_async(WAIT, sel, loading)
            busy, took = cpu_s(node_pid) - c0, time.time() - t0
            i0 = cpu_s(node_pid)
            time.sleep(min(took, 10))
            idle = (cpu_s(node_pid) - i0) * took / min(took, 10)
            per_view = max(0.0, busy - idle) / VIEWS * 1000
            # Chromium reports no paint entry for some loads: the median of
            # those it reported, and how many.
            painted = [x for x in fcp if x >= 0] or [float("nan")]
            say(f"| {name} | {statistics.median(painted):.0f} / {max(painted):.0f} ms ({len([x for x in fcp if x >= 0])} of {RUNS}) | {statistics.median(usable):.0f} / {max(usable):.0f} ms | "
                f"{statistics.median(full):.0f} ms | {per_view:.1f} ms |")
        say()
        say(f"Raw: a view's CPU is over {VIEWS} views less the idle node's CPU over as long.")
        say()

        # Registry traffic with and without a console open.
        path = "/v2/bench/r00000/manifests/t0"
        b.go(base + "/console/#/replication")
        b.js_async(WAIT, ".card[data-region]", None)
        b.go("about:blank")
        reloader = Browser(f"http://127.0.0.1:{dport}")
        reloader.login(base, cred["username"], cred["password"])
        rows = []
        for rnd in range(2):
            for with_console in (False, True):
                if with_console:
                    b.go(base + "/console/#/replication")
                    reloader.go(base + "/console/#/repositories")
                    reloader.js("setInterval(() => location.reload(), 2000);")
                rps, p99, _ = wrk(port, auth, path)
                if with_console:
                    b.go("about:blank")
                    reloader.go("about:blank")
                rows.append((rnd + 1, with_console, rps, p99))
        reloader.close()
        say(f"Manifest GET (wrk -t2 -c32 -d{WRK_S}s, `{path}`, node 1), alternated:")
        say()
        say("| round | console | req/s | p99 |")
        say("|---|---|---|---|")
        for rnd, with_console, rps, p99 in rows:
            say(f"| {rnd} | {'open (replication view refreshing, a tab reloading repositories every 2 s)' if with_console else 'none'} | {rps:,.0f} | {p99} |")
        without = statistics.mean(r[2] for r in rows if not r[1])
        withc = statistics.mean(r[2] for r in rows if r[1])
        say()
        say(f"With the console open: {withc / without:.2f}× the req/s without (Chromium shares the two cores).")
        b.close()
    finally:
        if driver:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        local_cluster.stop(up)
    report_file.write("console", report_file.head(
        "Web console", f"bench/console.py {' '.join(sys.argv[1:])}", f"; binary: {WHARF}",
        "the three nodes, Chromium, chromedriver, wrk and this script share it",
        f"cluster: `wharf up --regions 3` (no emulated WAN), rate limits off; {REPOS:,} repositories of {TAGS_PER_REPO} tags and `console/big` of {BIG_TAGS:,} tags, each tag its own manifest") + report)


if __name__ == "__main__":
    main()
