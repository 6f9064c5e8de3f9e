package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
	// chunk and the frames around it, not the image. (Only an upper bound:
	// two pushes' framing and QUIC's acks differ by a few KB, so the
	// difference can come out a little under the chunk, 0.98x once.)
	if extra > 2*e.Length+16<<10 {
		t.Fatalf("the heal added %d bytes on the wire for a chunk of %d", extra, e.Length)
	}
}

// TestCheckSetsAsideAndPushHeals: 'ntc check --read-data --set-aside' has
// the store forget a damaged chunk that no push reads (an unchanged part
// of the image, rewritten in place), and the next push of the set sends it
// again, besides what changed, through real 'ntc serve' and 'ntc push'.
func TestCheckSetsAsideAndPushHeals(t *testing.T) {
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serve(t, home, store, office.id)
	img := filepath.Join(t.TempDir(), "disk.img")
	data := randomFile(t, img, 8<<20, 9)
	if _, err := push(t, t.Context(), office, addr, home.id, img, "--name", "vm"); err != nil {
		t.Fatal(err)
	}
	r, err := ntcsync.OpenRepoForReading(store)
	if err != nil {
		t.Fatal(err)
	}
	x, err := r.Index("vm", 1, "disk.img")
	if err != nil {
		t.Fatal(err)
	}
	e := x.Entries[2]
	flipChunk(t, store, e.ID)
	check := func(args ...string) (int, checkJSON) {
		t.Helper()
		code, out, errs := ntc(t, t.Context(), append([]string{"--json", "check", "--read-data", store}, args...)...)
		var rep checkJSON
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("check printed %q (%s): %v", out, errs, err)
		}
		return code, rep
	}
	if code, rep := check("--set-aside"); code != exitError || rep.SetAside != 1 || !slices.Equal(rep.Damaged, []chunk.ID{e.ID}) {
		t.Fatalf("check --set-aside: exit %d, %+v", code, rep)
	}
	if code, rep := check(); code != exitError || !slices.Equal(rep.Missing, []chunk.ID{e.ID}) || len(rep.Damaged) != 0 {
		t.Fatalf("after --set-aside the chunk is not missing: exit %d, %+v", code, rep)
	}

	// A change at the end of the image: the chunk set aside is not among
	// the changed ones, and its place in the file is not rewritten.
	copy(data[len(data)-4096:], bytes.Repeat([]byte{9}, 4096))
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := push(t, t.Context(), office, addr, home.id, img, "--name", "vm")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("push after --set-aside: %d chunks (%d bytes) sent, %d healed, the chunk set aside %d bytes", res.ChunksSent, res.ChunkBytes, res.Healed, e.Length)
	x2, err := r.Index("vm", 2, "disk.img")
	if err != nil {
		t.Fatal(err)
	}
	var changed int64
	had := map[chunk.ID]bool{}
	for _, f := range x.Entries {
		had[f.ID] = true
	}
	for _, f := range x2.Entries {
		if !had[f.ID] {
			had[f.ID] = true
			changed += f.Length
		}
	}
	if res.Healed != 1 || res.ChunkBytes != changed+e.Length {
		t.Fatalf("healed %d, sent %d chunk bytes; want the set-aside chunk (%d bytes) and the %d changed", res.Healed, res.ChunkBytes, e.Length, changed)
	}
	if code, rep := check(); code != 0 || !rep.OK() {
		t.Fatalf("check after the push: exit %d, %+v", code, rep)
	}
	got, err := os.ReadFile(filepath.Join(store, "sets", "vm", "images", "disk.img"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("image differs from the pushed one (%v)", err)
	}
	if code, _, errs := ntc(t, t.Context(), "check", "--set-aside", store); code != exitUsage || !strings.Contains(errs, "--read-data") {
		t.Errorf("--set-aside without --read-data: exit %d, %s", code, errs)
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
