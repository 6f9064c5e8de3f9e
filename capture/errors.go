package capture

import "errors"

// Sentinel errors for the conditions of a checkpoint a caller may want to
// tell apart (those of the QMP connection are package qemu's).
var (
	// ErrGuestNotRunning: the guest is paused, shut down or otherwise not
	// running, so ntc refuses to checkpoint it.
	ErrGuestNotRunning = errors.New("guest is not running")
	// ErrUnsupported: the QEMU or its configuration lacks something a
	// checkpoint needs (background-snapshot, a disk layout ntc can read).
	ErrUnsupported = errors.New("unsupported by ntc checkpoint")
	// ErrLayerNotPlain: a disk layer is in a format ntc does not read in
	// place (not qcow2 or raw) or holds compressed clusters; it comes
	// wrapped with ErrUnsupported.
	ErrLayerNotPlain = errors.New("disk layer is not plain qcow2 or raw")
	// ErrBusy: another ntc checkpoint or a migration is in progress.
	ErrBusy = errors.New("busy")
	// ErrOldRepository: the directory is a checkpoint repository of an
	// older ntc (one VM, its own store), which this one does not write.
	ErrOldRepository = errors.New("checkpoint repository of an older ntc")
	// ErrOverlayDir: the overlays cannot be created next to the disks.
	ErrOverlayDir = errors.New("no writable directory for the disk overlays")
	// ErrNotConverging: a precopy migration did not reach its last pause
	// in time: the guest dirties its memory faster than ntc stores it.
	ErrNotConverging = errors.New("migration does not converge")
	// ErrNoBackgroundSnapshot: QEMU refused its background snapshot (it
	// needs userfaultfd write-protect, and none of xbzrle, compress,
	// multifd or postcopy); it comes wrapped with ErrUnsupported.
	ErrNoBackgroundSnapshot = errors.New("QEMU cannot take a background snapshot of this guest")
)
