package capture

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/capture/migstream"
	"github.com/ntc-project/ntc/chunk"
)

// DefaultRAMBuffer is how much page data a checkpoint holds in memory while
// the store catches up (Config.RAMBuffer).
const DefaultRAMBuffer = 128 << 20

// ramSink receives the pages of a migration stream as migstream.Parse reads
// it. Each page is hashed into its block's chunk.PageIndex at once; a page
// whose content the store may lack waits in a bounded buffer for workers
// that store it. Reading the stream thus runs at hashing speed, not at the
// store's (which decides how long a precopy migration keeps the guest
// paused at the end), until the buffer is full. A page sent again while it
// still waits (a precopy migration resends what the guest dirtied) replaces
// the waiting copy, so only its last content is stored; a page sent again
// after it was stored leaves its earlier content in the store. Nothing of
// the stream is kept besides the indexes.
type ramSink struct {
	store  chunk.Store
	blocks []*ramBlock
	g      *errgroup.Group
	gctx   context.Context
	stop   func() bool
	pool   sync.Pool

	mu         sync.Mutex
	work       *sync.Cond // workers wait for pages
	room       *sync.Cond // the parser waits for room in the buffer
	full       bool       // the parser waits on room
	queue      []pageKey  // pages waiting, oldest first; a key may have gone stale
	waiting    map[pageKey]*pageJob
	maxWaiting int
	closed     bool
	err        error
	claimed    map[chunk.ID]struct{} // contents stored, being stored, or found in the store
	added      map[chunk.ID]struct{} // contents this sink added to the store
}

type ramBlock struct {
	name   string
	length int64
	idx    *chunk.PageIndex
}

type pageKey struct {
	block int
	page  int64
}

type pageJob struct {
	id   chunk.ID
	data *[]byte
}

var _ migstream.Sink = (*ramSink)(nil)

// newRAMSink starts workers storing pages into store, buffering up to
// buffer bytes of pages. Call finish once parsing is over.
func newRAMSink(ctx context.Context, store chunk.Store, workers int, buffer int64) *ramSink {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if buffer <= 0 {
		buffer = DefaultRAMBuffer
	}
	g, gctx := errgroup.WithContext(ctx)
	s := &ramSink{
		store: store, g: g, gctx: gctx,
		waiting: map[pageKey]*pageJob{}, maxWaiting: int(max(buffer/chunk.BlockSize, 1)),
		claimed: map[chunk.ID]struct{}{}, added: map[chunk.ID]struct{}{},
	}
	s.work, s.room = sync.NewCond(&s.mu), sync.NewCond(&s.mu)
	s.pool.New = func() any { b := make([]byte, chunk.BlockSize); return &b }
	s.stop = context.AfterFunc(gctx, func() {
		s.mu.Lock()
		s.wakeAll()
		s.mu.Unlock()
	})
	for range workers {
		g.Go(s.storePages)
	}
	return s
}

func (s *ramSink) wakeAll() {
	s.work.Broadcast()
	s.room.Broadcast()
}

// roomMade wakes the parser if it waits for room. The caller holds s.mu.
func (s *ramSink) roomMade() {
	if s.full {
		s.room.Signal()
	}
}

// storePages stores waiting pages until the sink is finished or fails.
func (s *ramSink) storePages() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		for len(s.queue) == 0 && !s.closed && s.err == nil && s.gctx.Err() == nil {
			s.work.Wait()
		}
		if s.err != nil || s.gctx.Err() != nil || len(s.queue) == 0 {
			return s.err
		}
		key := s.queue[0]
		s.queue = s.queue[1:]
		j := s.waiting[key]
		if j == nil {
			continue // stale: the page became zero or already-stored content
		}
		delete(s.waiting, key)
		s.roomMade()
		if _, ok := s.claimed[j.id]; ok {
			s.pool.Put(j.data)
			continue
		}
		s.claimed[j.id] = struct{}{}
		s.mu.Unlock()
		added, err := s.put(j)
		s.pool.Put(j.data)
		s.mu.Lock()
		if err != nil {
			if s.err == nil {
				s.err = err
			}
			s.wakeAll()
			return err
		}
		if added {
			s.added[j.id] = struct{}{}
		}
	}
}

// put stores a page unless the store holds it, and says whether it did.
func (s *ramSink) put(j *pageJob) (bool, error) {
	has, err := s.store.Has(s.gctx, j.id)
	if err != nil {
		return false, fmt.Errorf("store RAM page: %w", err)
	}
	if has {
		return false, nil
	}
	if err := putHashed(s.gctx, s.store, j.id, *j.data); err != nil {
		return false, fmt.Errorf("store RAM page: %w", err)
	}
	return true, nil
}

// Block is called by Parse for every RAM block.
func (s *ramSink) Block(name string, length int64) (io.WriterAt, error) {
	b := &ramBlock{name: name, length: length, idx: chunk.NewPageIndex(length)}
	s.blocks = append(s.blocks, b)
	return &ramWriter{s: s, b: b, n: len(s.blocks) - 1}, nil
}

// newIDs returns the page contents this sink added to the store. Call it
// after finish.
func (s *ramSink) newIDs() map[chunk.ID]struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.added
}

// finish stores what still waits and stops the workers.
func (s *ramSink) finish() error {
	s.mu.Lock()
	s.closed = true
	s.wakeAll()
	s.mu.Unlock()
	err := s.g.Wait()
	s.stop()
	return err
}

type ramWriter struct {
	s *ramSink
	b *ramBlock
	n int // block number
}

var _ migstream.ZeroWriterAt = (*ramWriter)(nil)

func (w *ramWriter) WriteAt(p []byte, off int64) (int, error) {
	s := w.s
	if len(p) != chunk.BlockSize {
		return 0, fmt.Errorf("RAM block %q: %d-byte page, ntc indexes 4 KiB pages", w.b.name, len(p))
	}
	e, err := w.b.idx.Set(off, p)
	if err != nil {
		return 0, fmt.Errorf("RAM block %q: %w", w.b.name, err)
	}
	key := pageKey{w.n, off / chunk.BlockSize}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Zero {
		s.drop(key)
		return len(p), nil
	}
	if _, ok := s.claimed[e.ID]; ok {
		s.drop(key)
		return len(p), nil
	}
	if j := s.waiting[key]; j != nil {
		copy(*j.data, p) // resent before it was stored: keep the last content
		j.id = e.ID
		return len(p), nil
	}
	for len(s.waiting) >= s.maxWaiting && s.err == nil && s.gctx.Err() == nil {
		s.full = true
		s.room.Wait()
		s.full = false
	}
	if s.err != nil {
		return 0, s.err
	}
	if err := s.gctx.Err(); err != nil {
		return 0, context.Cause(s.gctx)
	}
	buf := s.pool.Get().(*[]byte)
	copy(*buf, p)
	s.waiting[key] = &pageJob{id: e.ID, data: buf}
	s.queue = append(s.queue, key)
	s.work.Signal()
	return len(p), nil
}

// drop forgets a waiting copy of a page whose content needs no storing now.
// The caller holds s.mu.
func (s *ramSink) drop(key pageKey) {
	if j := s.waiting[key]; j != nil {
		delete(s.waiting, key)
		s.pool.Put(j.data)
	}
}

func (w *ramWriter) WriteZeroAt(off, n int64) error {
	for o := off; o < off+n; o += chunk.BlockSize {
		if err := w.b.idx.SetZero(o); err != nil {
			return fmt.Errorf("RAM block %q: %w", w.b.name, err)
		}
		w.s.mu.Lock()
		w.s.drop(pageKey{w.n, o / chunk.BlockSize})
		w.s.mu.Unlock()
	}
	return nil
}

// putHashed stores data as chunk id, which the caller has just computed
// from data: a store that can skip hashing it again does.
func putHashed(ctx context.Context, store chunk.Store, id chunk.ID, data []byte) error {
	if ps, ok := store.(verifiedPutter); ok {
		return ps.PutVerified(ctx, id, data, nil, false)
	}
	return store.Put(ctx, id, data)
}

// verifiedPutter is a store that takes chunks already hashed
// (chunk.PackStore).
type verifiedPutter interface {
	PutVerified(ctx context.Context, id chunk.ID, data, zstd []byte, raw bool) error
}
