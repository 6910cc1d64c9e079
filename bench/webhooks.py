#!/usr/bin/env python3
"""Webhook benchmark on one node (region us-east), with local receivers.

  1. push latency with no webhook (P sequential pushes, each a config blob
     and a manifest; the manifest PUT is timed);
  2. one webhook to a fast local receiver: P more pushes; delivery latency
     from each push's acknowledgement to its event's arrival (p50/p99);
  3. drain rate: N events queued while the webhook is disabled, then it is
     enabled: deliveries per second to one fast receiver;
  4. push latency with 50 webhooks configured (49 to nginx answering 200,
     one to the Python receiver, whose delivery latency is measured);
  5. push latency with a receiver that never answers (plus one fast
     webhook, whose delivery latency is measured alongside).
Each push-latency figure is compared with a no-webhook run just before it
(the machine's own noise moves p99 by 2x between runs minutes apart).
Writes bench/results/<date>-webhooks.md. Usage: bench/webhooks.py [--quick]
(WHARF=path/to/wharf to pick a binary; default target/release/wharf).
"""
import base64, datetime, hashlib, http.client, http.server, json, os, shutil, signal
import subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHARF = os.environ.get("WHARF", os.path.join(ROOT, "target", "release", "wharf"))
WORK = os.path.join(ROOT, "bench", "work-webhooks")
QUICK = "--quick" in sys.argv
PUSHES = 100 if QUICK else 500
DRAIN = 500 if QUICK else 3000
HOOKS = 50
PORT = 7601
RX_PORT = 7690
HANG_PORT = 7691
NGINX_PORT = 7692
PW = "bench-owner-password"
AUTH = "Basic " + base64.b64encode(f"owner:{PW}".encode()).decode()
OCI = "application/vnd.oci.image.manifest.v1+json"

arrivals = {}  # (path, tag) -> perf_counter of the first arrival
arrivals_lock = threading.Lock()
delivered = {"n": 0}


class Fast(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        now = time.perf_counter()
        tag = json.loads(body).get("target", {}).get("tag")
        with arrivals_lock:
            arrivals.setdefault((self.path, tag), now)
            delivered["n"] += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


class Hang(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        time.sleep(3600)

    def log_message(self, *a):
        pass


def serve(handler, port):
    s = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    s.daemon_threads = True
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return s


conn_cache = threading.local()


def req(method, path, body=None, headers=None):
    h = {"Authorization": AUTH, **(headers or {})}
    for attempt in range(2):
        try:
            if not hasattr(conn_cache, "c"):
                conn_cache.c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
            conn_cache.c.request(method, path, body=body, headers=h)
            r = conn_cache.c.getresponse()
            return r.status, r.read()
        except (http.client.HTTPException, OSError):
            conn_cache.__dict__.pop("c", None)
            if attempt:
                raise


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def push(tag, seq):
    """Push an image (config only); the manifest PUT's latency and the
    moment it was acknowledged."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seq": seq}).encode()
    cd = digest(config)
    code, body = req("POST", f"/v2/bench/app/blobs/uploads/?digest={cd}", config)
    assert code == 201, (code, body[:200])
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": cd, "size": len(config)}, "layers": []}).encode()
    t0 = time.perf_counter()
    code, body = req("PUT", f"/v2/bench/app/manifests/{tag}", m, {"Content-Type": OCI})
    t1 = time.perf_counter()
    assert code == 201, (code, body[:200])
    return t1 - t0, t1


def wharf(*args):
    out = subprocess.run([WHARF, *args, "--endpoint", f"http://127.0.0.1:{PORT}"],
                         capture_output=True, text=True,
                         env={**os.environ, "WHARF_USERNAME": "owner", "WHARF_PASSWORD": PW})
    assert out.returncode == 0, out.stderr
    return out.stdout


def hook(name, uri, *extra):
    wharf("webhook", "create", "--name", name, "--uri", uri, "--actions", "push", *extra)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def wait_for(pred, secs, what):
    deadline = time.time() + secs
    while not pred():
        assert time.time() < deadline, f"not within {secs} s: {what}"
        time.sleep(0.005)


def pushes(prefix, n, seq0):
    lat, acked = [], {}
    for i in range(n):
        dt, at = push(f"{prefix}{i}", seq0 + i)
        lat.append(dt)
        acked[f"{prefix}{i}"] = at
    return lat, acked


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    serve(Fast, RX_PORT)
    serve(Hang, HANG_PORT)
    os.makedirs(os.path.join(WORK, "nginx"))
    ngx_conf = os.path.join(WORK, "nginx.conf")
    with open(ngx_conf, "w") as f:
        f.write(f"worker_processes 1;\ndaemon off;\npid {WORK}/nginx.pid;\n"
                f"error_log {WORK}/nginx-error.log warn;\nevents {{ worker_connections 1024; }}\n"
                f"http {{ access_log off; client_body_temp_path {WORK}/nginx;\n"
                f"  server {{ listen 127.0.0.1:{NGINX_PORT}; location / {{ return 200; }} }} }}\n")
    nginx = subprocess.Popen(["nginx", "-c", ngx_conf])
    cfg = os.path.join(WORK, "wharf.toml")
    with open(cfg, "w") as f:
        f.write(f'data_dir = "{WORK}/data"\nhttp_listen = "127.0.0.1:{PORT}"\n'
                f'grpc_listen = "127.0.0.1:{PORT + 100}"\n[gc]\ninterval_s = 0\n'
                "[rate_limits]\nenabled = false\n")
    log = open(os.path.join(WORK, "wharf.log"), "w")
    node = subprocess.Popen([WHARF, "serve", "--config", cfg], stdout=log, stderr=log,
                            env={**os.environ, "WHARF_BOOTSTRAP_PASSWORD": PW})
    rx = f"http://127.0.0.1:{RX_PORT}"
    try:
        for _ in range(300):
            try:
                if req("GET", "/v2/")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        pushes("warm", 50, 0)
        none_lat, _ = pushes("none", PUSHES, 1000)

        hook("fasthook", f"{rx}/fast")
        one_lat, acked = pushes("one", PUSHES, 10_000)
        wait_for(lambda: all(("/fast", t) in arrivals for t in acked), 60, "every event")
        delivery = [arrivals[("/fast", t)] - at for t, at in acked.items()]

        wharf("webhook", "update", "--name", "fasthook", "--status", "disabled")
        # Queue DRAIN events behind a receiver that never answers (the head
        # waits out the 10 s timeout), then point the webhook at the fast one.
        hook("drainhook", f"http://127.0.0.1:{HANG_PORT}/hold")
        _, drain_acked = pushes("q", DRAIN, 30_000)
        wharf("webhook", "update", "--name", "drainhook", "--uri", f"{rx}/drain")
        wait_for(lambda: all(("/drain", t) in arrivals for t in drain_acked), 300, "the drain")
        t_last = max(arrivals[("/drain", t)] for t in drain_acked)
        first = min(arrivals[("/drain", t)] for t in drain_acked)
        drain_rate = (DRAIN - 1) / max(t_last - first, 1e-9)
        wharf("webhook", "delete", "--name", "drainhook")

        before_many, _ = pushes("bm", PUSHES, 35_000)
        hook("many000", f"{rx}/many0")
        for i in range(1, HOOKS):
            hook(f"many{i:03d}", f"http://127.0.0.1:{NGINX_PORT}/many{i}")
        many_lat, many_acked = pushes("many", PUSHES, 40_000)
        wait_for(lambda: all(("/many0", t) in arrivals for t in many_acked), 300, "50 webhooks' events")
        many_delivery = [arrivals[("/many0", t)] - at for t, at in many_acked.items()]
        for i in range(HOOKS):
            wharf("webhook", "delete", "--name", f"many{i:03d}")
        # The same 50 webhooks pointed at the hanging receiver: every event
        # is still written to 50 outboxes, but nothing is sent (each
        # worker waits on its head): the state machine's share of the cost.
        before_quiet, _ = pushes("bq", PUSHES, 41_000)
        for i in range(HOOKS):
            hook(f"quiet{i:03d}", f"http://127.0.0.1:{HANG_PORT}/quiet{i}")
        quiet_lat, _ = pushes("quiet", PUSHES, 42_000)
        for i in range(HOOKS):
            wharf("webhook", "delete", "--name", f"quiet{i:03d}")
        before_hang, _ = pushes("bh", PUSHES, 45_000)

        wharf("webhook", "update", "--name", "fasthook", "--status", "enabled")
        hook("hanghook", f"http://127.0.0.1:{HANG_PORT}/hang")
        # fasthook was disabled meanwhile: it has nothing queued.
        hang_lat, hang_acked = pushes("hang", PUSHES, 50_000)
        wait_for(lambda: all(("/fast", t) in arrivals for t in hang_acked), 60, "the fast webhook beside the hanging one")
        beside = [arrivals[("/fast", t)] - at for t, at in hang_acked.items()]
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=30)
        nginx.terminate()
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo; nproc; grep -o -m1 sha_ni /proc/cpuinfo || echo no-sha_ni"],
                         capture_output=True, text=True).stdout.split("\n")
    ms = lambda x: f"{x * 1000:.2f}"
    row = lambda name, xs: f"| {name} | {ms(pct(xs, 50))} | {ms(pct(xs, 99))} | {len(xs)} |"
    lines = [
        f"# Webhooks, one node — {datetime.date.today()}",
        "",
        f"Command: `bench/webhooks.py{' --quick' if QUICK else ''}` (release build). "
        f"Machine: {cpu[0].split(':')[-1].strip()}, {cpu[1]} cores, {cpu[2]}. "
        "Receivers: Python ThreadingHTTPServer on loopback (answers 200 at once), "
        "and one that never answers (the deliverer's 10 s timeout).",
        "",
        "| figure | p50 ms | p99 ms | samples |",
        "|---|---|---|---|",
        row("manifest PUT, no webhook", none_lat),
        row("manifest PUT, 1 webhook", one_lat),
        row("delivery: push ACK → event at the receiver, 1 webhook", delivery),
        row("manifest PUT, no webhook (just before the next)", before_many),
        row(f"manifest PUT, {HOOKS} webhooks", many_lat),
        row(f"delivery to the measured one of {HOOKS} webhooks", many_delivery),
        row("manifest PUT, no webhook (just before the next)", before_quiet),
        row(f"manifest PUT, {HOOKS} webhooks written to but not sent (hanging receivers)", quiet_lat),
        row("manifest PUT, no webhook (just before the next)", before_hang),
        row("manifest PUT, a hanging webhook + a fast one", hang_lat),
        row("delivery to the fast webhook beside the hanging one", beside),
        "",
        f"Drain: {DRAIN} events queued behind a hanging receiver, then the "
        f"webhook pointed at the fast receiver: **{drain_rate:,.0f} deliveries/s** to one "
        f"receiver (in order, one webhook).",
        "",
        f"Push p50 / p99 with {HOOKS} webhooks against none just before: "
        f"{pct(many_lat, 50) / pct(before_many, 50):.2f}× / {pct(many_lat, 99) / pct(before_many, 99):.2f}×; "
        f"{HOOKS} written, none sent: {pct(quiet_lat, 50) / pct(before_quiet, 50):.2f}× / "
        f"{pct(quiet_lat, 99) / pct(before_quiet, 99):.2f}×; "
        f"with a hanging receiver: {pct(hang_lat, 50) / pct(before_hang, 50):.2f}× / "
        f"{pct(hang_lat, 99) / pct(before_hang, 99):.2f}×.",
        "",
        "Raw delivery latencies (ms), 1 webhook: " + " ".join(ms(x) for x in delivery),
        "",
        "Raw push latencies (ms), none before 50: " + " ".join(ms(x) for x in before_many),
        "",
        f"{HOOKS} webhooks: " + " ".join(ms(x) for x in many_lat),
        "",
        "None before hanging: " + " ".join(ms(x) for x in before_hang),
        "",
        "Hanging: " + " ".join(ms(x) for x in hang_lat),
        "",
    ]
    out = os.environ.get("OUT", os.path.join(ROOT, "bench", "results", f"{datetime.date.today()}-webhooks.md"))
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines[:18]))
    print("written:", out)


if __name__ == "__main__":
    main()
