#!/usr/bin/env bash
# Installs what ntc's demo, tests and benchmarks need on Debian, if missing:
# QEMU and its tools, rsync (the benchmark baseline), promtool (prometheus) and
# systemd-analyze (systemd) that check the metrics and the units, and what the test guest
# is built from. Go modules are fetched by the go command itself.
set -euo pipefail
pkgs=(qemu-system-x86 qemu-utils rsync zstd iproute2 mmdebstrap e2fsprogs time ca-certificates prometheus systemd)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Huge pages for the test guest's RAM. QEMU 7.2's background snapshot (how ntc checkpoints RAM here) touches and
# write-protects every page of guest RAM while the guest is paused: 128 pages of 2 MiB for the 256 MiB guest
# (a pause of about 15 ms) instead of 65,536 of 4 KiB (about 300 ms on the project's machines). Enough for two
# guests at once (the demo's copy, tests running in parallel); only ever raised. NTC_HUGEPAGES=0 skips this; the
# demo and tests then use ordinary memory and say so.
# Only on a machine with at least 4 times that much memory available.
want=${NTC_HUGEPAGES:-384}
have=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)
avail_mib=$(awk '/^MemAvailable:/ {print int($2/1024)}' /proc/meminfo 2>/dev/null || echo 0)
if [ "$want" -gt "$have" ] && [ $(((want - have) * 2 * 4)) -gt "$avail_mib" ]; then
  echo "deps: not reserving huge pages: $(((want - have) * 2)) MiB is too much of the ${avail_mib} MiB available; guests use 4 KiB pages and pause longer" >&2
elif [ "$want" -gt "$have" ] && grep -q '^Hugepagesize: *2048 kB' /proc/meminfo 2>/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  if echo "$want" | $sudo tee /proc/sys/vm/nr_hugepages >/dev/null 2>&1; then
    echo "deps: reserved $(cat /proc/sys/vm/nr_hugepages) huge pages of 2 MiB for guest RAM (was $have; undo: echo $have > /proc/sys/vm/nr_hugepages)" >&2
  else
    echo "deps: could not reserve huge pages (as root: echo $want > /proc/sys/vm/nr_hugepages): guests use 4 KiB pages and pause longer" >&2
  fi
fi
# libvirtd for the tests that checkpoint a libvirt-managed guest.
"$(dirname "$0")/deps-libvirt.sh"
command -v go >/dev/null || { echo "deps: Go 1.26 or newer is needed: install it from go.dev or Debian's golang package" >&2; exit 1; }
go mod download
# versitygw: the S3 server the object-store tests start on loopback (internal/s3test looks in PATH, $GOBIN,
# $GOPATH/bin). Installed again only if missing or of another version; about a minute to build.
vgw=github.com/versity/versitygw/cmd/versitygw
vgw_version=v1.8.0
gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin="$(go env GOPATH | cut -d: -f1)/bin"
if ! go version -m "$gobin/versitygw" 2>/dev/null | grep -q "mod[[:space:]]*github.com/versity/versitygw[[:space:]]*$vgw_version[[:space:]]"; then
  echo "deps: installing versitygw $vgw_version into $gobin (about a minute)" >&2
  GOBIN="$gobin" go install "$vgw@$vgw_version"
fi
