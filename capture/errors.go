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
	// ErrBusy: another ntc checkpoint or a migration is in progress.
	ErrBusy = errors.New("busy")
)
