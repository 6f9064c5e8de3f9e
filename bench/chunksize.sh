#!/usr/bin/env bash
# Measures how many bytes a transfer sends against the average chunk size, on
# a real ext4 image before and after packages are installed into it.
# Needs root (loop mounts) and network access to Debian's package archive.
#   bench/chunksize.sh [WORKDIR]
set -euo pipefail
work=${1:-/tmp/ntc-chunksize}
ntc=${NTC:-bin/ntc}
mkdir -p "$work"/{mnt,debs}
a=$work/a.img b=$work/b.img
if [ ! -f "$a" ]; then
  truncate -s 3G "$a.tmp" && mkfs.ext4 -q -F "$a.tmp"
  mount -o loop "$a.tmp" "$work/mnt"
  mkdir -p "$work/mnt/usr"
  cp -a /usr/lib/x86_64-linux-gnu /usr/share "$work/mnt/usr/"
  umount "$work/mnt"
  mv "$a.tmp" "$a"
fi
if [ ! -f "$b" ]; then
  (cd "$work/debs" && apt-get download -q python3.11 libpython3.11-stdlib python3.11-minimal libpython3.11-minimal gcc-12 cpp-12 >/dev/null)
  cp --sparse=always "$a" "$b.tmp"
  mount -o loop "$b.tmp" "$work/mnt"
  for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$work/mnt"; done
  rm -rf "$work/mnt/usr/share/doc/"[a-c]*          # removals happen too
  date > "$work/mnt/var-log-dpkg.log"
  umount "$work/mnt"
  mv "$b.tmp" "$b"
fi
# The oracle: 4 KiB blocks that differ, zstd-compressed.
changed=$(cmp -l "$a" "$b" 2>/dev/null | awk '{print int(($1-1)/4096)}' | uniq | wc -l || true)
echo "changed 4 KiB blocks: $changed ($((changed * 4)) KiB)"
printf '%-8s %14s %14s %10s %12s\n' average new_bytes index_bytes chunks idx_build_ms
for avg in 4K 8K 16K 32K 64K 128K; do
  "$ntc" index "$a" --average "$avg" -o "$work/a-$avg.idx" >/dev/null
  ms=$("$ntc" --json index "$b" --average "$avg" -o "$work/b-$avg.idx" | sed -n 's/.*"duration_ms": \([0-9.]*\).*/\1/p')
  new=$("$ntc" --json diff "$work/a-$avg.idx" "$work/b-$avg.idx" | sed -n 's/.*"new_bytes": \([0-9]*\).*/\1/p')
  chunks=$("$ntc" --json diff "$work/a-$avg.idx" "$work/b-$avg.idx" | sed -n 's/.*"new_chunks": \([0-9]*\).*/\1/p')
  printf '%-8s %14s %14s %10s %12s\n' "$avg" "$new" "$(stat -c %s "$work/b-$avg.idx")" "$chunks" "$ms"
done
