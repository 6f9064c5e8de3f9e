package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ntc-project/ntc/chunk"
	ntcsync "github.com/ntc-project/ntc/sync"
)

// TestDamagedChunkIsHealed: a byte flipped in a chunk of the receiver's
// packs that the next push needs (the same image pushed as another set,
// whose image file is written from the store) is healed within that push
// through real 'ntc serve' and 'ntc push' processes: the push succeeds,
// the image is byte-identical, 'ntc check --read-data' is clean, and what
// travels is the damaged chunk, against a same-run baseline push of the
// same image as a third set with nothing damaged.
func TestDamagedChunkIsHealed(t *testing.T) {
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serve(t, home, store, office.id)
	img := filepath.Join(t.TempDir(), "disk.img")
	data := randomFile(t, img, 8<<20, 3)
	if _, err := push(t, t.Context(), office, addr, home.id, img, "--name", "a"); err != nil {
		t.Fatal(err)
	}
	// The baseline: every chunk is held and sound.
	base, err := push(t, t.Context(), office, addr, home.id, img, "--name", "base")
	if err != nil {
		t.Fatal(err)
	}
	if base.ChunksSent != 0 || base.Healed != 0 {
		t.Fatalf("baseline push sent %d chunks, healed %d", base.ChunksSent, base.Healed)
	}

	// serve opens the store only while a push runs: the packs are at rest.
	r, err := ntcsync.OpenRepoForReading(store)
	if err != nil {
		t.Fatal(err)
	}
	x, err := r.Index("a", 1, "disk.img")
	if err != nil {
		t.Fatal(err)
	}
	e := x.Entries[len(x.Entries)/2]
	flipChunk(t, store, e.ID)
	check := func() (int, chunk.CheckReport) {
		t.Helper()
		code, out, errs := ntc(t, t.Context(), "--json", "check", "--read-data", store)
		var rep chunk.CheckReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("check printed %q (%s): %v", out, errs, err)
		}
		return code, rep
	}
	if code, rep := check(); code == 0 || !slices.Contains(rep.Damaged, e.ID) {
		t.Fatalf("the flipped chunk is not found: exit %d, %+v", code, rep)
	}

	res, err := push(t, t.Context(), office, addr, home.id, img, "--name", "b")
	if err != nil {
		t.Fatalf("push needing the damaged chunk: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(store, "sets", "b", "images", "disk.img"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("healed set's image differs from the pushed one (%v)", err)
	}
	if code, rep := check(); code != 0 || !rep.OK() || rep.Read != rep.Chunks {
		t.Fatalf("check after the heal: exit %d, %+v", code, rep)
	}
	extra := int64(res.BytesSent) - int64(base.BytesSent)
	t.Logf("healed %d chunk of %d bytes: sent %d chunk bytes (%d compressed), %d bytes on the wire against %d for the same push with nothing damaged (+%d, %.2fx the chunk)",
		res.Healed, e.Length, res.ChunkBytes, res.DataBytes, res.BytesSent, base.BytesSent, extra, float64(extra)/float64(e.Length))
	if res.Healed != 1 || res.ChunksSent != 1 || res.ChunkBytes != e.Length {
		t.Fatalf("healed %d chunks, sent %d chunks of %d bytes; want the damaged one, %d bytes", res.Healed, res.ChunksSent, res.ChunkBytes, e.Length)
	}
	// Random data does not compress: what the heal adds on the wire is the
	// chunk and the frames around it, not the image.
	if extra < e.Length || extra > 2*e.Length+16<<10 {
		t.Fatalf("the heal added %d bytes on the wire for a chunk of %d", extra, e.Length)
	}
}

// flipChunk flips a byte inside the payload of chunk id's records in the
// packs of store (at rest: no process has them open).
func flipChunk(t *testing.T, store string, id chunk.ID) {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(store, "packs", "pack-*.dat"))
	flipped := false
	for _, p := range packs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, append([]byte("NTCK"), id[:]...)); i >= 0 {
			b[i+4+32+1+4+10] ^= 0x40
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			flipped = true
		}
	}
	if !flipped {
		t.Fatalf("chunk %s not found in the packs", id.Short())
	}
}
