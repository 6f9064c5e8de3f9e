#!/bin/sh
# install.sh IMAGE MNT OUT PACKAGE...
#
# Installs PACKAGEs into the root file system in the raw ext4 IMAGE as a user
# would: loop-mounts it at MNT, then in a chroot with /proc, /sys, /dev and
# /dev/pts mounted runs apt-get update and apt-get install -y (recommended
# packages included, no apt-get clean), and unmounts everything. dpkg's
# package lists before and after go to OUT/before and OUT/after.
#
# debimg runs it in a private mount and PID namespace: whatever this script
# leaves mounted, or running, dies with the namespace.
set -eu
img=$1 mnt=$2 out=$3
shift 3
export DEBIAN_FRONTEND=noninteractive LC_ALL=C HOME=/root
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
unset TMPDIR

# unmount [lazy]: unmounts what is mounted, innermost first; with "lazy", a
# busy file system is detached lazily rather than failing.
unmount() {
	for m in "$mnt/dev/pts" "$mnt/dev" "$mnt/sys" "$mnt/proc" "$mnt"; do
		mountpoint -q "$m" || continue
		umount "$m" && continue
		[ "${1-}" = lazy ] && umount -l "$m" && continue
		return 1
	done
}
trap 'unmount lazy || true' EXIT
trap 'exit 130' INT TERM

mount -o loop "$img" "$mnt"
mount -t proc proc "$mnt/proc"
mount -t sysfs sysfs "$mnt/sys"
mount --bind /dev "$mnt/dev"
mount --bind /dev/pts "$mnt/dev/pts"

# No daemon may start in the chroot: it would keep the image busy.
policy="$mnt/usr/sbin/policy-rc.d"
ownpolicy=""
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	ownpolicy=1
fi

chroot "$mnt" dpkg-query -W -f '${Package} ${Version}\n' >"$out/before"
chroot "$mnt" apt-get update -q
chroot "$mnt" apt-get install -y -q "$@"
chroot "$mnt" dpkg-query -W -f '${Package} ${Version}\n' >"$out/after"

if [ -n "$ownpolicy" ]; then
	rm -f "$policy"
fi

# Unmount for real: a lazy unmount here would hide a busy image.
unmount
