// Package capture takes live checkpoints of running QEMU guests: disk and
// RAM consistent to one instant, the guest paused for milliseconds, and only
// what changed since the previous checkpoint read and indexed.
//
// # Vocabulary
//
//   - Session: one QMP connection, a qemu.Session (a timeout on every
//     command, an event log read all the time and scanned from a mark,
//     qemu.ErrQMPBusy/qemu.ErrNotQMP told apart through SO_PEERCRED). Its
//     wire is a qemu.Monitor: qemu.SocketMonitor for a QMP socket
//     (Config.QMP), libvirtMonitor for a libvirt domain.
//   - Libvirt domain: a guest whose QMP monitor libvirt owns (Config.Domain,
//     DialDomain). Commands and events go through libvirtd, and the disk
//     overlays and their merge through libvirt's snapshot and block-commit
//     APIs, so that libvirt's view of the disks stays true (libvirt.go).
//   - Instant: the moment a checkpoint captures. The guest is paused, one
//     QMP `transaction` of `blockdev-snapshot` makes a prepared qcow2 overlay
//     the active layer of every writable disk (the old top is frozen), and
//     the device state and the rest of RAM are saved, all in one pause.
//   - Method: how RAM gets to ntc, always as a migration stream over a
//     socket pair whose other end QEMU receives with getfd (no file, no
//     temporary copy). MethodPrecopy: a live migration sends RAM while the
//     guest runs; with pause-before-switchover QEMU pauses the guest when
//     little is left and waits; ntc snapshots the disks, lets QEMU send the
//     last pages and the device state, and resumes the guest (retrying cont
//     every 2 ms at most while QEMU says the migration is not finalized).
//     MethodBackground: ntc pauses the guest (stop), snapshots the disks and
//     starts a background snapshot, which write-protects RAM and resumes the
//     guest by itself; ntc never sends cont then, as RAM would run ahead of
//     the disks. On QEMU 7.2 that pause includes the snapshot's setup
//     (QEMU reads a byte of every page of guest RAM, ram_write_tracking_prepare,
//     before its own stop, which ntc's stop puts inside the pause: the disks
//     must be snapshotted at the same instant) and the write protection of
//     every page (userfaultfd), so the pause grows with the number of
//     pages: 65,536 per 256 MiB with 4 KiB pages, 128 with 2 MiB huge
//     pages (scripts/deps.sh reserves huge pages and the demo's guest uses
//     them; bench/README.md, "Measured figures the package docs rely on",
//     has the pauses). MethodAuto (the default) takes a background
//     snapshot when guest RAM is on huge pages (x-query-ramblock) and
//     precopy otherwise, except under TCG on QEMU before 9.0, whose
//     precopy misses guest writes (dirty bitmap cleared without
//     re-arming the TLB's dirty tracking; fixed by QEMU commit 03bfc2188f):
//     there it always takes a background snapshot, since stale kernel pages
//     made restored guests panic. A background snapshot whose stream
//     breaks after RAM is write-protected wedges QEMU 7.2's main loop for
//     good, so a failed checkpoint reads that stream to its end instead of
//     closing it. The pause is QEMU's STOP to RESUME, from the events'
//     timestamps; Stats.PauseSteps says where it went.
//   - Overlay chain: a disk's base image (the guest's own image, where ntc
//     found it) and the overlays ntc put on it, oldest first; the newest is
//     the active layer the guest writes to. An overlay frozen by checkpoint
//     k+1 holds exactly the clusters the guest wrote since checkpoint k:
//     `qemu-img map` of that layer alone (backing: null) lists them, and
//     only they are re-indexed (chunk.Reindex). Once checkpoint k+1 is
//     complete, frozen overlays are merged into the base with a live
//     block-commit and removed, so a chain is base + one overlay between
//     checkpoints. Overlays are created (qemu-img create, blockdev-add) before
//     the pause, next to the disk's active layer or in Config.OverlayDir,
//     never in the repository: the running guest depends on them.
//   - Chain: a frozen image read straight from its layer files through the
//     offsets `qemu-img map` reports (qcow2 and raw layers); ranges that read
//     as zeros are never read.
//   - Repository: one set of the node's repository (package repo), whose
//     versions are checkpoints: one index per disk, RAM block, the device
//     state and the stream description, the manifest as the version's
//     metadata, committed (repo.Repo.Commit) once the chunks are durable in
//     the node's store (DIR/packs, shared with what the node receives), with
//     the set's current version as parent and this node as maker. Capture's
//     own bookkeeping is DIR/sets/SET/capture: state.json (the overlay
//     chains, overlays prepared for a checkpoint in progress, and the QEMU
//     process they belong to: boot ID, PID, start time), changes/DIGEST (the
//     extents each incremental disk's writes covered) and a lock (one
//     process checkpoints a set at a time). Readers
//     (OpenRepositoryForReading, e.g. a push) see committed checkpoints
//     only. Repository.Stream rebuilds a checkpoint's migration stream for
//     migstream.Join. Adopt makes a copy resumed from a version the set's
//     guest, so that its first checkpoint is incremental against that
//     version; a Final checkpoint leaves the guest paused for a hand-off.
//   - RAM: the stream is parsed as it arrives (capture/migstream) into one
//     chunk.PageIndex per RAM block, 4 KiB pages keyed by content; only
//     contents the store lacks are written. The device state and the stream
//     description (header, configuration, block list, record layout,
//     VMDESCRIPTION) are CDC-indexed blobs.
//   - Machine: what starting an identical QEMU takes, as data: the target,
//     the versioned machine type (qom-get /machine type, never the alias),
//     RAM size (QEMU's) and backend kind and id, CPU model, features and
//     count, each -device with its driver, id, bus, addr and properties,
//     -drive disks attached by interface, NICs by id, netdev and MAC,
//     serial ports and the ids of the character devices devices use, a
//     directly booted kernel's command line and the base names and
//     SHA-256 of its files, flags (-nodefaults, -no-reboot, …). Where it
//     comes from (describeMachine) depends on who started the QEMU. A QMP
//     socket (Config.QMP) is the local user's own VM: the description is
//     parsed (with qemu/opt) from the command line of the process behind
//     the socket (found with SO_PEERCRED, read from /proc/PID/cmdline). A
//     libvirt domain's (Config.Domain) is read from libvirt's live domain
//     XML (virDomainGetXMLDesc, libvirt_machine.go), its RAM backend id
//     from QEMU (qom-get /machine memory-backend). Either way QEMU's QMP
//     answers then win where they say something: the target
//     (query-target), the versioned machine type, the RAM size
//     (query-memory-size-summary) and the CPU count (query-cpus-fast). A
//     directly booted kernel's files are hashed where the description
//     names them, on this host. No host path, socket, listener, program or
//     descriptor goes in; what the source used and cannot be described
//     (-fw_cfg, -object secret, legacy -net, …) is listed in
//     Machine.Unsupported, which a receiver refuses.
//   - Manifest: manifest.json, version 2 (version 1 recorded the command
//     line and is refused: ErrOldManifest). DecodeManifest checks every
//     file name it declares (CheckName: no separator, no "..", index files
//     end in .idx) and bounds its sizes; ReadManifestFile refuses a file
//     over 1 MiB before reading it. Repositories are private: directories
//     0700, files 0600; overlays are created 0600 (or the disk's own mode,
//     if stricter).
//
// # Guarantees
//
// On every error path the guest is left running (a guest paused for the
// checkpoint is resumed, after the migration is cancelled or, for a
// background snapshot, finished; ntc reconnects if the session broke), the
// overlay chains stay valid and recorded in state.json, no version is
// committed for the failed checkpoint, and earlier checkpoints are not
// touched. A guest that is not running is refused and left as it is. If ntc
// itself is killed inside the pause, QEMU keeps the guest paused (precopy:
// waiting in pre-switchover) until the next checkpoint of the same QEMU
// cancels the abandoned migration, which resumes it.
//
// # What it does not do
//
// It does not send anything anywhere (sync does), resume guests elsewhere
// (resume does), or start QEMU. It needs QEMU 6.0 or later (7.2 is what it
// is tested with); MethodBackground also needs userfaultfd write-protect
// (root, or vm.unprivileged_userfaultfd=1). It reads qcow2 and raw layers
// only, not compressed or encrypted clusters, nor disks on network
// protocols (ErrUnsupported, before the guest is touched). Read-only media
// get no overlay and are not indexed. Chunks stay in the store until
// Prune removes the checkpoints using them and Collect drops them (page
// contents a precopy migration sent and then resent included). One
// repository per VM: two repositories checkpointing one QEMU read the disks
// in full every time. The guest's disk lives in the overlay chain: QEMU
// restarted from its original command line would miss the writes since the
// last merge.
package capture
