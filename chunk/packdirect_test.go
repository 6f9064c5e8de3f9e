package chunk_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	gosync "sync"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/chunk"
)

// Chunks of any length appended past several buffers' worth go to the
// pack by direct I/O in whole blocks, the rest through the page cache:
// every chunk reads back while others are appended (the end of one a
// block write cut comes from the buffer), after a sync, and after the
// store is opened again, its pack whole (no torn tail), also when appends
// go on from an unaligned end.
func TestPackStoreDirectWrites(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	r := rand.New(rand.NewPCG(3, 3))
	var mu gosync.Mutex
	chunks := map[chunk.ID][]byte{}
	var ids []chunk.ID
	put := func(s *chunk.PackStore, n int) {
		t.Helper()
		stop := make(chan struct{})
		var g errgroup.Group
		g.Go(func() error { // reads what was put, meanwhile
			rr := rand.New(rand.NewPCG(4, 4))
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				mu.Lock()
				if len(ids) == 0 {
					mu.Unlock()
					continue
				}
				id := ids[rr.IntN(len(ids))]
				want := chunks[id]
				mu.Unlock()
				if err := getEqual(ctx, s, id, want); err != nil {
					return err
				}
			}
		})
		for range n {
			b := make([]byte, 1+r.IntN(70000))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			id := chunk.Sum(b)
			if err := s.PutVerified(ctx, id, b, nil, true); err != nil {
				t.Fatal(err)
			}
			if err := getEqual(ctx, s, id, b); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			chunks[id] = b
			ids = append(ids, id)
			mu.Unlock()
		}
		close(stop)
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	reopen := func(s *chunk.PackStore) *chunk.PackStore {
		t.Helper()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, err := chunk.OpenPackStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		if s.Len() != len(chunks) {
			t.Fatalf("reopened store holds %d chunks, want %d", s.Len(), len(chunks))
		}
		for id, b := range chunks {
			if err := getEqual(ctx, s, id, b); err != nil {
				t.Fatal(err)
			}
		}
		packs, _ := filepath.Glob(filepath.Join(dir, "packs", "pack-*.dat"))
		if len(packs) != 1 {
			t.Fatalf("packs after reopening: %v, want the first only (a torn tail starts another)", packs)
		}
		return s
	}
	s, err := chunk.OpenPackStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	put(s, 400) // ≈14 MiB: three buffers and more
	if !chunk.WritesDirect(s) {
		t.Logf("%s offers no direct I/O: the page cache only", dir)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	put(s, 150) // on from the end the sync wrote
	s = reopen(s)
	put(s, 200) // on from an unaligned end
	s = reopen(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "packs", "pack-000001.dat")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pack file: %v, %v", fi, err)
	}
}

func getEqual(ctx context.Context, s chunk.Store, id chunk.ID, want []byte) error {
	got, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return &chunk.InvalidChunkError{ID: id, Where: "read back different bytes"}
	}
	return nil
}
