"""A local cluster for the bench/*.py scripts: `wharf up --regions 3` in a
fresh work directory, rate limits off (throughput and latency, not
throttling), its output in WORK/up.log."""
import base64, http.client, json, os, shutil, signal, subprocess, sys, time


def start(wharf, work, data_dir, base, extra=()):
    """Start it; the caller waits for DATA_DIR/cluster.json and stops it."""
    if not os.path.exists(wharf):
        sys.exit(f"build first: make release (or set WHARF=; {wharf} not found)")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    overlay = os.path.join(work, "overlay.toml")
    with open(overlay, "w") as f:
        f.write("[rate_limits]\nenabled = false\n")
    args = [wharf, "up", "--regions", "3", "--data-dir", data_dir, "--base-port", str(base),
            "--config-overlay", overlay, *extra]
    return subprocess.Popen(args, stdout=open(os.path.join(work, "up.log"), "w"), stderr=subprocess.STDOUT)


def stop(up):
    """SIGINT (`wharf up` stops its nodes), then kill after 30 s."""
    up.send_signal(signal.SIGINT)
    try:
        up.wait(timeout=30)
    except subprocess.TimeoutExpired:
        up.kill()


def ready(up, work, data_dir, base):
    """Wait for the cluster `start` began: its cluster.json and a leader.
    Returns (cluster.json as a dict, the owner's Basic header, the
    leader's node id)."""
    cj = os.path.join(data_dir, "cluster.json")
    deadline = time.time() + 60
    while not os.path.exists(cj):
        assert time.time() < deadline and up.poll() is None, open(os.path.join(work, "up.log")).read()
        time.sleep(0.1)
    time.sleep(1)
    cluster = json.load(open(cj))
    cred = cluster["credentials"]
    auth = "Basic " + base64.b64encode(f'{cred["username"]}:{cred["password"]}'.encode()).decode()
    while True:
        assert time.time() < deadline + 60, "no leader"
        try:
            c = http.client.HTTPConnection("127.0.0.1", base + 1, timeout=10)
            c.request("GET", "/api/v1/status", headers={"Authorization": auth})
            leader = json.loads(c.getresponse().read()).get("leader")
            if leader:
                return cluster, auth, leader
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.2)
