#!/bin/busybox sh
# /init of the ntc test guest; generated into the initramfs by testguest.Build.
# Prints "tick N" on the console once a second, after writing "disk tick N"
# (one 512-byte sector, NUL padded, fsync'ed) to the start of /dev/vda.
# ntc.busy=M keeps M MiB of RAM (a tmpfs file) rewritten from /dev/urandom;
# ntc.diskbusy=M does the same to M MiB of /dev/vda starting at 1 MiB.
# Nothing here depends on wall-clock time: the guest can be paused, saved and
# moved at any instant.

/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

say() { echo "ntc: $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=95% tmpfs /tmp

for m in $(cat /etc/ntc/modules); do
	insmod "/lib/modules/$m.ko" || say "error: insmod $m failed"
done

busy=0
diskbusy=0
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	ntc.busy=*) busy=${arg#ntc.busy=} ;;
	ntc.diskbusy=*) diskbusy=${arg#ntc.diskbusy=} ;;
	esac
done

# Probing is synchronous, but give udev-less devtmpfs a moment all the same.
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do
	sleep 0.1
	i=$((i + 1))
done
disk=none
[ -b /dev/vda ] && disk=vda
# Before the busy writers start: what the guest has to spare.
avail=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)

if [ "$busy" -gt 0 ]; then
	(
		p=0
		while :; do
			p=$((p + 1))
			if dd if=/dev/urandom of=/tmp/busy bs=1M count="$busy" conv=notrunc 2>/dev/null; then
				say "busy pass $p"
			else
				say "error: busy write failed"
			fi
			sleep 1
		done
	) &
fi

if [ "$diskbusy" -gt 0 ] && [ $disk = vda ]; then
	(
		p=0
		while :; do
			p=$((p + 1))
			if dd if=/dev/urandom of=/dev/vda bs=1M seek=1 count="$diskbusy" conv=fsync,notrunc 2>/dev/null; then
				say "diskbusy pass $p"
			else
				say "error: disk busy write failed"
			fi
			sleep 1
		done
	) &
fi

say "ready busy=$busy diskbusy=$diskbusy disk=$disk memavail=${avail}M"

n=0
while :; do
	n=$((n + 1))
	if [ $disk = vda ]; then
		printf 'disk tick %d\n' "$n" | dd of=/dev/vda bs=512 count=1 conv=sync,fsync,notrunc 2>/dev/null ||
			say "error: disk tick $n not written"
	fi
	echo "tick $n"
	sleep 1
done
