#!/bin/sh
# Runs a one-machine SeaweedFS (master, volume, filer, S3 gateway) on
# 127.0.0.1 with a data directory DIR and test credentials, for running the
# S3 store's tests and benchmarks against it (bench/README.md):
#
#   bench/s3/seaweedfs.sh WEED DIR &
#   NTC_S3TEST_ENDPOINT=http://127.0.0.1:18333 NTC_S3TEST_ACCESS_KEY=ntc-test-access \
#     NTC_S3TEST_SECRET_KEY=ntc-test-secret-key-0123456789 go test ./chunk/s3store/ ./repo/s3versions/
#
# WEED is a weed binary built from github.com/seaweedfs/seaweedfs (see
# bench/README.md). Ports: S3 18333, master 19333, volume 18080, filer
# 18888 (and each plus 10000 for gRPC). Every bucket is a collection with
# volumes of its own: small volumes, as many as the disk takes, so that the
# tests' many buckets do not run out of them.
set -eu
weed=$1
dir=$2
mkdir -p "$dir"
cat > "$dir/s3.json" <<'JSON'
{"identities": [{"name": "ntc-test",
  "credentials": [{"accessKey": "ntc-test-access", "secretKey": "ntc-test-secret-key-0123456789"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
exec "$weed" server -dir="$dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
	-master.port=19333 -volume.port=18080 -filer.port=18888 \
	-master.volumeSizeLimitMB=64 -volume.max=0 \
	-s3 -s3.port=18333 -s3.config="$dir/s3.json"
