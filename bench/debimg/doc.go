// Package debimg builds the benchmark's real-data disk images: a Debian root
// file system made from Debian packages, and the same file system after a
// user installed a few packages into it.
//
// # Vocabulary
//
//   - Old: a raw ext4 image of a minimal Debian root file system (mmdebstrap
//     --variant=minbase, package lists current as after `apt-get update`),
//     made with `mkfs.ext4 -d` into a sparse file.
//   - New: a sparse copy of Old, loop-mounted, with Options.Packages installed
//     by `apt-get update && apt-get install -y` in a chroot, as a user would:
//     recommended packages come along, the downloaded .debs stay in
//     /var/cache/apt/archives (no `apt-get clean`), and it is unmounted
//     cleanly.
//   - Pair: Old and New, the same size, with what differs between them.
//   - Changed: the [BlockSize] blocks whose content differs between Old and
//     New, as merged, block-aligned byte ranges ([ChangedBlocks]).
//   - Oracle: the zstd-compressed size (`zstd -3`, see [OracleCommand]) of the
//     changed blocks' New content, in offset order ([CompressedSize]): what a
//     tool that knew exactly what changed would still have to send.
//
// [Build] makes a Pair, or returns it from its cache: entries are keyed by
// everything that changes what is built, built under a lock file in a
// temporary directory and renamed into place, so concurrent callers share one
// build and a cached Pair costs a JSON read.
//
// Building needs root, mmdebstrap (Debian package mmdebstrap), e2fsprogs,
// util-linux, zstd and a reachable Debian mirror. Everything that mounts runs
// in a private mount and PID namespace (unshare), so mounts and processes die
// with it on every path, including cancellation and a killed build; loop
// devices are released when the last mount goes.
//
// # What it does not do
//
// It does not boot the images (they have no kernel or boot loader), does not
// trim freed blocks, and does not change the images once cached: callers
// that write must copy them first.
package debimg
