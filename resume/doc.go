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
//     are only ever read. The receiver updates them in place on the next
//     push, except a file a running copy holds open (QEMU locks it): that
//     one is replaced by a new file, and the copy keeps reading its own.
//   - Copy: the resumed guest, a QEMU process started from the source's
//     recorded command line (Manifest.Machine.Argv) with its paths moved
//     into a work directory (see [Plan]): each disk becomes a new qcow2
//     overlay whose backing file is the received raw image, the serial
//     console that went to stdio goes to serial.log, QMP sockets, chardev
//     sockets and files, the pid file and QEMU's log live there too. The
//     versioned machine type replaces an alias (pc → pc-i440fx-7.2) and -m
//     says the recorded RAM size. Every device stays: the migration needs
//     the same devices at the same addresses.
//   - Incoming migration: QEMU starts paused with -incoming defer; ntc
//     passes it one end of a pipe (getfd) and writes the stream that
//     migstream.Join rebuilds into the other (migrate-incoming fd:), then
//     waits for the MIGRATION event "completed". A stream QEMU refuses (a
//     machine that does not match: RAM size, machine type, devices) makes
//     QEMU exit: [ExitError] carries what it said, and is ErrIncompatible.
//   - Network: by default every NIC's link is set down (set_link) before
//     the guest runs, so the copy cannot clash with the original on the
//     network (same MAC and addresses); NetworkOn leaves it as it was. A
//     source that has a vmgenid device gets a new generation ID, so the
//     guest can tell it is a copy. One is not added to a source without
//     one: tried on QEMU 7.2, the stream loads (the device's state is simply
//     absent), but the guest never sees the ID, whose address its firmware
//     allocates at boot from ACPI tables the source did not have.
//   - Sessions: ntc talks to the copy over its own QMP socket
//     (ntc-qmp.sock, through capture.Session); the user's is qmp.sock.
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
// set while a copy runs leaves the copy's disks alone (see Images above),
// but the RAM and device images of the set then describe the new
// checkpoint: resume again only after the push. Files the source's command line loads
// besides its disks (kernel, initrd, firmware) must be at the same paths
// here; it checks -kernel, -initrd, -bios and -dtb. Legacy -net hubs can
// only be resumed with the network on. It runs no QEMU older than the
// source's, and moves no disks on network protocols or in formats other
// than qcow2 and raw.
package resume
