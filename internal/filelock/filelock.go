// Package filelock is ntc's one way to lock a file between processes: an
// exclusive flock(2) on a private lock file, taken once (TryLock: ErrBusy
// when another process holds it) or waited for (Lock, Wait: until the
// holder lets go or the context ends). A lock lasts while its file stays
// open, so it also goes when its holder dies.
//
// It does not see fcntl(2) locks, nor do they see it: QEMU locks the images
// it opens with fcntl OFD locks, and a probe for those must use fcntl.
package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrBusy reports a lock another process (or another open file of this
// one) holds.
var ErrBusy = errors.New("locked by another process")

// Mode is the permission of the lock files TryLock and Lock create: they
// sit beside guest data, so they are private too.
const Mode = 0o600

// waitStep is how often a waiter tries again: a flock's release announces
// itself no other way.
const waitStep = 20 * time.Millisecond

// TryLockFile takes an exclusive flock on f without waiting: an error
// wrapping ErrBusy when another holds it. The lock lasts until f is closed.
func TryLockFile(f *os.File) error {
	err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("lock %s: %w", f.Name(), ErrBusy)
	}
	if err != nil {
		return fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return nil
}

// TryLock opens path, creating it with Mode and never through a symbolic
// link, and takes an exclusive flock on it without waiting (an error
// wrapping ErrBusy when another holds it). Closing the file releases it.
func TryLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, Mode)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := TryLockFile(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Wait calls try until it returns something other than an error wrapping
// ErrBusy, or ctx ends: then the last busy error and ctx's error, both
// matched by errors.Is.
func Wait[T any](ctx context.Context, try func() (T, error)) (T, error) {
	t := time.NewTicker(waitStep)
	defer t.Stop()
	for {
		v, err := try()
		if !errors.Is(err, ErrBusy) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("%w (waited: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// Lock takes an exclusive flock on path as TryLock does, waiting while
// another holds it until ctx ends; what names the holder in the error a
// cancelled wait returns, e.g. "another process building the test guest".
func Lock(ctx context.Context, path, what string) (unlock func(), err error) {
	f, err := Wait(ctx, func() (*os.File, error) { return TryLock(path) })
	if err != nil {
		if errors.Is(err, ErrBusy) {
			return nil, fmt.Errorf("wait for %s: %w", what, err)
		}
		return nil, err
	}
	return func() { f.Close() }, nil
}
