"""A local cluster for the bench/*.py scripts: `wharf up --regions 3` in a
fresh work directory, rate limits off (throughput and latency, not
throttling), its output in WORK/up.log."""
import os, shutil, signal, subprocess, sys


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
