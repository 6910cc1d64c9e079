import json, os, re, subprocess, time, glob
while not os.path.exists("/work/jruns/gc-30min.rc"):
    ports = [re.search(r':(\d+)"', l).group(1) for f in sorted(glob.glob("/work/jruns/gc-30min/cluster/node-*/wharf.toml")) for l in open(f) if l.startswith("http_listen")]
    for p in ports:
        out = subprocess.run(["curl", "-s", "-m", "10", "-u", "owner:jepsen owner password", f"http://127.0.0.1:{p}/api/v1/replications"], capture_output=True, text=True).stdout
        try:
            rows = json.loads(out)
            print(time.strftime("%T"), " ".join(f'{r["region"]}:{r["blobs_to_copy"]}/lost{r["blobs_lost"]}' for r in rows), flush=True)
            break
        except Exception:
            continue
    time.sleep(15)
