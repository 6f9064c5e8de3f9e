package replicate

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"
)

// fakeClock is time that moves only when told: by Sleep, and by the fakes
// for the work they pretend to do.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return ctx.Err()
}

// step is what a fake does in one call: take some time, then fail or not.
type step struct {
	took time.Duration
	err  error
}

// fakeCheckpointer numbers checkpoints from 1; call i does steps[i] (the
// last step repeats).
type fakeCheckpointer struct {
	clock *fakeClock
	steps []step
	mu    sync.Mutex
	calls int
	seq   int
}

func (f *fakeCheckpointer) Checkpoint(ctx context.Context) (Checkpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.steps[min(f.calls, len(f.steps)-1)]
	f.calls++
	f.clock.advance(s.took)
	if s.err != nil {
		return Checkpoint{}, s.err
	}
	f.seq++
	return Checkpoint{Seq: f.seq, GuestPause: 30 * time.Millisecond}, nil
}

type fakePusher struct {
	clock  *fakeClock
	steps  []step
	mu     sync.Mutex
	pushed []int // seqs, committed or not
	// block, if set, makes a push wait for ctx to end.
	block chan struct{}
}

func (f *fakePusher) Push(ctx context.Context, seq int) (Pushed, error) {
	f.mu.Lock()
	s := f.steps[min(len(f.pushed), len(f.steps)-1)]
	f.pushed = append(f.pushed, seq)
	f.clock.advance(s.took)
	f.mu.Unlock()
	if f.block != nil {
		close(f.block)
		<-ctx.Done()
		return Pushed{}, fmt.Errorf("push: %w", ctx.Err())
	}
	if s.err != nil {
		return Pushed{}, s.err
	}
	return Pushed{Version: uint64(seq), BytesSent: 1000, ChunksSent: 3}, nil
}

type pruneCall struct{ keep, acked int }

type fakePruner struct {
	mu    sync.Mutex
	calls []pruneCall
}

func (f *fakePruner) Prune(ctx context.Context, keep, acked int) ([]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, pruneCall{keep, acked})
	return nil, nil
}

// runRounds runs cfg until n rounds were reported and returns them with
// Run's error (context.Canceled when it stopped after n rounds).
func runRounds(t *testing.T, cfg Config, n int) ([]Round, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var rounds []Round
	cfg.Report = func(r Round) {
		rounds = append(rounds, r)
		if len(rounds) == n {
			cancel()
		}
	}
	err := Run(ctx, cfg)
	return rounds, err
}

var errLinkDown = errors.New("link down")

// TestReplicateInterval: rounds start Every apart from one checkpoint's start to
// the next; one that takes longer is followed at once; the lag is the time
// from the checkpoint's start to the commit.
func TestReplicateInterval(t *testing.T) {
	clk := newFakeClock()
	cp := &fakeCheckpointer{clock: clk, steps: []step{{took: time.Second}}}
	p := &fakePusher{clock: clk, steps: []step{{took: 2 * time.Second}, {took: 2 * time.Second}, {took: 7 * time.Second}, {took: 500 * time.Millisecond}}}
	t0 := clk.Now()
	rounds, err := runRounds(t, Config{Checkpointer: cp, Pusher: p, Every: 5 * time.Second, Clock: clk}, 4)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v, want context.Canceled", err)
	}
	wantStart := []time.Duration{0, 5 * time.Second, 10 * time.Second, 18 * time.Second}
	wantLag := []time.Duration{3 * time.Second, 3 * time.Second, 8 * time.Second, 1500 * time.Millisecond}
	wantNext := []time.Duration{2 * time.Second, 2 * time.Second, 0, 3500 * time.Millisecond}
	for i, r := range rounds {
		if got := r.Start.Sub(t0); got != wantStart[i] || r.Lag != wantLag[i] || r.Next != wantNext[i] || r.Duration != wantLag[i] {
			t.Errorf("round %d: start +%v, lag %v, duration %v, next in %v; want +%v, %v, %v, %v",
				r.N, got, r.Lag, r.Duration, r.Next, wantStart[i], wantLag[i], wantLag[i], wantNext[i])
		}
		if r.Seq != i+1 || !r.Committed || r.Acked != i+1 || r.Err != nil || r.BytesSent != 1000 || r.ChunksSent != 3 ||
			r.GuestPause != 30*time.Millisecond || r.CheckpointTime != time.Second {
			t.Errorf("round %d: %+v", r.N, r)
		}
	}
	if !reflect.DeepEqual(clk.sleeps, wantNext) {
		t.Errorf("slept %v, want %v", clk.sleeps, wantNext)
	}
	if cp.calls != 4 {
		t.Errorf("%d checkpoints after 4 rounds and a cancellation", cp.calls)
	}
}

// TestReplicateBackoff: while pushes fail for a transient reason, checkpoints go
// on at a slower rate (the interval doubling up to MaxBackoff), pruning
// keeps the receiver's checkpoint, and the first push that commits brings
// the interval back.
func TestReplicateBackoff(t *testing.T) {
	clk := newFakeClock()
	cp := &fakeCheckpointer{clock: clk, steps: []step{{took: time.Second}}}
	p := &fakePusher{clock: clk, steps: []step{
		{took: time.Second},
		{took: time.Second, err: errLinkDown}, {took: time.Second, err: errLinkDown},
		{took: time.Second, err: errLinkDown}, {took: time.Second, err: errLinkDown},
		{took: time.Second},
	}}
	pr := &fakePruner{}
	cfg := Config{Checkpointer: cp, Pusher: p, Pruner: pr, Every: 5 * time.Second, Keep: 3, MaxBackoff: 30 * time.Second, Clock: clk}
	rounds, err := runRounds(t, cfg, 7)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	// Round i's interval to the next start, minus its 2 s of work.
	wantNext := []time.Duration{3, 8, 18, 28, 28, 3, 3}
	wantFailures := []int{0, 1, 2, 3, 4, 0, 0}
	wantAcked := []int{1, 1, 1, 1, 1, 6, 7}
	for i, r := range rounds {
		if r.Next != wantNext[i]*time.Second || r.Failures != wantFailures[i] || r.Acked != wantAcked[i] || r.Seq != i+1 {
			t.Errorf("round %d: next in %v, %d failures, acked %d, seq %d; want %vs, %d, %d, %d",
				r.N, r.Next, r.Failures, r.Acked, r.Seq, wantNext[i], wantFailures[i], wantAcked[i], i+1)
		}
		if failed := wantFailures[i] > 0; failed != (r.Err != nil) || failed == r.Committed || failed && !errors.Is(r.Err, errLinkDown) {
			t.Errorf("round %d: committed %v, err %v", r.N, r.Committed, r.Err)
		}
	}
	var want []pruneCall
	for _, a := range wantAcked {
		want = append(want, pruneCall{3, a})
	}
	if !reflect.DeepEqual(pr.calls, want) {
		t.Errorf("prune calls %v, want %v", pr.calls, want)
	}
}

// TestReplicateStopsOnPermanent: a permanent failure, of a push or a checkpoint,
// ends Run at once with it; transient checkpoint failures end it after
// MaxCheckpointFailures in a row.
func TestReplicateStopsOnPermanent(t *testing.T) {
	errRefused := errors.New("peer not allowed")
	errGone := errors.New("guest gone")
	for _, tc := range []struct {
		name        string
		ckpt, push  []step
		rounds      int // reported before Run ends
		checkpoints int
		want        error
	}{
		{"push refused", []step{{}}, []step{{}, {err: Permanent(errRefused)}}, 1, 2, errRefused},
		{"guest gone", []step{{}, {err: Permanent(errGone)}}, []step{{}}, 1, 2, errGone},
		{"checkpoints keep failing", []step{{}, {err: errGone}, {}, {err: errGone}, {err: errGone}, {err: errGone}}, []step{{}}, 5, 6, errGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			cp := &fakeCheckpointer{clock: clk, steps: tc.ckpt}
			p := &fakePusher{clock: clk, steps: tc.push}
			var rounds []Round
			cfg := Config{Checkpointer: cp, Pusher: p, Every: time.Second, MaxCheckpointFailures: 3, Clock: clk,
				Report: func(r Round) { rounds = append(rounds, r) }}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			err := Run(ctx, cfg)
			if !errors.Is(err, tc.want) || ctx.Err() != nil {
				t.Fatalf("Run: %v, want %v", err, tc.want)
			}
			if len(rounds) != tc.rounds || cp.calls != tc.checkpoints {
				t.Errorf("%d rounds reported, %d checkpoints; want %d, %d", len(rounds), cp.calls, tc.rounds, tc.checkpoints)
			}
		})
	}
}

// TestReplicateCancel: cancelled during a push, Run returns context.Canceled
// promptly and starts no other checkpoint; cancelled while it waits for
// the next round (real clock, a long interval), likewise.
func TestReplicateCancel(t *testing.T) {
	t.Run("during a push", func(t *testing.T) {
		clk := newFakeClock()
		cp := &fakeCheckpointer{clock: clk, steps: []step{{}}}
		p := &fakePusher{clock: clk, steps: []step{{}}, block: make(chan struct{})}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		reported := 0
		go func() {
			done <- Run(ctx, Config{Checkpointer: cp, Pusher: p, Pruner: &fakePruner{}, Every: time.Second, Clock: clk,
				Report: func(Round) { reported++ }})
		}()
		<-p.block
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
		if cp.calls != 1 || reported != 0 {
			t.Errorf("%d checkpoints, %d rounds reported after a cancelled first push", cp.calls, reported)
		}
	})
	t.Run("between rounds", func(t *testing.T) {
		cp := &fakeCheckpointer{clock: newFakeClock(), steps: []step{{}}}
		p := &fakePusher{clock: cp.clock, steps: []step{{}}}
		ctx, cancel := context.WithCancel(t.Context())
		waiting := make(chan Round, 1)
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Config{Checkpointer: cp, Pusher: p, Every: time.Hour, Report: func(r Round) { waiting <- r }})
		}()
		r := <-waiting
		if r.Next < 59*time.Minute {
			t.Errorf("next round in %v, want about an hour", r.Next)
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run still waits for the next round 30 s after the cancellation")
		}
		if cp.calls != 1 {
			t.Errorf("%d checkpoints", cp.calls)
		}
	})
}

func TestReplicateBackoffInterval(t *testing.T) {
	cfg := Config{Every: 5 * time.Second, MaxBackoff: time.Minute}
	want := []time.Duration{5, 10, 20, 40, 60, 60, 60}
	for f, w := range want {
		if got := interval(cfg, f); got != w*time.Second {
			t.Errorf("interval after %d failures: %v, want %vs", f, got, w)
		}
	}
	if got := interval(cfg, 1000); got != time.Minute {
		t.Errorf("interval after 1000 failures: %v", got)
	}
}
