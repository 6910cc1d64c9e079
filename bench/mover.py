#!/usr/bin/env python3
"""Mover catch-up benchmark: how fast a region that was out copies back the
small blobs it missed (the repair after a lost disk or a long outage).

Starts `wharf up --regions 3` (WAN links of RTT_MS, default 40 ms), fences
region 3, uploads BLOBS (default 3,000) small distinct blobs through region
1, lifts the fence, and times region 3's backlog (`blobs_to_copy` of GET
/api/v1/replications) from the fence's lift to zero. The mover runs with
the default configuration (`mover.concurrency` 4).

Writes bench/results/<date>-mover.md (OUT= to name another file); WHARF=
benches another binary. Usage: bench/mover.py [--quick]
"""
import cluster as local_cluster
import report as report_file
import base64, concurrent.futures, hashlib, json, os, sys, time
import urllib.error, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHARF = os.environ.get("WHARF", os.path.join(ROOT, "target", "release", "wharf"))
WORK = os.path.join(ROOT, "bench", "work-mover")
QUICK = "--quick" in sys.argv
BLOBS = int(os.environ.get("BLOBS", 500 if QUICK else 3000))
BLOB_BYTES = int(os.environ.get("BLOB_BYTES", 1024))
RTT_MS = int(os.environ.get("RTT_MS", 40))
BASE = 7600
AUTH = {}


def req(method, url, body=None, headers=None, timeout=60):
    headers = dict(headers or {})
    headers["Authorization"] = AUTH["header"]
    if body is not None and "Content-Type" not in headers:
        headers["Content-Type"] = "application/json" if url.rstrip("/").endswith("fence") else "application/octet-stream"
    r = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except Exception as e:  # refused, reset, timeout
        return 0, str(e).encode()


def endpoint(i):
    return f"http://127.0.0.1:{BASE + i}"


def upload(n):
    data = n.to_bytes(8, "big") + os.urandom(BLOB_BYTES - 8)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    for _ in range(5):
        code, body = req("POST", f"{endpoint(1)}/v2/bench/mover{n % 20}/blobs/uploads/?digest={digest}", data)
        if code == 201:
            return
        time.sleep(0.2)
    raise SystemExit(f"upload {n}: HTTP {code} {body[:200]!r}")


def backlog(region):
    code, body = req("GET", f"{endpoint(1)}/api/v1/replications", timeout=30)
    if code != 200:
        return None
    rows = json.loads(body)
    return next((r["blobs_to_copy"] for r in rows if r["region"] == region), None)


def main():
    up = local_cluster.start(WHARF, WORK, WORK, BASE, ["--wan-rtt-ms", str(RTT_MS)] if RTT_MS else [])
    try:
        deadline = time.time() + 90
        while not os.path.exists(os.path.join(WORK, "cluster.json")):
            assert time.time() < deadline and up.poll() is None, open(os.path.join(WORK, "up.log")).read()
            time.sleep(0.1)
        cluster = json.load(open(os.path.join(WORK, "cluster.json")))
        c = cluster["credentials"]
        AUTH["header"] = "Basic " + base64.b64encode(f'{c["username"]}:{c["password"]}'.encode()).decode()
        region2, region3 = cluster["regions"][1]["name"], cluster["regions"][2]["name"]

        code, body = req("PUT", f"{endpoint(3)}/api/v1/fence", json.dumps({"seconds": 3600}).encode())
        assert code == 200, (code, body)
        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(upload, range(BLOBS)))
        upload_s = time.time() - t0
        print(f"uploaded {BLOBS} blobs of {BLOB_BYTES} B in {upload_s:.1f} s", file=sys.stderr)
        # Every blob registered (uploads are linked after a short grace),
        # and region 2 done copying them, so that the catch-up measured
        # below is region 3's alone.
        deadline = time.time() + 600
        while not (backlog(region3) == BLOBS and backlog(region2) == 0):
            assert time.time() < deadline, (backlog(region3), backlog(region2))
            time.sleep(0.5)
        code, body = req("DELETE", f"{endpoint(3)}/api/v1/fence")
        assert code == 200, (code, body)
        lifted = time.time()
        timeline = []
        while True:
            left = backlog(region3)
            t = time.time() - lifted
            if left is not None:
                timeline.append((t, left))
                if left == 0 and t > 1:
                    break
            assert t < 1800, "region 3 never caught up"
            time.sleep(0.2)
        total = timeline[-1][0]
        peak = max(left for _, left in timeline)
        first_drop = next((t for t, left in timeline if left < peak), total)
    finally:
        local_cluster.stop(up)

    command = " ".join(f"{k}={os.environ[k]}" for k in ("WHARF", "BLOBS", "BLOB_BYTES", "RTT_MS") if k in os.environ)
    command = f"{command} bench/mover.py {' '.join(sys.argv[1:])}".strip()
    figures = [
        "| figure | value |",
        "|---|---|",
        f"| blobs region 3 missed (fenced while they were uploaded) | {BLOBS} of {BLOB_BYTES} B |",
        f"| upload through region 1 (8 clients) | {upload_s:.1f} s |",
        f"| fence lifted → backlog empty | {total:.1f} s |",
        f"| fence lifted → first blob copied | {first_drop:.1f} s (the region applies the log it missed first) |",
        f"| copy rate after the first copy | {peak / max(total - first_drop, 1e-9):,.0f} blobs/s |",
        "",
        "Backlog after the fence's lift (s, blobs left): " + " ".join(f"{t:.1f}:{left}" for t, left in timeline),
    ]
    print("\n".join(figures[2:7]), file=sys.stderr)
    report_file.write("mover", report_file.head(
        "Mover catch-up", command, f"; binary: {WHARF}",
        "three regions, the WAN proxies and the client share it",
        f"cluster: `wharf up --regions 3 --wan-rtt-ms {RTT_MS}`, default mover configuration (4 transfers)") + figures)


if __name__ == "__main__":
    main()
