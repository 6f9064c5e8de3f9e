// Package resume continues a checkpointed guest on this machine: it starts
// a QEMU whose machine matches the source's, feeds it the migration stream
// rebuilt from the checkpoint's images, and lets the guest run from the
// instant of the checkpoint (no reboot: its processes, counters and
// console carry on).
//
// # Vocabulary
//
//   - Images: a checkpoint as files, the way a receiver materialises a
//     pushed one (STORE/sets/SET/images): manifest.json, one raw image per
//     disk ("disk-vda"), one page image per RAM block ("ram-pc.ram"), the
//     device state ("device") and the stream description ("stream"). They
//     are hostile input: only ever read, only inside that directory
//     (os.Root: no name with a separator or "..", no symlink out), only
//     regular files, each of the size the manifest declares; the manifest
//     (1 MiB), stream description (16 MiB) and device state (64 MiB) are
//     refused over their bounds before they are read (capture.ReadFileBounded).
//     The receiver updates them in place on the next push, except a file a
//     running copy holds open: that one is replaced by a new file.
//   - Description: the manifest's capture.Machine, data rather than a
//     command line. validate checks it against the allowlist (allow.go):
//     the arch, machine properties, device drivers and each one's
//     properties, value syntax (tokens, numbers, MACs, PCI slots, ids
//     without commas), and every reference (drive, netdev, chardev,
//     iothread, bus, memory-backend) to something the description declares
//     or the receiver creates. Anything else, or anything the source used
//     that capture could not describe (Machine.Unsupported), is refused
//     (ErrRefused) with the item named, before anything runs.
//   - Plan: the command line ntc builds from a valid description. The
//     binary is Config.QEMU or qemu-system-ARCH on PATH. Every disk is a
//     new qcow2 overlay in the work directory over the received image,
//     which ntc opens and passes as a descriptor (-add-fd, read-only
//     backing node): QEMU never opens a path from the images directory,
//     and qemu-img only writes the overlay, recording the image without
//     opening it. NICs get user-mode backends (restrict=on while the
//     network is off), character devices files or sockets in the work
//     directory named after their ids, chardev-ID.log or .sock (the first
//     serial port, -serial or isa-serial: serial.log), RAM a memfd backend of
//     the receiver's choice (huge pages when it has them free) under the
//     source's backend id. Kernel, initrd and firmware are the receiver's
//     own (Config.Kernel, Initrd, Firmware; without one that the source
//     booted: ErrNeedKernel, ErrNeedInitrd, ErrNeedFirmware): the
//     description only names and hashes the source's, and a differing one
//     is noted. QEMU runs with
//     -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,
//     resourcecontrol=deny when the build has seccomp (asked once per
//     binary), and as Config.User when set. The versioned machine type and
//     the recorded RAM size are used; every device stays, in order: the
//     migration needs the same devices at the same addresses.
//   - Work directory: 0700, holding the overlays and logs (0600), sockets
//     (the user's qmp.sock and ntc's own ntc-qmp.sock) and the pid file.
//   - Incoming migration: QEMU starts paused with -incoming defer; ntc
//     passes it one end of a pipe (getfd) and writes the stream that
//     migstream.Join rebuilds into the other (migrate-incoming fd:), then
//     waits for the MIGRATION event "completed", at most
//     Config.LoadTimeout from QEMU's start (ErrLoadTimeout). A stream QEMU
//     refuses (a machine that does not match: RAM size, machine type,
//     devices) makes QEMU exit: [ExitError] carries what it said, and is
//     ErrIncompatible.
//   - Network: by default every NIC's link is set down (set_link) before
//     the guest runs, so the copy cannot clash with the original on the
//     network (same MAC and addresses); NetworkOn leaves it up. A source
//     that has a vmgenid device gets a new generation ID (guid=auto), so
//     the guest can tell it is a copy. One is not added to a source without
//     one: tried on QEMU 7.2, the stream loads, but the guest never sees
//     the ID, whose address its firmware allocates at boot.
//   - Keeper: QEMU dies with ntc until the copy runs. Without Detach it is
//     ntc's child with SIGKILL as parent-death signal, forked from a thread
//     locked until QEMU is reaped (the signal follows the forking thread).
//     With Detach, ntc starts a keeper (ntc re-executed with KeeperArg,
//     running Keep) with that signal; the keeper starts QEMU with the same
//     signal tied to itself, and on Release clears its own
//     (PR_SET_PDEATHSIG 0, on its main thread) and stays to reap QEMU. ntc
//     killed before Release takes the keeper, and the keeper QEMU, along.
//   - Sessions: ntc talks to the copy over its own QMP socket
//     (ntc-qmp.sock, through a qemu.Session); the user's is qmp.sock.
//
// # Guarantees
//
// On any error Start leaves nothing running and removes the overlays it
// created (QEMU's log stays, for the record). It refuses a work directory
// that holds an earlier copy's overlays, whose writes would be lost.
//
// # What it does not do
//
// It does not fetch or verify checkpoints (sync does). A push to the same
// set while a copy runs leaves the copy's disks alone, but the RAM and
// device images of the set then describe the new checkpoint: resume again
// only after the push. It resumes machines capture can describe: no
// legacy -net hubs (QEMU's default NIC is recreated), no memory hotplug,
// no -dtb, no pflash firmware, no read-only media (CD-ROMs with an image),
// no devices outside the allowlist. It runs no QEMU older than the
// source's, and no QEMU the checkpoint names.
package resume
