package chunk

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// sidecarStore fills a store in dir with n random chunks over packs of
// about 64 KiB and closes it; it returns the chunks by ID.
func sidecarStore(t *testing.T, dir string, n int) map[ID][]byte {
	t.Helper()
	s, err := OpenPackStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.target = 64 << 10
	r := rand.New(rand.NewPCG(9, uint64(n)))
	chunks := map[ID][]byte{}
	for range n {
		b := make([]byte, 1000+r.IntN(9000))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		id := Sum(b)
		chunks[id] = b
		if err := s.Put(context.Background(), id, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return chunks
}

func assertHolds(t *testing.T, s *ReadOnlyPackStore, chunks map[ID][]byte) {
	t.Helper()
	if n := s.Len(); n != len(chunks) {
		t.Fatalf("store holds %d chunks, want %d", n, len(chunks))
	}
	for id, want := range chunks {
		got, err := s.Get(context.Background(), id)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("chunk %s: %v", id.Short(), err)
		}
	}
}

// TestSidecars: Close writes a sidecar per pack; opening with them, without
// them, with a damaged one and with one that covers only part of its pack
// gives the same chunks.
func TestSidecars(t *testing.T) {
	dir := t.TempDir()
	chunks := sidecarStore(t, dir, 60)
	packs, _ := filepath.Glob(filepath.Join(dir, "packs", "pack-*.dat"))
	hdrs, _ := filepath.Glob(filepath.Join(dir, "packs", "pack-*.hdr"))
	if len(packs) < 3 || len(hdrs) != len(packs) {
		t.Fatalf("%d packs, %d sidecars", len(packs), len(hdrs))
	}
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T)
	}{
		{"sidecars", func(*testing.T) {}},
		{"damaged sidecar", func(t *testing.T) {
			b, _ := os.ReadFile(hdrs[1])
			b[len(b)/2] ^= 1
			os.WriteFile(hdrs[1], b, 0o644)
		}},
		{"no sidecars", func(t *testing.T) {
			for _, h := range hdrs {
				os.Remove(h)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spoil(t)
			r, err := OpenPackStoreReadOnly(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			assertHolds(t, r, chunks)
		})
	}

	// A sidecar covering part of its pack: the writer appends after it
	// without closing (as a crash would leave it); a reader scans the rest.
	dir = t.TempDir()
	chunks = sidecarStore(t, dir, 3) // one pack, with its sidecar
	w, err := OpenPackStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	b := []byte("appended after the sidecar was written")
	chunks[Sum(b)] = b
	if err := w.Put(context.Background(), Sum(b), b); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := OpenPackStoreReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	assertHolds(t, r, chunks)
}

// TestSidecarsForgetDroppedChunks: chunks Compact dropped from packs that
// stay no longer come back when the store is reopened.
func TestSidecarsForgetDroppedChunks(t *testing.T) {
	dir := t.TempDir()
	chunks := sidecarStore(t, dir, 40)
	s, err := OpenPackStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	kept := map[ID][]byte{}
	i := 0
	for id, b := range chunks {
		if i%4 != 0 { // 1 in 4 dropped: no pack is half dead
			kept[id] = b
		}
		i++
	}
	if _, err := s.Compact(context.Background(), func(id ID) bool { _, ok := kept[id]; return ok }, 0.5); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := OpenPackStoreReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	assertHolds(t, r, kept)
}

func FuzzDecodeSidecar(f *testing.F) {
	f.Add(encodeSidecar(0, nil))
	f.Add(encodeSidecar(1<<20, []sidecarRec{
		{Sum([]byte("a")), packLoc{codec: codecRaw, length: 100, off: packHeaderLen}},
		{Sum([]byte("b")), packLoc{codec: codecZstd, length: 5000, off: 2*packHeaderLen + 100}},
	}))
	f.Fuzz(func(t *testing.T, b []byte) {
		covered, recs, err := decodeSidecar(b, 0)
		if err != nil {
			return
		}
		if again := encodeSidecar(covered, recs); !bytes.Equal(again, b) {
			t.Fatalf("decode then encode changed the sidecar")
		}
	})
}
