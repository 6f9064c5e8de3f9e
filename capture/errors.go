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
	// ErrMigrating: the guest's QEMU is migrating (another tool's
	// migration or snapshot); it comes wrapped with ErrBusy.
	ErrMigrating = errors.New("a migration is under way")
	// ErrHeadUnreadable: the set's current version is not a checkpoint
	// this ntc reads, so the next checkpoint has no parent to follow.
	ErrHeadUnreadable = errors.New("the set's current version is not a checkpoint this ntc reads")
	// ErrNoQemuImg: qemu-img, which lists a disk layer's changes, is not
	// installed.
	ErrNoQemuImg = errors.New("qemu-img not found")
	// ErrRemoteLibvirt: the libvirt URI names a daemon on another host
	// (or a driver other than QEMU's); ntc reads the guest's disks itself,
	// so it talks to the local QEMU daemon only.
	ErrRemoteLibvirt = errors.New("not a local QEMU libvirt URI (qemu:///system or qemu:///session)")
	// ErrNoLibvirtd: no libvirt daemon listens on this host.
	ErrNoLibvirtd = errors.New("no libvirt daemon socket")
	// ErrNoDomain: libvirt knows no domain of that name.
	ErrNoDomain = errors.New("no such libvirt domain")
	// ErrNoQEMUProcess: the domain's QEMU process is not visible to this
	// process (another host, or not permitted to read it).
	ErrNoQEMUProcess = errors.New("the domain's QEMU process is not visible here")
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
