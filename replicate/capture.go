package replicate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/ntc-project/ntc/capture"

	"github.com/ntc-project/ntc/qemu"
)

// Capture takes checkpoints with package capture into set Config.Set of
// the node repository Config.Dir, and prunes it.
type Capture struct {
	Config capture.Config
}

var (
	_ Checkpointer = (*Capture)(nil)
	_ Pruner       = (*Capture)(nil)
)

// Checkpoint takes one checkpoint. Errors that mean the guest is gone (its
// QMP socket removed or refusing connections), or that no later checkpoint
// will get past (not a QMP socket, a disk layout ntc cannot read), are
// Permanent.
func (c *Capture) Checkpoint(ctx context.Context) (Checkpoint, error) {
	res, err := capture.Checkpoint(ctx, c.Config)
	if err != nil {
		return Checkpoint{}, c.classify(err)
	}
	return Checkpoint{
		Seq:        res.Manifest.Seq,
		GuestPause: time.Duration(res.Stats.GuestPauseMS * float64(time.Millisecond)),
		Instant:    res.Instant,
	}, nil
}

func (c *Capture) classify(err error) error {
	qmp := c.Config.QMP
	if _, serr := os.Stat(qmp); errors.Is(serr, fs.ErrNotExist) {
		return Permanent(fmt.Errorf("the guest is gone: QMP socket %s no longer exists (QEMU exited?): %w", qmp, err))
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Permanent(fmt.Errorf("the guest is gone: nothing listens on QMP socket %s (QEMU exited?): %w", qmp, err))
	case errors.Is(err, qemu.ErrNotQMP), errors.Is(err, capture.ErrUnsupported):
		return Permanent(err)
	}
	// ErrDisconnected (the next round tells whether QEMU is gone),
	// ErrGuestNotRunning (a paused guest may be resumed), ErrQMPBusy,
	// ErrBusy and the rest: maybe next time.
	return err
}

// Prune keeps the newest keep checkpoints and acked. When another process
// holds the repository (a checkpoint taken by hand), it prunes nothing
// this time. Other failures are Permanent: the repository would only grow.
func (c *Capture) Prune(ctx context.Context, keep, acked int) ([]int, error) {
	set := cmp.Or(c.Config.Set, capture.DefaultSet)
	repo, err := capture.OpenRepository(ctx, c.Config.Dir, set)
	if errors.Is(err, capture.ErrBusy) {
		return nil, nil
	}
	if err != nil {
		return nil, Permanent(err)
	}
	var pinned []int
	if acked > 0 {
		pinned = append(pinned, acked)
	}
	removed, err := repo.Prune(ctx, keep, pinned...)
	if err != nil {
		repo.Close()
		return removed, Permanent(err)
	}
	// Dropping unused chunks may fail for a reason that passes (an I/O
	// error); the next round's collection tries again.
	if len(removed) > 0 {
		_, err = repo.Collect(ctx)
	}
	if cerr := repo.Close(); err == nil {
		err = cerr
	}
	return removed, err
}
