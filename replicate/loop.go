package replicate

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Checkpointer takes a live checkpoint of the guest.
type Checkpointer interface {
	Checkpoint(ctx context.Context) (Checkpoint, error)
}

// Checkpoint is a complete checkpoint a Checkpointer took.
type Checkpoint struct {
	Seq        int
	GuestPause time.Duration
	// Instant is the moment the checkpoint is of (zero if unknown: the
	// round's start stands for it).
	Instant time.Time
}

// Pusher sends checkpoint seq to the receiver as its next version and
// returns once the receiver committed it.
type Pusher interface {
	Push(ctx context.Context, seq int) (Pushed, error)
}

// Pushed is what a push did.
type Pushed struct {
	Version    uint64 // the receiver's version number
	BytesSent  uint64 // on the wire, both ways
	ChunksSent int
	Patched    int  // chunks sent as patches
	Delta      bool // a delta against a version the receiver held
}

// Pruner removes old checkpoints: it keeps the newest keep and acked (0:
// none), and returns the removed ones.
type Pruner interface {
	Prune(ctx context.Context, keep, acked int) ([]int, error)
}

// Clock is the time Run goes by.
type Clock interface {
	Now() time.Time
	// Sleep waits for d, or until ctx ends (then it returns ctx.Err()).
	Sleep(ctx context.Context, d time.Duration) error
}

// Config is a replication loop.
type Config struct {
	Checkpointer Checkpointer
	Pusher       Pusher
	// Pruner, if set, runs after every checkpoint.
	Pruner Pruner
	// Every is the interval between the starts of two rounds.
	Every time.Duration
	// Keep is how many of the newest checkpoints pruning keeps (at least 1).
	Keep int
	// Acked is the checkpoint the receiver holds when Run starts (0: none,
	// or unknown).
	Acked int
	// MaxBackoff caps the interval between rounds after failures; 0:
	// DefaultMaxBackoff, or Every if that is longer.
	MaxBackoff time.Duration
	// MaxCheckpointFailures is how many checkpoints in a row may fail for a
	// transient reason before Run gives up; 0: DefaultMaxCheckpointFailures.
	MaxCheckpointFailures int
	// Report, if set, is told about every round, after it.
	Report func(Round)
	// Clock is the time; nil: the real one.
	Clock Clock
}

// Defaults of a Config.
const (
	DefaultMaxBackoff            = time.Minute
	DefaultMaxCheckpointFailures = 5
)

// Round is what one round did.
type Round struct {
	N     int       // rounds so far in this Run, from 1
	Start time.Time // when the checkpoint started
	// Seq is the checkpoint taken (0 if it failed), GuestPause the pause it
	// caused, CheckpointTime how long taking it took.
	Seq            int
	GuestPause     time.Duration
	CheckpointTime time.Duration
	// Pushed says what the push did (zero if it failed or did not run).
	Pushed
	// Committed is set when the receiver committed the checkpoint; Lag is
	// how far behind its copy then was: from the checkpoint's instant to
	// the commit.
	Committed bool
	Lag       time.Duration
	// Duration is the round's time, checkpoint, push and pruning.
	Duration time.Duration
	// Acked is the checkpoint the receiver holds after the round.
	Acked  int
	Pruned []int
	// Err is the transient failure of this round (nil when it committed);
	// Failures counts the failed rounds in a row, this one included.
	Err      error
	Failures int
	// Next is how long until the next round starts.
	Next time.Duration
}

// PermanentError is a failure that waiting will not heal: Run ends with it.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as one that waiting will not heal (nil stays nil).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool {
	_, ok := errors.AsType[*PermanentError](err)
	return ok
}

// Run replicates until ctx ends or a permanent failure: rounds of a
// checkpoint, its push and pruning, started cfg.Every apart (further apart
// after failures). It returns ctx.Err() once ctx ends, without starting
// another checkpoint; the round in progress is abandoned, which capture and
// sync leave with nothing half-written.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Checkpointer == nil || cfg.Pusher == nil {
		return errors.New("replicate: no checkpointer or pusher")
	}
	if cfg.Every <= 0 {
		return fmt.Errorf("replicate: interval %v: want more than 0", cfg.Every)
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.Every)
	}
	if cfg.MaxCheckpointFailures <= 0 {
		cfg.MaxCheckpointFailures = DefaultMaxCheckpointFailures
	}
	cfg.Keep = max(cfg.Keep, 1)
	clk := cfg.Clock
	acked, failures, ckptFailures := cfg.Acked, 0, 0
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		r := Round{N: n, Start: clk.Now()}
		err := round(ctx, cfg, &r, acked)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case IsPermanent(err):
			return err
		case err != nil && r.Seq == 0:
			ckptFailures++
			if ckptFailures >= cfg.MaxCheckpointFailures {
				return fmt.Errorf("%d checkpoints in a row failed; the last: %w", ckptFailures, err)
			}
		case r.Seq != 0:
			ckptFailures = 0
		}
		if err != nil {
			failures++
			r.Err = err
		} else {
			failures = 0
		}
		if r.Committed {
			acked = r.Seq
		}
		r.Acked, r.Failures = acked, failures
		now := clk.Now()
		r.Duration = now.Sub(r.Start)
		r.Next = max(r.Start.Add(interval(cfg, failures)).Sub(now), 0)
		if cfg.Report != nil {
			cfg.Report(r)
		}
		if err := clk.Sleep(ctx, r.Next); err != nil {
			return err
		}
	}
}

// round takes a checkpoint, pushes it and prunes, filling r. An error
// after the checkpoint leaves r.Seq set, and one after the push
// r.Committed.
func round(ctx context.Context, cfg Config, r *Round, acked int) error {
	cp, err := cfg.Checkpointer.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	r.Seq, r.GuestPause, r.CheckpointTime = cp.Seq, cp.GuestPause, cfg.Clock.Now().Sub(r.Start)
	pushed, perr := cfg.Pusher.Push(ctx, cp.Seq)
	if perr == nil {
		r.Pushed, r.Committed = pushed, true
		from := r.Start
		if !cp.Instant.IsZero() {
			from = cp.Instant
		}
		r.Lag = cfg.Clock.Now().Sub(from)
		acked = cp.Seq
	} else {
		perr = fmt.Errorf("push checkpoint %d: %w", cp.Seq, perr)
	}
	if cfg.Pruner != nil && ctx.Err() == nil {
		pruned, err := cfg.Pruner.Prune(ctx, cfg.Keep, acked)
		r.Pruned = pruned
		if err != nil {
			return errors.Join(perr, fmt.Errorf("prune old checkpoints: %w", err))
		}
	}
	return perr
}

// interval is the time between the starts of two rounds after failures
// failed rounds in a row: Every, doubled per failure, at most MaxBackoff.
func interval(cfg Config, failures int) time.Duration {
	d := cfg.Every
	for range failures {
		if d >= cfg.MaxBackoff {
			break
		}
		d *= 2
	}
	return min(d, cfg.MaxBackoff)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
