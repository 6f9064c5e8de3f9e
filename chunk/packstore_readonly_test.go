package chunk_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ntc-project/ntc/chunk"
)

// TestReadOnlyPackStoreBesideAWriter reads a store its writer still holds
// open: every chunk synced before the open is there and verified, a torn
// record at the tail is skipped, writes are refused, and chunks appended
// later appear after a reopen.
func TestReadOnlyPackStoreBesideAWriter(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	w, err := chunk.OpenPackStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	put := func(i int) chunk.ID {
		t.Helper()
		b := fmt.Appendf(nil, "chunk %d %0200d", i, i) // compressible: stored as zstd
		if i%2 == 1 {
			b = fmt.Appendf(nil, "c%d", i) // tiny: stored raw
		}
		id := chunk.Sum(b)
		if err := w.Put(ctx, id, b); err != nil {
			t.Fatal(err)
		}
		return id
	}
	var ids []chunk.ID
	for i := range 200 {
		ids = append(ids, put(i))
	}
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// An append in progress, as the reader may find it.
	f, err := os.OpenFile(filepath.Join(dir, "packs", "pack-000001.dat"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("NTCK\x01\x02\x03"))
	f.Close()

	r, err := chunk.OpenPackStoreReadOnly(dir)
	if err != nil {
		t.Fatalf("open for reading beside the writer: %v", err)
	}
	defer r.Close()
	if r.Len() != len(ids) {
		t.Fatalf("reader sees %d chunks, want %d", r.Len(), len(ids))
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			want, err := w.Get(ctx, id)
			if err != nil {
				t.Error(err)
				return
			}
			got, err := r.Get(ctx, id)
			if err != nil || string(got) != string(want) {
				t.Errorf("Get %s: %q, %v", id.Short(), got, err)
			}
		})
	}
	wg.Wait()

	b := []byte("refused")
	if err := r.Put(ctx, chunk.Sum(b), b); !errors.Is(err, chunk.ErrReadOnly) {
		t.Errorf("Put on a read-only store = %v, want ErrReadOnly", err)
	}
	if ok, _ := r.Has(ctx, chunk.Sum(b)); ok {
		t.Error("the refused chunk is held")
	}

	later := put(1000)
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, later); !errors.Is(err, chunk.ErrChunkMissing) {
		t.Errorf("a chunk appended after the open: %v, want ErrChunkMissing", err)
	}
	r2, err := chunk.OpenPackStoreReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if _, err := r2.Get(ctx, later); err != nil {
		t.Errorf("a chunk appended before the reopen: %v", err)
	}
}

func TestReadOnlyPackStoreVerifies(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	w, err := chunk.OpenPackStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte("a chunk that will be damaged on disk")
	if err := w.Put(ctx, chunk.Sum(b), b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "packs", "pack-000001.dat")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-1] ^= 1
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := chunk.OpenPackStoreReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var inv *chunk.InvalidChunkError
	if _, err := r.Get(ctx, chunk.Sum(b)); !errors.As(err, &inv) {
		t.Errorf("Get of a damaged chunk = %v, want InvalidChunkError", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := chunk.OpenPackStoreReadOnly(filepath.Join(dir, "absent")); err == nil {
		t.Error("opened a store that does not exist")
	}
}
