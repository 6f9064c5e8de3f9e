#!/usr/bin/env bash
# Installs what ntc's demo, tests and benchmarks need on Debian, if missing:
# QEMU and its tools, rsync (the benchmark baseline), and what the test guest
# is built from. Go modules are fetched by the go command itself.
set -euo pipefail
pkgs=(qemu-system-x86 qemu-utils rsync zstd iproute2 mmdebstrap e2fsprogs time ca-certificates)
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
command -v go >/dev/null || { echo "deps: Go 1.26 or newer is needed: install it from go.dev or Debian's golang package" >&2; exit 1; }
go mod download
