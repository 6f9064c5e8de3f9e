// Package capture takes live checkpoints of running QEMU guests: disk and
// RAM consistent to one instant, the guest paused for milliseconds, and only
// what changed since the previous checkpoint read and indexed.
//
// # Vocabulary
//
//   - Session: one QMP connection (go-qemu's SocketMonitor underneath), with
//     a timeout on every command and an event log that is read all the time.
//     QEMU serves one QMP client at a time; a socket whose QEMU serves
//     another client stays silent, and Dial says so (ErrQMPBusy).
//   - Checkpoint: the guest's state at one instant. QEMU's `stop` pauses
//     the guest, one `transaction` puts a new qcow2 overlay on every
//     writable disk (the old top is frozen at that instant), and a
//     background-snapshot migration (`migrate` to a socket ntc reads, handed
//     over with getfd) write-protects RAM and resumes the guest by itself:
//     ntc never sends `cont` on the success path, as a `cont` before RAM is
//     protected would let RAM run ahead of the disks. The pause is QEMU's
//     STOP to RESUME.
//   - Overlay chain: a disk's base image (the guest's own image, where ntc
//     found it) and the overlays ntc put on it, oldest first; the newest is
//     the active layer the guest writes to. An overlay frozen by checkpoint
//     k+1 holds exactly the clusters the guest wrote since checkpoint k:
//     `qemu-img map` of that layer alone (backing: null) lists them, and
//     only they are re-indexed (chunk.Reindex). After checkpoint k+1 is
//     complete, the frozen overlays are merged into the base with a live
//     block-commit, so a chain is base + one overlay between checkpoints.
//     Overlays are created next to the disk's active layer (or in
//     Config.OverlayDir), never in the repository: the running guest
//     depends on them.
//   - Chain: a frozen image read straight from its layer files, through the
//     offsets `qemu-img map` reports (qcow2 and raw layers; zero ranges are
//     never read).
//   - Repository: DIR/store (a chunk.DirStore), DIR/checkpoints/NNNNNN (one
//     index per disk, RAM block, the device state and the stream
//     description, then manifest.json, written last and atomically) and
//     DIR/state.json (the overlay chains and the QEMU process they belong
//     to: boot ID, PID, start time). A checkpoint without a manifest is
//     incomplete: ignored, and removed by the next run.
//   - RAM: the migration stream is parsed as it arrives (capture/migstream)
//     into one page index per RAM block (chunk.PageIndex, 4 KiB pages keyed
//     by content); only pages the store lacks are written, and the raw
//     stream is never stored. The device state and the stream description
//     (Repository.Stream rebuilds the stream from them) are CDC-indexed.
//   - Machine: what starting an identical QEMU takes: the source's argv
//     (/proc/PID/cmdline of the process behind the socket, found with
//     SO_PEERCRED), the versioned machine type (qom-get /machine type), RAM
//     size and CPU count.
//
// # Guarantees
//
// On every error path the guest is left running (a guest ntc paused is
// resumed with cont, after cancelling the snapshot; ntc reconnects if the
// session broke), the overlay chains stay valid and recorded in state.json,
// no manifest is written for the failed checkpoint, and earlier checkpoints
// are not touched. A guest that is not running is refused and left as it
// is: QEMU 7.2's background snapshot always resumes the guest, so a paused
// guest cannot be checkpointed without un-pausing it.
//
// # What it does not do
//
// It does not send anything anywhere (sync does), does not resume guests
// (resume does), and does not start QEMU. It needs QEMU 6.0 or later
// (background-snapshot; 7.2 is what it was measured on) and userfaultfd
// write-protect (root, or vm.unprivileged_userfaultfd=1). It reads qcow2 and
// raw layers only, not compressed or encrypted clusters, nor disks on
// network protocols (ErrUnsupported, before the guest is paused). Read-only
// media get no overlay and are not indexed. One repository per VM: two
// repositories checkpointing one QEMU take turns reading the disks in full.
// The guest's disk now lives in the overlay chain: restarting QEMU from its
// original command line would lose the writes since the last merge.
package capture
