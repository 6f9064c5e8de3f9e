// Package testguest builds and runs the small Linux guest that ntc's tests,
// demo and benchmarks checkpoint, move and resume.
//
// # Vocabulary
//
//   - Guest: a Debian cloud kernel (vmlinuz) and an initramfs generated here,
//     both built from Debian packages only (linux-image-*-cloud-amd64 and
//     busybox-static, fetched with `apt-get download`) and cached on disk; see
//     [Build].
//   - VM: one QEMU process running the guest under TCG on the pc machine, with
//     a QMP socket, a qcow2 disk on virtio-blk, an optional virtio-net NIC
//     whose backend reaches nothing, and the serial console captured; see
//     [Start].
//   - Tick: once a second the guest writes "disk tick N" to the first sector of
//     its disk (fsync'ed), then prints "tick N" on the serial console. A tick
//     seen on the console is therefore already on the disk: [ReadDiskTick]
//     reads it back from the image on the host.
//   - Busy: the kernel command line parameter ntc.busy=M keeps M MiB of guest
//     RAM rewritten with fresh random content, continuously (at most once a
//     second); ntc.diskbusy=M does the same for M MiB of the disk from 1 MiB
//     on. Nothing in the guest depends on wall-clock time, so it keeps going
//     after being paused, checkpointed or migrated.
//
// # What it does not do
//
// It does not talk QMP beyond handing out the socket path (capture owns the
// QMP session), it never starts a guest under KVM unless asked (guests hang
// under KVM on the project's machines), and the guest never configures its
// network interface, so it sends no traffic. It does not import testing: the
// ntc binary links it (ntc demo --vm), so the helpers that take a testing.TB
// live in package guesttest.
package testguest
