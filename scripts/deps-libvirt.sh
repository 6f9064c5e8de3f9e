#!/usr/bin/env bash
# Installs what ntc's libvirt tests need on Debian (libvirtd and virsh) and puts two settings of the machine the
# way those tests need them. The tests start libvirtd themselves when none answers (no systemd needed).
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
pkgs=(libvirt-daemon-system libvirt-clients)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps-libvirt: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# /dev/kvm as udev leaves it on Debian (root:kvm 0660). Where no udev runs it can be root-only; libvirt 9.0 then
# finds KVM "enabled when probing" yet unusable by its QEMU user, throws its capability cache away on every call and
# re-probes QEMU (2 s a probe): starting one domain took 48 s here instead of 0.3 s. The tests' domains use TCG.
if [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c %G /dev/kvm)" != kvm ]; then
  $sudo chown root:kvm /dev/kvm && $sudo chmod 0660 /dev/kvm &&
    echo "deps-libvirt: /dev/kvm is now root:kvm 0660, as udev sets it (libvirt otherwise re-probes QEMU on every call)" >&2
fi
# libvirt runs QEMU as libvirt-qemu without capabilities; QEMU 7.2's background snapshot (ntc's checkpoint under TCG)
# needs userfaultfd, which such a process may open only with vm.unprivileged_userfaultfd=1 (QEMU 8.1 and later can
# use /dev/userfaultfd instead).
if [ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null || echo 1)" != 1 ]; then
  if echo 1 | $sudo tee /proc/sys/vm/unprivileged_userfaultfd >/dev/null 2>&1; then
    echo "deps-libvirt: vm.unprivileged_userfaultfd=1 (libvirt's unprivileged QEMU needs it for background snapshots; undo: echo 0 > /proc/sys/vm/unprivileged_userfaultfd)" >&2
  else
    echo "deps-libvirt: could not set vm.unprivileged_userfaultfd=1: libvirt guests under TCG cannot be checkpointed here" >&2
  fi
fi
