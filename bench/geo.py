#!/usr/bin/env python3
"""Geo-replication benchmark: three regions from `wharf up` behind emulated
WAN links (user-space proxy), client on loopback to each region.

Measures, with links of --rtt-ms RTT and --mbit Mbit/s:
  1. push ACK in region 1 -> manifest served by region 3, and -> every layer
     local in region 3, for several image sizes;
  2. first-byte latency of a pull in region 3 that needs an on-demand fetch;
  3. write unavailability after kill -9 of the leader's region, and failed
     pulls in the surviving regions meanwhile.
Writes bench/results/<date>-geo.md. Usage: bench/geo.py [--quick]
"""
import cluster as local_cluster
import report as report_file
import base64, hashlib, json, os, signal, statistics, subprocess, sys, time, urllib.request, urllib.error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# WHARF= benches another binary (two releases side by side in one session);
# OUT= writes the report elsewhere.
WHARF = os.environ.get("WHARF") or os.path.join(ROOT, "target", "release", "wharf")
WORK = os.path.join(ROOT, "bench", "work-geo")
QUICK = "--quick" in sys.argv
RTT_MS, MBIT = 80, 200
SIZES_MIB = [1, 16] if QUICK else [1, 100, 1024]
if os.environ.get("SIZES_MIB"):
    SIZES_MIB = [int(x) for x in os.environ["SIZES_MIB"].split(",")]
MANIFEST_SAMPLES = 5 if QUICK else 20
BASE = 7400
OCI = "application/vnd.oci.image.manifest.v1+json"


# Wharf is private: every request logs in as the owner `wharf up` created
# (Basic auth, which nodes cache after the first check).
AUTH = {}


def login(cluster):
    c = cluster["credentials"]
    AUTH["user"] = f'{c["username"]}:{c["password"]}'
    AUTH["header"] = "Basic " + base64.b64encode(AUTH["user"].encode()).decode()


def req(method, url, body=None, headers=None, timeout=120):
    headers = dict(headers or {})
    headers["Authorization"] = AUTH["header"]
    r = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)
    except Exception as e:  # connection refused, reset, timeout
        return 0, str(e).encode(), {}


def endpoint(i):
    return f"http://127.0.0.1:{BASE + i}"


def push_blob(i, repo, path_or_bytes):
    if isinstance(path_or_bytes, bytes):
        data = path_or_bytes
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        code, _, _ = req("POST", f"{endpoint(i)}/v2/{repo}/blobs/uploads/?digest={digest}", data)
    else:
        h = hashlib.sha256()
        with open(path_or_bytes, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        out = subprocess.run(["curl", "-sS", "-u", AUTH["user"], "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-T", path_or_bytes,
                              f"{endpoint(i)}/v2/{repo}/blobs/uploads?digest={digest}"], capture_output=True, text=True)
        code = int(out.stdout or 0)
    assert code == 201, (code, repo)
    return digest


def manifest(cfg_digest, cfg_size, layers):
    return json.dumps({"schemaVersion": 2, "mediaType": OCI,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s} for d, s in layers]}).encode()


def put_manifest(i, repo, tag, body):
    return req("PUT", f"{endpoint(i)}/v2/{repo}/manifests/{tag}", body, {"Content-Type": OCI})[0]


def holds(region_index, digest):
    hexd = digest[7:]
    return os.path.exists(os.path.join(WORK, f"node-{region_index}", "data", "blobs", "blobs", "sha256", hexd[:2], hexd))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    up = local_cluster.start(WHARF, WORK, WORK, BASE,
                             ["--wan-rtt-ms", str(RTT_MS), "--wan-bandwidth-mbit", str(MBIT)])
    report = []
    try:
        deadline = time.time() + 60
        while not os.path.exists(os.path.join(WORK, "cluster.json")):
            assert time.time() < deadline and up.poll() is None, open(os.path.join(WORK, "up.log")).read()
            time.sleep(0.1)
        cluster = json.load(open(os.path.join(WORK, "cluster.json")))
        login(cluster)
        say = lambda s="": (report.append(s), print(s, file=sys.stderr))
        cfg = b'{"architecture":"amd64","os":"linux"}'

        # 1. push ACK -> served / local in region 3
        say(f"## Push in us-east (region 1), observed in ap-south (region 3); links {RTT_MS} ms RTT, {MBIT} Mbit/s")
        say()
        say("| image | samples | ACK -> manifest served in r3 p50 / p99 | target p99 <= 1.5 RTT | ACK -> every layer local in r3 | target <= 1.1 x size/bw + 2 RTT |")
        say("|---|---|---|---|---|---|")
        for mib in SIZES_MIB:
            samples = MANIFEST_SAMPLES if mib == 1 else 1
            served, local = [], []
            for n in range(samples):
                repo = f"bench/s{mib}-{n}"
                path = os.path.join(WORK, "layer.bin")
                with open(path, "wb") as f:
                    left = mib << 20
                    while left:
                        chunk = os.urandom(min(left, 4 << 20)); f.write(chunk); left -= len(chunk)
                cd = push_blob(1, repo, cfg)
                ld = push_blob(1, repo, path)
                body = manifest(cd, len(cfg), [(ld, mib << 20)])
                code = put_manifest(1, repo, "v1", body)
                t_ack = time.time()
                assert code == 201, code
                while True:
                    code, _, _ = req("HEAD", f"{endpoint(3)}/v2/{repo}/manifests/v1", headers={"Accept": OCI}, timeout=10)
                    if code == 200:
                        served.append((time.time() - t_ack) * 1000)
                        break
                    time.sleep(0.002)
                while not holds(3, ld):
                    assert time.time() - t_ack < 600, "layer never arrived"
                    time.sleep(0.01)
                local.append(time.time() - t_ack)
            ideal = 1.1 * (mib * 8 * 1.048576) / MBIT + 2 * RTT_MS / 1000
            say(f"| {mib} MiB | {samples} | {pct(served, 50):.1f} / {pct(served, 99):.1f} ms | {1.5 * RTT_MS:.0f} ms | {max(local):.2f} s | {ideal:.2f} s |")
        say()
        say("The layer timer starts at the manifest ACK; the mover starts copying when the layer's upload is acknowledged, before the manifest, so it can finish early.")
        say()

        # 1b. a whole push through a follower region
        status = json.loads(req("GET", f"{endpoint(1)}/api/v1/status")[1])
        follower = next(i for i in (3, 2, 1) if i != status["leader"])
        say(f"## A push of config + 5 layers (1 MiB each) + manifest through a follower region (region {follower})")
        say()
        totals = []
        for n in range(3 if QUICK else 10):
            repo = f"bench/push{n}"
            t0 = time.time()
            cd = push_blob(follower, repo, cfg + str(n).encode())
            layers = [(push_blob(follower, repo, os.urandom(1 << 20)), 1 << 20) for _ in range(5)]
            assert put_manifest(follower, repo, "v1", manifest(cd, len(cfg) + len(str(n)), layers)) == 201
            totals.append((time.time() - t0) * 1000)
        say(f"push wall time p50 {statistics.median(totals):.0f} ms, max {max(totals):.0f} ms over {len(totals)} pushes: the blobs are linked by the manifest's proposal, so the push pays one round trip to the leader's region, not one per blob")
        say()

        # 2. on-demand first byte in region 3
        say("## First byte of a pull in ap-south that needs an on-demand fetch")
        say()
        firsts = []
        for n in range(3 if QUICK else 5):
            data = os.urandom(8 << 20)
            repo = f"bench/ondemand{n}"
            d = push_blob(1, repo, data)
            cd = push_blob(1, repo, cfg)
            assert put_manifest(1, repo, "v1", manifest(cd, len(cfg), [(d, len(data))])) == 201
            out = subprocess.run(["curl", "-sS", "-u", AUTH["user"], "-o", "/dev/null", "-w", "%{time_starttransfer} %{time_total} %{http_code}",
                                  f"{endpoint(3)}/v2/{repo}/blobs/{d}"], capture_output=True, text=True).stdout.split()
            assert out[2] == "200", out
            firsts.append(float(out[0]) * 1000)
        say(f"Images with an 8 MiB layer pushed to us-east, the layer pulled from ap-south right after the manifest ACK: first byte p50 {statistics.median(firsts):.0f} ms, max {max(firsts):.0f} ms over {len(firsts)} pulls (the mover may already be copying: the pull joins its transfer)")
        say()

        # 3. kill the leader's region
        say("## Killing the leader's region (kill -9)")
        say()
        status = json.loads(req("GET", f"{endpoint(1)}/api/v1/status")[1])
        leader = status["leader"]
        survivors = [i for i in (1, 2, 3) if i != leader]
        pid = next(n["pid"] for r in cluster["regions"] for n in r["nodes"] if n["id"] == leader)
        probe_repo = "bench/failover"
        image = manifest(push_blob(survivors[0], probe_repo, cfg), len(cfg), [])
        assert put_manifest(survivors[0], probe_repo, "base", image) == 201
        import threading
        stop = threading.Event()
        pull_stats = {"made": 0, "failed": 0}

        def puller():
            # Pulls of an existing image from every surviving region, all along.
            while not stop.is_set():
                for s in survivors:
                    code = req("GET", f"{endpoint(s)}/v2/{probe_repo}/manifests/base", headers={"Accept": OCI}, timeout=10)[0]
                    pull_stats["made"] += 1
                    pull_stats["failed"] += code != 200
                time.sleep(0.02)

        t = threading.Thread(target=puller)
        t.start()
        time.sleep(1)
        os.kill(pid, signal.SIGKILL)
        t_kill = time.time()
        resumed, n = None, 0
        while time.time() - t_kill < 20 and resumed is None:
            n += 1
            if put_manifest(survivors[0], probe_repo, f"t{n}", image) == 201:
                resumed = time.time() - t_kill
            else:
                time.sleep(0.02)
        time.sleep(2)
        stop.set()
        t.join()
        pulls, failed_pulls = pull_stats["made"], pull_stats["failed"]
        say(f"- leader was node {leader}; writes through region {survivors[0]} resumed after {resumed:.2f} s (target <= 3 s)" if resumed else "- writes did not resume within 20 s")
        say(f"- pulls of an existing image from the surviving regions meanwhile: {pulls} made, {failed_pulls} failed (target 0)")
    finally:
        local_cluster.stop(up)

    report_file.write("geo", report_file.head(
        "Geo-replication benchmark", f"bench/geo.py {' '.join(sys.argv[1:])}",
        f"; binary: {WHARF}, SIZES_MIB={','.join(map(str, SIZES_MIB))}",
        "all three regions, the WAN proxies and the client share it",
        f"cluster: `wharf up --regions 3 --wan-rtt-ms {RTT_MS} --wan-bandwidth-mbit {MBIT}` (release build); the emulated links carry Raft and blob transfer between regions, clients talk to each region over loopback") + report)


if __name__ == "__main__":
    main()
