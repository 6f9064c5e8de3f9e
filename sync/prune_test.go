package sync

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
)

// TestKeepRemovesOldVersionsAndTheirChunks pushes five versions of an
// image to a receiver that keeps two: the older versions go, the chunks
// only they used are dropped from the store, everything the kept versions
// use stays readable, and a later push of old content sends it again.
func TestKeepRemovesOldVersionsAndTheirChunks(t *testing.T) {
	const keep = 2
	p := newPeersWith(t, func(r *Receiver) { r.Keep = repo.Policy{Last: keep} })
	ctx := t.Context()
	r := rand.New(rand.NewPCG(3, 3))
	s := &Sender{StateDir: t.TempDir()}
	disk := randomData(r, 4<<20)
	var versions []*Version
	var first []byte
	for i := range 5 {
		if i > 0 {
			// A different MiB each time.
			copy(disk[(i-1)<<20:i<<20], randomData(r, 1<<20))
		}
		if i == 0 {
			first = slices.Clone(disk)
		}
		v := imageVersion(t, "vm", map[string][]byte{"disk": disk})
		if _, err := p.push(t, ctx, s, v); err != nil {
			t.Fatal(err)
		}
		// The receiver prunes and collects before Serve returns.
		if err := <-p.errs; err != nil {
			t.Fatalf("push %d: receiver: %v", i+1, err)
		}
		versions = append(versions, v)
	}
	sets, err := p.repo.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 1 || !slices.Equal(sets[0].Versions, []uint64{4, 5}) {
		t.Fatalf("versions held: %+v, want 4 and 5", sets)
	}
	assertMaterialized(t, p.repo, "vm", map[string][]byte{"disk": disk})

	st := readStore(t, p.repo)
	kept := map[chunk.ID]bool{}
	for _, v := range versions[5-keep:] {
		for _, e := range v.Images[0].Index.Entries {
			kept[e.ID] = true
			if _, err := st.Get(ctx, e.ID); err != nil {
				t.Fatalf("a chunk of a kept version: %v", err)
			}
		}
	}
	dropped := 0
	for _, v := range versions[:5-keep] {
		for _, e := range v.Images[0].Index.Entries {
			if kept[e.ID] {
				continue
			}
			if ok, _ := st.Has(ctx, e.ID); ok {
				t.Fatalf("chunk %s, used only by removed versions, is still in the store", e.ID.Short())
			}
			dropped++
		}
	}
	if dropped == 0 {
		t.Fatal("the removed versions had no chunks of their own: the test proves nothing")
	}

	// The first version's content again: its own chunks travel again.
	res, err := p.push(t, ctx, s, imageVersion(t, "vm", map[string][]byte{"disk": first}))
	if err != nil {
		t.Fatal(err)
	}
	<-p.errs
	if res.ChunksSent < dropped/2 {
		t.Fatalf("pushing version 1's content again sent %d chunks; %d of its chunks had been dropped", res.ChunksSent, dropped)
	}
	assertMaterialized(t, p.repo, "vm", map[string][]byte{"disk": first})
}

// TestPruneSparesCurrentAndMaterialized: the current version and the ones
// the image files hold or are moving to survive any keep.
func TestPruneSparesCurrentAndMaterialized(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(4, 4))
	s := &Sender{StateDir: t.TempDir()}
	for range 4 {
		if _, err := p.push(t, ctx, s, imageVersion(t, "vm", map[string][]byte{"disk": randomData(r, 64<<10)})); err != nil {
			t.Fatal(err)
		}
		<-p.errs
	}
	// As if the files were being moved from version 1 to 4 when the
	// receiver stopped.
	if err := p.repo.writeState("vm", materializeState{Version: 1, Applying: 4}); err != nil {
		t.Fatal(err)
	}
	removed, err := p.repo.prune(ctx, "vm", repo.Policy{Last: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []uint64{2, 3}) {
		t.Fatalf("removed %v, want 2 and 3", removed)
	}
	sets, _ := p.repo.List()
	if !slices.Equal(sets[0].Versions, []uint64{1, 4}) || sets[0].Current.Version != 4 {
		t.Fatalf("after prune: %+v", sets[0])
	}
	// The zero policy removes nothing.
	if removed, err := p.repo.prune(ctx, "vm", repo.Policy{}); err != nil || len(removed) != 0 {
		t.Fatalf("prune with keep 0: %v, %v", removed, err)
	}
}

// TestSenderKeepsOnlyAcknowledgedVersions: the sender's repository holds
// its head and what the receiver last acknowledged, not a version per
// push, and the next push still needs no index from the receiver.
func TestSenderKeepsOnlyAcknowledgedVersions(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(5, 5))
	s := &Sender{StateDir: t.TempDir()}
	held := func() []uint64 {
		t.Helper()
		nr, err := repo.Open(s.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		seqs, err := nr.Seqs("vm")
		if err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	images := map[string][]byte{"disk": randomData(r, 256<<10), "ram": randomData(r, 64<<10)}
	for range 3 {
		copy(images["disk"][:4096], randomData(r, 4096))
		if _, err := p.push(t, ctx, s, imageVersion(t, "vm", images)); err != nil {
			t.Fatal(err)
		}
	}
	if got := held(); !slices.Equal(got, []uint64{3}) {
		t.Fatalf("after 3 pushes the sender holds versions %v, want only the last (3)", got)
	}
	copy(images["disk"][:4096], randomData(r, 4096))
	res, err := p.push(t, ctx, s, imageVersion(t, "vm", images))
	if err != nil {
		t.Fatal(err)
	}
	if res.IndexFetched || res.ChunksSent != 1 {
		t.Fatalf("push after pruning: index fetched %v, %d chunks sent, want none fetched and 1 chunk", res.IndexFetched, res.ChunksSent)
	}
}

// TestGate: a collection starts only with no push in, and a push waits for
// a running collection only as long as its context allows.
func TestGate(t *testing.T) {
	var g pushGate
	leave, err := g.enter(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := g.tryCollect(); ok {
		t.Fatal("a collection started beside a push")
	}
	leave()
	end, ok := g.tryCollect()
	if !ok {
		t.Fatal("no collection with nothing in")
	}
	ctx, cancel := context.WithCancel(t.Context())
	entered := make(chan error, 1)
	go func() {
		leave, err := g.enter(ctx)
		if err == nil {
			leave()
		}
		entered <- err
	}()
	cancel()
	if err := <-entered; !errors.Is(err, context.Canceled) {
		t.Fatalf("a push waiting for a collection, cancelled: %v", err)
	}
	go func() {
		leave, err := g.enter(t.Context())
		if err == nil {
			leave()
		}
		entered <- err
	}()
	end()
	if err := <-entered; err != nil {
		t.Fatalf("a push after the collection: %v", err)
	}
}
