package sync

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ntc-project/ntc/chunk"
)

// flipStored flips a byte inside the payload of chunk id's record in the
// packs of the repository in dir (its store must be closed).
func flipStored(t *testing.T, dir string, id chunk.ID) {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(dir, "packs", "pack-*.dat"))
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
			return
		}
	}
	t.Fatalf("chunk %s not found in the packs", id.Short())
}

// checkStore reads every chunk the repository's versions refer to, as
// 'ntc check --read-data' does.
func checkStore(t *testing.T, r *Repo) *chunk.CheckReport {
	t.Helper()
	sets, err := r.List()
	if err != nil {
		t.Fatal(err)
	}
	var owners []chunk.Owner
	for _, si := range sets {
		for _, seq := range si.Versions {
			m, err := r.Manifest(si.Set, seq)
			if err != nil {
				t.Fatal(err)
			}
			o := chunk.Owner{Name: fmt.Sprintf("%s v%d", si.Set, seq)}
			for _, im := range m.Images {
				x, err := r.Index(si.Set, seq, im.Name)
				if err != nil {
					t.Fatal(err)
				}
				o.Indexes = append(o.Indexes, x)
			}
			owners = append(owners, o)
		}
	}
	rep, err := chunk.Check(t.Context(), readStore(t, r), owners, chunk.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestDamagedStoredChunkIsHealed damages one stored chunk of a set's
// version, then pushes versions that need it: to another set (whose image
// file is written whole from the store) and to the same set with the
// chunk at another offset (its file rewritten in place). Each push heals
// the chunk from the sender, sending it and nothing else, and leaves the
// store whole.
func TestDamagedStoredChunkIsHealed(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(13, 4))
	disk := randomData(r, 4<<20)
	images := map[string][]byte{"disk": disk}
	s := &Sender{StateDir: t.TempDir()}
	if _, err := p.push(t, ctx, s, imageVersion(t, "a", images)); err != nil {
		t.Fatal(err)
	}
	if err := <-p.errs; err != nil {
		t.Fatal(err)
	}
	x, err := p.repo.Index("a", 1, "disk")
	if err != nil {
		t.Fatal(err)
	}
	damage := func(e chunk.Entry) {
		t.Helper()
		flipStored(t, p.repo.Dir(), e.ID)
		if rep := checkStore(t, p.repo); rep.OK() || !slices.Contains(rep.Damaged, e.ID) {
			t.Fatalf("the flipped chunk is not found damaged: %+v", rep)
		}
	}
	healed := func(res *Result, err error, e chunk.Entry) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if err := <-p.errs; err != nil {
			t.Fatal(err)
		}
		if res.Healed != 1 || res.ChunksSent != 1 || res.ChunkBytes != e.Length {
			t.Fatalf("healed %d chunks, sent %d chunks of %d bytes; want the damaged one alone, %d bytes",
				res.Healed, res.ChunksSent, res.ChunkBytes, e.Length)
		}
		if rep := checkStore(t, p.repo); !rep.OK() {
			t.Fatalf("the store is not whole after the heal: %+v", rep)
		}
	}

	// Another set with the same image: every chunk is held, one damaged.
	e := x.Entries[len(x.Entries)/2]
	damage(e)
	res, err := p.push(t, ctx, &Sender{StateDir: t.TempDir()}, imageVersion(t, "b", images))
	healed(res, err, e)
	assertMaterialized(t, p.repo, "b", images)

	// The same set, its chunks shifted by a few bytes at the front: the
	// file is rewritten in place from the chunks the store holds.
	e = x.Entries[len(x.Entries)-2]
	damage(e)
	shifted := map[string][]byte{"disk": append([]byte("shift"), disk...)}
	v2 := imageVersion(t, "a", shifted)
	res, err = p.push(t, ctx, s, v2)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-p.errs; err != nil {
		t.Fatal(err)
	}
	changed := newChunkBytes(t, imageVersion(t, "a", images), v2)
	if res.Healed != 1 || !slices.Contains(versionIDs(t, p, "a"), e.ID) || res.ChunkBytes != changed+e.Length {
		t.Fatalf("healed %d chunks, sent %d chunk bytes; want the damaged one, %d bytes besides the %d changed",
			res.Healed, res.ChunkBytes, e.Length, changed)
	}
	assertMaterialized(t, p.repo, "a", shifted)
	if rep := checkStore(t, p.repo); !rep.OK() {
		t.Fatalf("the store is not whole after the heal: %+v", rep)
	}

	// A heal that fails (the sender's copy arrives damaged every time):
	// the push fails (its version is committed, its image not written),
	// and the chunk stays set aside, missing: the next offer that lists
	// it has it sent, as a chunk the receiver lacks.
	e = x.Entries[1]
	damage(e)
	v3 := imageVersion(t, "c", images)
	v3.Images[0].Source = &corrupting{src: v3.Images[0].Source, every: true}
	if _, err := p.push(t, ctx, &Sender{unverified: true}, v3); !errors.Is(err, ErrBadChunks) {
		t.Fatalf("push whose heal keeps failing: %v, want ErrBadChunks", err)
	}
	<-p.errs
	if rep := checkStore(t, p.repo); !slices.Equal(rep.Missing, []chunk.ID{e.ID}) || len(rep.Damaged) != 0 {
		t.Fatalf("after a failed heal the chunk is not set aside: %+v", rep)
	}
	res, err = p.push(t, ctx, &Sender{}, imageVersion(t, "c", images))
	if err != nil {
		t.Fatal(err)
	}
	<-p.errs
	if res.ChunksSent != 1 || res.ChunkBytes != e.Length {
		t.Fatalf("the push after a failed heal sent %d chunk bytes, want the set-aside chunk's %d", res.ChunkBytes, e.Length)
	}
	assertMaterialized(t, p.repo, "c", images)
	if rep := checkStore(t, p.repo); !rep.OK() {
		t.Fatalf("the store is not whole: %+v", rep)
	}
}

// versionIDs returns the chunks of set's current version.
func versionIDs(t *testing.T, p *peers, set string) []chunk.ID {
	t.Helper()
	m, err := p.repo.Current(set)
	if err != nil {
		t.Fatal(err)
	}
	x, err := p.repo.Index(set, m.Version, "disk")
	if err != nil {
		t.Fatal(err)
	}
	var ids []chunk.ID
	for _, e := range x.Entries {
		ids = append(ids, e.ID)
	}
	return ids
}

// TestHealAsksOnlyForTheVersionsChunks: a receiver may ask again only for
// chunks of the version being pushed; those not listed yet are appended.
func TestHealAsksOnlyForTheVersionsChunks(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	v := imageVersion(t, "vm", map[string][]byte{"disk": randomData(r, 1<<20)})
	ents := v.Images[0].Index.Entries
	p := &pushing{s: &Sender{}, v: v, res: &Result{}, news: []newChunk{{entry: ents[0]}}}
	for _, tc := range []struct {
		name string
		ids  []chunk.ID
		ok   bool
	}{
		{"a chunk of the version", []chunk.ID{ents[1].ID}, true},
		{"the same again", []chunk.ID{ents[1].ID}, true},
		{"one listed already", []chunk.ID{ents[0].ID}, true},
		{"not the version's", []chunk.ID{{1, 2, 3}}, false},
	} {
		err := p.healChunks(encodeHeal(tc.ids))
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrMalformed)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if len(p.news) != 2 || p.news[1].entry != ents[1] || p.res.Healed != 3 {
		t.Fatalf("news after the heals: %+v, healed %d", p.news, p.res.Healed)
	}
	if _, err := decodeHeal(encodeHeal(nil)); err == nil {
		t.Error("an empty heal decodes")
	}
}

// FuzzDecodeHeal: a heal decodes without panicking, within its bound, and
// decodes again from its encoding to the same chunks.
func FuzzDecodeHeal(f *testing.F) {
	f.Add(encodeHeal([]chunk.ID{{1}}))
	f.Add(encodeHeal([]chunk.ID{{1}, {2}, {3}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		ids, err := decodeHeal(b)
		if err != nil {
			return
		}
		if len(ids) == 0 || len(ids) > maxHealIDs {
			t.Fatalf("%d chunks accepted", len(ids))
		}
		if again, err := decodeHeal(encodeHeal(ids)); err != nil || !slices.Equal(again, ids) {
			t.Fatalf("re-decode: %v, %v", again, err)
		}
	})
}

// pushedOnce pushes a 4 MiB random image as version 1 of set vm and
// returns the peers, the sender, the random source, the version and its
// images.
func pushedOnce(t *testing.T, seed uint64) (*peers, *Sender, *rand.Rand, *Version, map[string][]byte) {
	t.Helper()
	p := newPeers(t)
	r := rand.New(rand.NewPCG(seed, 2))
	images := map[string][]byte{"disk": randomData(r, 4<<20)}
	s := &Sender{StateDir: t.TempDir()}
	v1 := imageVersion(t, "vm", images)
	if _, err := p.push(t, t.Context(), s, v1); err != nil {
		t.Fatal(err)
	}
	if err := <-p.errs; err != nil {
		t.Fatal(err)
	}
	return p, s, r, v1, images
}

// TestDamagedPatchBaseIsSetAside: a chunk sent as a patch against a
// stored chunk that is damaged is asked for whole, and the damaged chunk,
// which the new version no longer holds, is set aside: the version the
// push makes is whole, the one that held the chunk is reported as missing
// it.
func TestDamagedPatchBaseIsSetAside(t *testing.T) {
	p, s, r, v1, images := pushedOnce(t, 21)
	ctx, disk := t.Context(), images["disk"]
	e := v1.Images[0].Index.Entries[len(v1.Images[0].Index.Entries)/2]
	flipStored(t, p.repo.Dir(), e.ID)

	off := e.Offset + e.Length/2
	copy(disk[off:off+4096], randomData(r, 4096))
	v2 := imageVersion(t, "vm", images)
	v2.Images[0].Base, v2.Images[0].Changed = v1.Images[0].Index, []chunk.Range{{Off: off, Len: 4096}}
	res, err := p.push(t, ctx, s, v2)
	if err != nil {
		t.Fatal(err)
	}
	<-p.errs
	if res.Rounds != 2 || res.Healed != 0 {
		t.Fatalf("%d rounds, %d healed; want 2 (the patched chunk asked again whole), none healed", res.Rounds, res.Healed)
	}
	assertMaterialized(t, p.repo, "vm", images)
	rep := checkStore(t, p.repo)
	if !slices.Equal(rep.Missing, []chunk.ID{e.ID}) || len(rep.Damaged) != 0 || !slices.Equal(rep.BrokenNames(), []string{"vm v1"}) {
		t.Fatalf("after the push: %+v; want the damaged base chunk set aside, version 1 alone broken", rep)
	}
}

// TestSetAsideChunkIsFetchedAgain: a chunk the store set aside (as 'ntc
// check' does with a damaged one) is sent again by the next push of a
// version that holds it, although the offer does not list it (its base
// holds it) and the image file is not rewritten where it lies.
func TestSetAsideChunkIsFetchedAgain(t *testing.T) {
	p, s, r, v1, images := pushedOnce(t, 34)
	ctx, disk := t.Context(), images["disk"]
	e := v1.Images[0].Index.Entries[3]
	st, err := chunk.OpenPackStore(p.repo.Dir())
	if err != nil {
		t.Fatal(err)
	}
	st.Forget(e.ID)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if rep := checkStore(t, p.repo); !slices.Equal(rep.Missing, []chunk.ID{e.ID}) {
		t.Fatalf("the set-aside chunk is not missing: %+v", rep)
	}
	// A change far from the chunk: the offer lists only the changed ones.
	copy(disk[len(disk)-8192:], randomData(r, 8192))
	v2 := imageVersion(t, "vm", images)
	res, err := p.push(t, ctx, s, v2)
	if err != nil {
		t.Fatal(err)
	}
	<-p.errs
	changed := newChunkBytes(t, v1, v2)
	if res.Healed != 1 || res.ChunkBytes != changed+e.Length {
		t.Fatalf("healed %d, sent %d chunk bytes; want the set-aside chunk (%d bytes) besides the %d changed", res.Healed, res.ChunkBytes, e.Length, changed)
	}
	assertMaterialized(t, p.repo, "vm", images)
	if rep := checkStore(t, p.repo); !rep.OK() {
		t.Fatalf("the store is not whole: %+v", rep)
	}
}
