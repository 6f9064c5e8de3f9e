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

// ramSink receives the pages of a migration stream as migstream.Parse reads
// it: each page is hashed into its block's chunk.PageIndex at once, and a
// page whose content is new to this checkpoint goes to workers that store it
// unless the store already holds it. Nothing of the stream is kept besides
// the indexes; a full queue slows the parser, which slows QEMU's sender. A
// page sent twice (a precopy migration resends pages the guest dirtied) is
// indexed with its last content; earlier contents may reach the store too.
type ramSink struct {
	store  chunk.Store
	blocks []*ramBlock
	seen   map[chunk.ID]struct{} // contents queued this checkpoint (parser goroutine only)
	jobs   chan pageJob
	pool   sync.Pool
	g      *errgroup.Group
	gctx   context.Context

	mu  sync.Mutex
	new map[chunk.ID]struct{} // contents stored by this sink
}

type ramBlock struct {
	name   string
	length int64
	idx    *chunk.PageIndex
}

type pageJob struct {
	id   chunk.ID
	data *[]byte
}

var _ migstream.Sink = (*ramSink)(nil)

// newRAMSink starts workers storing pages into store. Call wait once
// parsing is over.
func newRAMSink(ctx context.Context, store chunk.Store, workers int) *ramSink {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	g, gctx := errgroup.WithContext(ctx)
	s := &ramSink{store: store, seen: make(map[chunk.ID]struct{}), jobs: make(chan pageJob, 256), g: g, gctx: gctx}
	s.pool.New = func() any { b := make([]byte, chunk.BlockSize); return &b }
	for range workers {
		g.Go(s.work)
	}
	return s
}

func (s *ramSink) work() error {
	for j := range s.jobs {
		err := s.put(j)
		s.pool.Put(j.data)
		if err != nil {
			// Keep draining so the parser never blocks on a dead queue.
			for j := range s.jobs {
				s.pool.Put(j.data)
			}
			return err
		}
	}
	return nil
}

func (s *ramSink) put(j pageJob) error {
	has, err := s.store.Has(s.gctx, j.id)
	if err != nil {
		return fmt.Errorf("store RAM page: %w", err)
	}
	if has {
		return nil
	}
	if err := s.store.Put(s.gctx, j.id, *j.data); err != nil {
		return fmt.Errorf("store RAM page: %w", err)
	}
	s.mu.Lock()
	if s.new == nil {
		s.new = make(map[chunk.ID]struct{})
	}
	s.new[j.id] = struct{}{}
	s.mu.Unlock()
	return nil
}

// Block is called by Parse for every RAM block.
func (s *ramSink) Block(name string, length int64) (io.WriterAt, error) {
	b := &ramBlock{name: name, length: length, idx: chunk.NewPageIndex(length)}
	s.blocks = append(s.blocks, b)
	return &ramWriter{s: s, b: b}, nil
}

// newIDs returns the page contents this sink added to the store. Call it
// after finish.
func (s *ramSink) newIDs() map[chunk.ID]struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.new
}

// finish waits for the workers after the parser is done (or failed).
func (s *ramSink) finish() error {
	close(s.jobs)
	return s.g.Wait()
}

type ramWriter struct {
	s *ramSink
	b *ramBlock
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
	if e.Zero {
		return len(p), nil
	}
	if _, ok := s.seen[e.ID]; ok {
		return len(p), nil
	}
	s.seen[e.ID] = struct{}{}
	buf := s.pool.Get().(*[]byte)
	copy(*buf, p)
	select {
	case s.jobs <- pageJob{id: e.ID, data: buf}:
	case <-s.gctx.Done():
		s.pool.Put(buf)
		return 0, context.Cause(s.gctx)
	}
	return len(p), nil
}

func (w *ramWriter) WriteZeroAt(off, n int64) error {
	for o := off; o < off+n; o += chunk.BlockSize {
		if err := w.b.idx.SetZero(o); err != nil {
			return fmt.Errorf("RAM block %q: %w", w.b.name, err)
		}
	}
	return nil
}
