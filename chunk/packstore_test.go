package chunk_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/storetest"
)

func TestPackStore(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) chunk.Store {
			s, err := chunk.OpenPackStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		Corrupt: func(t *testing.T, s chunk.Store, id chunk.ID) {
			if err := s.(*chunk.PackStore).Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(s.(*chunk.PackStore).Dir(), "packs", "pack-000001.dat")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)-1] ^= 1
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		},
	})
}

func TestPackStoreReopensAndSurvivesATornTail(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := chunk.OpenPackStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []chunk.ID
	for i := range 100 {
		b := []byte{byte(i), byte(i >> 8), 1, 2, 3}
		ids = append(ids, chunk.Sum(b))
		if err := s.Put(ctx, chunk.Sum(b), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A crash in the middle of an append leaves half a record.
	p := filepath.Join(dir, "packs", "pack-000001.dat")
	f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("NTCK\x01\x02\x03"))
	f.Close()
	s, err = chunk.OpenPackStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Len() != 100 {
		t.Fatalf("reopened store holds %d chunks, want 100", s.Len())
	}
	for _, id := range ids {
		if _, err := s.Get(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := chunk.OpenPackStore(dir); !errors.Is(err, chunk.ErrStoreBusy) {
		t.Fatalf("a second writer opened the store: %v", err)
	}
	// Appends after the torn tail are found again after another reopen.
	b := []byte("after the crash")
	if err := s.Put(ctx, chunk.Sum(b), b); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, _ = chunk.OpenPackStore(dir)
	defer s.Close()
	if got, err := s.Get(ctx, chunk.Sum(b)); err != nil || string(got) != string(b) {
		t.Fatalf("chunk written after a torn tail: %q, %v", got, err)
	}
}
