# SeaweedFS for one region: an S3 endpoint on :8333 with the bucket
# `wharf` (made once the server answers; it survives restarts in /data).
/usr/bin/weed mini -dir=/data -ip=0.0.0.0 -ip.bind=0.0.0.0 &
WEED=$!
trap 'kill -TERM $WEED; wait $WEED' TERM INT
until echo "s3.bucket.create -name wharf" | /usr/bin/weed shell -master=localhost:9333 >/tmp/bucket.log 2>&1 \
    && ! /bin/busybox grep -qi "error" /tmp/bucket.log; do
  /bin/busybox grep -qi "already exist" /tmp/bucket.log && break
  /bin/busybox sleep 1
done
echo "bucket wharf ready"
wait $WEED
