package sync

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/semaphore"
)

// Limits bound what one push, and one peer, may cost a receiver. A zero
// field takes its default (see DefaultLimits); Memory 0 means no bound.
type Limits struct {
	// Memory bounds the bytes every push together holds in memory: frame
	// buffers, decompressed chunks, the entries of the offered images and
	// of their base. What a push cannot reserve within half of Stall
	// fails it with ErrLimit (before its peer would look stalled). 0: no
	// bound.
	Memory int64
	// PeerMemory bounds one peer's pushes together (0: Memory), so that
	// one peer cannot take what another's push needs.
	PeerMemory int64
	// PushesPerPeer bounds a peer's pushes in progress at once.
	PushesPerPeer int
	// Stall ends a push whose peer sends nothing the receiver waits for,
	// or reads nothing it is sent, for this long; the push's set lock and
	// its hold on garbage collection go with it.
	Stall time.Duration
	// MaxEntries bounds the entries of one offered image (runs of zero
	// entries count once: they are merged as they arrive).
	MaxEntries int
	// MaxOpsBytes bounds the ops frames of one offer together.
	MaxOpsBytes int64
	// MaxChunk bounds the chunk size an offer may declare.
	MaxChunk int
	// MaxImages bounds the images of one version.
	MaxImages int
}

// DefaultLimits are what a zero Limits field takes.
var DefaultLimits = Limits{
	PushesPerPeer: 4,
	Stall:         60 * time.Second,
	MaxEntries:    1 << 24,
	MaxOpsBytes:   1 << 30,
	MaxChunk:      16 << 20,
	MaxImages:     1024,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.PeerMemory <= 0 || (l.Memory > 0 && l.PeerMemory > l.Memory) {
		l.PeerMemory = l.Memory
	}
	if l.PushesPerPeer <= 0 {
		l.PushesPerPeer = d.PushesPerPeer
	}
	if l.Stall <= 0 {
		l.Stall = d.Stall
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	if l.MaxOpsBytes <= 0 {
		l.MaxOpsBytes = d.MaxOpsBytes
	}
	if l.MaxChunk <= 0 {
		l.MaxChunk = d.MaxChunk
	}
	if l.MaxImages <= 0 {
		l.MaxImages = d.MaxImages
	}
	return l
}

// ErrLimit reports a push that needs more than the receiver's limits allow.
var ErrLimit = errors.New("the push exceeds a limit of the receiver")

// ErrStalled reports a peer that stopped sending (or reading) mid-push.
var ErrStalled = errors.New("the peer stopped making progress")

// newChunkCost is what the receiver charges per new chunk of an offer:
// its place in the want list (64 bytes), the set of IDs seen and the
// staged image's map (estimated from Go's map layout: about 128 bytes).
// Entries themselves are charged by their size (entrySize).
const newChunkCost = 192

// budget is the receiver's memory shared by every push: a global pool and
// one per peer. Each push reserves what it buffers from an account before
// it buffers it.
type budget struct {
	global *semaphore.Weighted
	size   int64
	peer   int64
	wait   time.Duration
}

func newBudget(l Limits) *budget {
	// A push waiting for memory reads nothing meanwhile, so its peer
	// looks stalled after Stall: give up on the memory well before, so
	// that the push ends with the condition that holds (ErrLimit), not
	// with ErrStalled blaming the peer.
	b := &budget{size: l.Memory, peer: l.PeerMemory, wait: l.Stall / 2}
	if l.Memory > 0 {
		b.global = semaphore.NewWeighted(l.Memory)
	}
	return b
}

// account is one push's share of a budget: what it holds, released when
// the push ends.
type account struct {
	b    *budget
	peer *semaphore.Weighted // the peer's pool; nil: no bound
	done <-chan struct{}     // the push ended: waits stop
	held chan int64          // one slot: the bytes held (a lock that carries them)
}

func (b *budget) open(peer *semaphore.Weighted, done <-chan struct{}) *account {
	a := &account{b: b, peer: peer, done: done, held: make(chan int64, 1)}
	a.held <- 0
	return a
}

// reserve takes n bytes from the peer's and the global pool, waiting at
// most the budget's wait for them (or until the push ends).
func (a *account) reserve(n int64, what string) error {
	if a == nil || n <= 0 || a.b.global == nil {
		return nil
	}
	if n > a.b.peer {
		return fmt.Errorf("%w: %s needs %d MiB of memory, over the receiver's %d MiB per peer", ErrLimit, what, n>>20, a.b.peer>>20)
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.b.wait)
	defer cancel()
	go func() {
		select {
		case <-a.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	if a.peer != nil {
		if err := a.peer.Acquire(ctx, n); err != nil {
			return fmt.Errorf("%w: %s: no memory for %d KiB within %s (this peer's pushes hold its share)", ErrLimit, what, n>>10, a.b.wait)
		}
	}
	if err := a.b.global.Acquire(ctx, n); err != nil {
		if a.peer != nil {
			a.peer.Release(n)
		}
		return fmt.Errorf("%w: %s: no memory for %d KiB within %s (other pushes hold it)", ErrLimit, what, n>>10, a.b.wait)
	}
	a.held <- <-a.held + n
	return nil
}

// free gives n bytes back.
func (a *account) free(n int64) {
	if a == nil || n <= 0 || a.b.global == nil {
		return
	}
	h := <-a.held
	n = min(n, h)
	a.held <- h - n
	a.b.global.Release(n)
	if a.peer != nil {
		a.peer.Release(n)
	}
}

// close gives back everything the account still holds.
func (a *account) close() {
	if a == nil {
		return
	}
	h := <-a.held
	a.held <- h
	a.free(h)
}
