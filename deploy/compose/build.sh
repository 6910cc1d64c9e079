#!/usr/bin/env bash
# Build the images deploy/compose runs, FROM scratch (no image can be
# pulled): `wharf:local` (the binary and the shared libraries it links,
# found with ldd) and `wharf-seaweedfs:local` (SeaweedFS's static `weed`,
# busybox for its entrypoint). Also makes the cluster key and the owner's
# password once, in ./secrets (kept out of git).
# Usage: deploy/compose/build.sh [path/to/wharf]   (default target/release/wharf)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WHARF=${1:-$ROOT/target/release/wharf}
WEED=${WEED:-$ROOT/.venv/bin/weed}
BUSYBOX=${BUSYBOX:-/bin/busybox}
for f in "$WHARF" "$WEED" "$BUSYBOX"; do
  [ -x "$f" ] || { echo "missing $f (make release; make deps-test; apt-get install busybox-static)" >&2; exit 1; }
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# wharf: the binary, every library ldd names, the loader.
mkdir -p "$WORK/wharf/rootfs"/{usr/local/bin,data,tmp}
cp "$WHARF" "$WORK/wharf/rootfs/usr/local/bin/wharf"
ldd "$WHARF" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
  mkdir -p "$WORK/wharf/rootfs$(dirname "$lib")"
  cp -L "$lib" "$WORK/wharf/rootfs$lib"
done
cat >"$WORK/wharf/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV WHARF_LOG_FORMAT=json
EXPOSE 5000 5100
ENTRYPOINT ["/usr/local/bin/wharf"]
CMD ["serve", "--config", "/etc/wharf/node.toml"]
DOCKERFILE
docker build -q -t wharf:local "$WORK/wharf"

# SeaweedFS: weed mini, and a bucket named wharf made once it answers.
mkdir -p "$WORK/weed/rootfs"/{bin,usr/bin,data,tmp}
cp "$BUSYBOX" "$WORK/weed/rootfs/bin/busybox"
ln -s busybox "$WORK/weed/rootfs/bin/sh"
cp "$WEED" "$WORK/weed/rootfs/usr/bin/weed"
cp "$HERE/seaweedfs-entrypoint.sh" "$WORK/weed/rootfs/entrypoint.sh"
cat >"$WORK/weed/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
EXPOSE 8333
ENTRYPOINT ["/bin/sh", "/entrypoint.sh"]
DOCKERFILE
docker build -q -t wharf-seaweedfs:local "$WORK/weed"

# The cluster key every node shares, and the owner's first password.
mkdir -p "$HERE/secrets"
chmod 700 "$HERE/secrets"
[ -s "$HERE/secrets/cluster.key" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$HERE/secrets/cluster.key"
[ -s "$HERE/.env" ] || printf 'WHARF_BOOTSTRAP_PASSWORD=%s\n' "$(head -c 18 /dev/urandom | base64 | tr -d '/+=')" >"$HERE/.env"
chmod 600 "$HERE/secrets/cluster.key" "$HERE/.env"
echo "images wharf:local and wharf-seaweedfs:local built; owner password in $HERE/.env"
