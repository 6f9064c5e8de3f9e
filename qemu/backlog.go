package qemu

import (
	"context"
	"sync"
)

// Backlog keeps the newest items of what QEMU says as it comes (a Session's
// events, a guest's console lines) for waiters that scan it from a mark:
// an item that came before the waiter looked is found all the same. Items
// are numbered from 0 in arrival order; once more than the limit are kept, the
// older half is dropped. Methods are safe for concurrent use.
type Backlog[T any] struct {
	limit int

	mu      sync.Mutex
	items   []T
	base    int           // items dropped from the front
	changed chan struct{} // closed and replaced on every Add
	ended   chan struct{} // closed by End
	err     error         // why it ended
}

// NewBacklog returns a Backlog keeping up to limit items (at least 2).
func NewBacklog[T any](limit int) *Backlog[T] {
	return &Backlog[T]{limit: max(limit, 2), changed: make(chan struct{}), ended: make(chan struct{})}
}

// Add appends v and wakes the waiters.
func (b *Backlog[T]) Add(v T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.items) >= b.limit {
		half := b.limit / 2
		b.items = append(b.items[:0], b.items[half:]...)
		b.base += half
	}
	b.items = append(b.items, v)
	close(b.changed)
	b.changed = make(chan struct{})
}

// End says no more items will come: waiters that run out of items get err.
// Only the first End counts.
func (b *Backlog[T]) End(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.ended:
	default:
		b.err = err
		close(b.ended)
	}
}

// Ended is closed by End.
func (b *Backlog[T]) Ended() <-chan struct{} { return b.ended }

// Mark is the number of the next item: Wait from it sees only later ones.
func (b *Backlog[T]) Mark() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.base + len(b.items)
}

// Items returns the items kept, oldest first.
func (b *Backlog[T]) Items() []T {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]T(nil), b.items...)
}

// Wait waits for an item numbered from or later for which match is true and
// returns it with the mark just past it. It fails with End's error once the
// backlog has ended and holds no such item, or with ctx's cause.
func (b *Backlog[T]) Wait(ctx context.Context, from int, match func(T) bool) (T, int, error) {
	for {
		b.mu.Lock()
		for i := max(from, b.base) - b.base; i < len(b.items); i++ {
			if match(b.items[i]) {
				v, n := b.items[i], b.base+i+1
				b.mu.Unlock()
				return v, n, nil
			}
		}
		from = b.base + len(b.items)
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
			continue
		case <-ctx.Done():
			var zero T
			return zero, from, context.Cause(ctx)
		case <-b.ended:
		}
		// Items that came with the end are in already.
		b.mu.Lock()
		more, err := b.base+len(b.items) > from, b.err
		b.mu.Unlock()
		if !more {
			var zero T
			return zero, from, err
		}
	}
}
