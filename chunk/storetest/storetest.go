// Package storetest is the conformance suite every chunk.Store must pass.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/ntc-project/ntc/chunk"
)

// Harness gives the suite a fresh store and, optionally, a way to damage a
// stored chunk behind the store's back.
type Harness struct {
	New func(t *testing.T) chunk.Store
	// Corrupt, if set, damages the stored copy of id.
	Corrupt func(t *testing.T, s chunk.Store, id chunk.ID)
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	ctx := t.Context()
	data := []byte("the quick brown fox jumps over the lazy dog, again and again and again")
	id := chunk.Sum(data)

	t.Run("PutGetHas", func(t *testing.T) {
		s := h.New(t)
		if ok, err := s.Has(ctx, id); err != nil || ok {
			t.Fatalf("Has before Put = %v, %v", ok, err)
		}
		if err := s.Put(ctx, id, data); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, id, data); err != nil {
			t.Fatalf("second Put: %v", err)
		}
		if ok, err := s.Has(ctx, id); err != nil || !ok {
			t.Fatalf("Has after Put = %v, %v", ok, err)
		}
		got, err := s.Get(ctx, id)
		if err != nil || string(got) != string(data) {
			t.Fatalf("Get = %q, %v", got, err)
		}
	})
	t.Run("Missing", func(t *testing.T) {
		_, err := h.New(t).Get(ctx, chunk.Sum([]byte("absent")))
		if !errors.Is(err, chunk.ErrChunkMissing) {
			t.Fatalf("Get of a missing chunk = %v, want ErrChunkMissing", err)
		}
	})
	t.Run("PutWrongID", func(t *testing.T) {
		s := h.New(t)
		bad := chunk.Sum([]byte("something else"))
		var inv *chunk.InvalidChunkError
		if err := s.Put(ctx, bad, data); !errors.As(err, &inv) || inv.ID != bad || inv.Sum != id {
			t.Fatalf("Put under the wrong ID = %v, want InvalidChunkError", err)
		}
		if ok, _ := s.Has(ctx, bad); ok {
			t.Fatal("the refused chunk is held")
		}
	})
	t.Run("Sizes", func(t *testing.T) {
		s := h.New(t)
		for _, n := range []int{0, 1, 4096, 1 << 20} {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(i * 7 / 5)
			}
			if err := s.Put(ctx, chunk.Sum(b), b); err != nil {
				t.Fatalf("Put %d bytes: %v", n, err)
			}
			got, err := s.Get(ctx, chunk.Sum(b))
			if err != nil || string(got) != string(b) {
				t.Fatalf("Get %d bytes: %d bytes, %v", n, len(got), err)
			}
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		s := h.New(t)
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := range 64 {
			wg.Go(func() {
				b := []byte(fmt.Sprintf("chunk %d", i%8))
				if err := s.Put(ctx, chunk.Sum(b), b); err != nil {
					errs <- err
					return
				}
				if got, err := s.Get(ctx, chunk.Sum(b)); err != nil || string(got) != string(b) {
					errs <- fmt.Errorf("get: %q, %v", got, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("Cancelled", func(t *testing.T) {
		s := h.New(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Put(cctx, id, data); !errors.Is(err, context.Canceled) {
			t.Fatalf("Put with a cancelled context = %v", err)
		}
		if _, err := s.Get(cctx, id); !errors.Is(err, context.Canceled) {
			t.Fatalf("Get with a cancelled context = %v", err)
		}
	})
	if h.Corrupt != nil {
		t.Run("Damaged", func(t *testing.T) {
			s := h.New(t)
			if err := s.Put(ctx, id, data); err != nil {
				t.Fatal(err)
			}
			h.Corrupt(t, s, id)
			got, err := s.Get(ctx, id)
			var inv *chunk.InvalidChunkError
			if !errors.As(err, &inv) || inv.ID != id {
				t.Fatalf("Get of a damaged chunk = %q, %v; want InvalidChunkError for %s", got, err, id.Short())
			}
			if got != nil {
				t.Fatal("damaged content returned")
			}
		})
	}
}
