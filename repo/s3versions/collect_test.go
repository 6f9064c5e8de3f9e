package s3versions

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
)

// removed is a bucket whose set "vm" held two versions, each in its own
// pack: "old" (chunks old) was removed, "keep" (chunks keep) stays.
type removed struct {
	b         *bed
	w         *Sets // the receiver that wrote them, and collects
	old, keep [][]byte
	vKeep     Version
}

func newRemoved(t *testing.T) *removed {
	b := newBed(t)
	w := b.receiver(t)
	r := &removed{b: b, w: w, old: content(100, 4), keep: content(101, 4)}
	vOld := version(t, "vm", chunk.ID{}, "old", r.old)
	r.vKeep = version(t, "vm", vOld.Digest, "keep", r.keep)
	for _, v := range []struct {
		chunks [][]byte
		v      Version
	}{{r.old, vOld}, {r.keep, r.vKeep}} {
		store(t, w, v.chunks)
		if _, err := w.Commit(t.Context(), head(t, w, "vm"), v.v, CommitOptions{MakeCurrent: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Remove(t.Context(), head(t, w, "vm"), 1); err != nil {
		t.Fatal(err)
	}
	if n := w.Store().Packs(); n != 2 {
		t.Fatalf("%d packs, want one a version", n)
	}
	tick(t, w)
	return r
}

// checkAllListed: every version set's head lists is one of want and
// reads back whole through r; it returns the head.
func checkAllListed(tb testing.TB, r *Sets, set string, want map[chunk.ID][][]byte) *Head {
	tb.Helper()
	h := head(tb, r, set)
	for _, e := range h.Versions {
		chunks, ok := want[e.Digest]
		if !ok {
			tb.Fatalf("%s: version %d listed, not committed by the test", set, e.Seq)
		}
		x, err := r.Index(tb.Context(), set, e, "disk")
		if err != nil {
			tb.Fatal(err)
		}
		if len(x.Entries) != len(chunks) {
			tb.Fatalf("%s version %d: %d entries, want %d", set, e.Seq, len(x.Entries), len(chunks))
		}
		for i, en := range x.Entries {
			if got, err := r.Store().Get(tb.Context(), en.ID); err != nil || !bytes.Equal(got, chunks[i]) {
				tb.Fatalf("%s version %d, chunk %d: %v", set, e.Seq, i, err)
			}
		}
	}
	return h
}

func TestCollect(t *testing.T) {
	r := newRemoved(t)
	st, err := r.w.Collect(t.Context(), CollectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Condemned != 1 || st.Spared != 0 || st.Deleted != 1 || st.BytesFreed <= 0 || st.BlobsDeleted != 3 || st.Versions != 1 {
		t.Fatalf("stats %+v: want the old version's pack (condemned and deleted) and its 3 objects", st)
	}
	if h := checkAllListed(t, r.b.receiver(t), "vm", map[chunk.ID][][]byte{r.vKeep.Digest: r.keep}); len(h.Versions) != 1 {
		t.Fatalf("%d versions listed", len(h.Versions))
	}
	fresh := r.b.receiver(t)
	if fresh.Store().Packs() != 1 {
		t.Fatalf("%d packs left, want 1", fresh.Store().Packs())
	}
	if _, err := fresh.Store().Get(t.Context(), chunk.Sum(r.old[0])); !errors.Is(err, chunk.ErrChunkMissing) {
		t.Fatalf("a chunk of the removed version: %v, want missing", err)
	}
	// The collector's own store knows it too.
	if ok, _ := r.w.Store().Has(t.Context(), chunk.Sum(r.old[0])); ok {
		t.Fatal("the collector's store still has a deleted chunk")
	}
}

// TestCollectMinAge: packs younger than MinAge stay, used or not.
func TestCollectMinAge(t *testing.T) {
	r := newRemoved(t)
	st, err := r.w.Collect(t.Context(), CollectOptions{MinAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if st.Condemned != 0 || st.Deleted != 0 || st.Uncollected != 1 || st.BlobsDeleted != 0 {
		t.Fatalf("stats %+v: want the unused pack kept for its age", st)
	}
	if _, err := r.b.receiver(t).Store().Get(t.Context(), chunk.Sum(r.old[0])); err != nil {
		t.Fatal(err)
	}
}

// TestCollectRace: receiver B commits a version that uses chunks only
// the removed version used (it finds them in its map and does not store
// them again) while a collection runs, at each point where the two can
// interleave. Nothing is lost: B's commit lands and reads back whole, and
// either the pack is spared or B is told to store the chunks again.
func TestCollectRace(t *testing.T) {
	type outcome struct {
		spared, deleted int
		errs            []error // B's commit attempts that failed, in order
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, r *removed, b *Sets, commit func(*Head) error) s3store.CollectStats
		want outcome
	}{{
		// B's whole commit lands after the collection condemned the pack
		// and before its barrier: Ensure revives the pack.
		name: "commit between condemn and barrier",
		run: func(t *testing.T, r *removed, b *Sets, commit func(*Head) error) s3store.CollectStats {
			r.w.hook = func(p string) {
				if p == "condemned" {
					commit(head(t, b, "vm"))
				}
			}
			return collect(t, r.w)
		},
		want: outcome{spared: 1},
	}, {
		// B checked its chunks before the pack was condemned and swaps
		// the head before the barrier: the re-mark after the barrier
		// sees B's version and spares the pack.
		name: "checked before condemn, landed before barrier",
		run: func(t *testing.T, r *removed, b *Sets, commit func(*Head) error) s3store.CollectStats {
			ensured, condemned, landed := make(chan struct{}), make(chan struct{}), make(chan struct{})
			b.hook = func(p string) {
				if p == "ensured" {
					close(ensured)
					<-condemned
				}
			}
			r.w.hook = func(p string) {
				if p == "condemned" {
					close(condemned)
					<-landed
				}
			}
			h := head(t, b, "vm")
			go func() {
				defer close(landed)
				commit(h)
			}()
			<-ensured
			return collect(t, r.w)
		},
		want: outcome{spared: 1},
	}, {
		// B checked its chunks before the pack was condemned and swaps
		// after the barrier: its swap fails; again from the new head, its
		// Ensure revives the pack (the sweep has not run).
		name: "checked before condemn, swap after barrier",
		run: func(t *testing.T, r *removed, b *Sets, commit func(*Head) error) s3store.CollectStats {
			ensured, barrier, landed := make(chan struct{}), make(chan struct{}), make(chan struct{})
			b.hook = func(p string) {
				if p == "ensured" {
					b.hook = nil
					close(ensured)
					<-barrier
				}
			}
			r.w.hook = func(p string) {
				if p == "barrier" {
					close(barrier)
					<-landed
				}
			}
			h := head(t, b, "vm")
			go func() {
				defer close(landed)
				if commit(h) != nil {
					commit(head(t, b, "vm"))
				}
			}()
			<-ensured
			return collect(t, r.w)
		},
		want: outcome{spared: 1, errs: []error{s3store.ErrConflict}},
	}, {
		// B read the head before the collection and commits after it
		// deleted the pack: the commit finds the chunks missing; B stores
		// them again; its swap from the head read before the barrier
		// fails; from the new head it lands.
		name: "head read before, commit after the collection",
		run: func(t *testing.T, r *removed, b *Sets, commit func(*Head) error) s3store.CollectStats {
			h := head(t, b, "vm")
			st := collect(t, r.w)
			if commit(h) != nil {
				store(t, b, r.old)
				if commit(h) != nil {
					commit(head(t, b, "vm"))
				}
			}
			return st
		},
		want: outcome{deleted: 1, errs: []error{chunk.ErrChunkMissing, s3store.ErrConflict}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRemoved(t)
			b := r.b.receiver(t) // opened now: its map holds the old pack
			fresh := content(102, 2)
			store(t, b, fresh)
			chunks := append(fresh, r.old...)
			v := version(t, "vm", r.vKeep.Digest, "B", chunks)
			var errs []error
			landed := false
			commit := func(h *Head) error {
				_, err := b.Commit(t.Context(), h, v, CommitOptions{MakeCurrent: true})
				if err != nil {
					errs = append(errs, err)
				} else {
					landed = true
				}
				return err
			}
			st := tc.run(t, r, b, commit)
			if !landed {
				t.Fatalf("B's commit did not land: %v", errs)
			}
			h := checkAllListed(t, r.b.receiver(t), "vm", map[chunk.ID][][]byte{r.vKeep.Digest: r.keep, v.Digest: chunks})
			if len(h.Versions) != 2 {
				t.Fatalf("%d versions listed, want 2", len(h.Versions))
			}
			if st.Spared != tc.want.spared || st.Deleted != tc.want.deleted {
				t.Fatalf("stats %+v: want %d spared, %d deleted", st, tc.want.spared, tc.want.deleted)
			}
			if len(errs) != len(tc.want.errs) {
				t.Fatalf("B's failed attempts: %v, want %v", errs, tc.want.errs)
			}
			for i, err := range errs {
				if !errors.Is(err, tc.want.errs[i]) {
					t.Fatalf("B's attempt %d: %v, want %v", i+1, err, tc.want.errs[i])
				}
			}
		})
	}
}

func collect(t *testing.T, s *Sets) s3store.CollectStats {
	t.Helper()
	st, err := s.Collect(t.Context(), CollectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return st.CollectStats
}

// TestCollectOneAtATime: a collection begun while another runs is
// refused; once that one ended, the next runs.
func TestCollectOneAtATime(t *testing.T) {
	r := newRemoved(t)
	other := r.b.receiver(t)
	var second error
	r.w.hook = func(p string) {
		if p == "condemned" {
			_, second = other.Collect(t.Context(), CollectOptions{})
		}
	}
	st := collect(t, r.w)
	if !errors.Is(second, s3store.ErrCollecting) {
		t.Fatalf("a collection during another: %v, want ErrCollecting", second)
	}
	if st.Deleted != 1 {
		t.Fatalf("the first collection: %+v, want its pack deleted", st)
	}
	if _, err := other.Collect(t.Context(), CollectOptions{}); err != nil {
		t.Fatalf("a collection after the first ended: %v", err)
	}
}

// TestCollectRewrite: a pack half of whose bytes only a removed version
// used is rewritten (its live half copied, the pack deleted) when the
// collection rewrites half-wasted packs, and kept whole when it does not.
func TestCollectRewrite(t *testing.T) {
	for _, tc := range []struct {
		rewrite          float64
		rewritten, freed bool
	}{{0, false, false}, {0.5, true, true}} {
		t.Run(fmt.Sprint(tc.rewrite), func(t *testing.T) {
			b := newBed(t)
			w := b.receiver(t)
			keep, gone := content(400, 3), content(401, 3)
			store(t, w, append(append([][]byte{}, keep...), gone...)) // one pack
			vGone := version(t, "vm", chunk.ID{}, "gone", gone)
			vKeep := version(t, "vm", vGone.Digest, "keep", keep)
			for _, v := range []Version{vGone, vKeep} {
				if _, err := w.Commit(t.Context(), head(t, w, "vm"), v, CommitOptions{MakeCurrent: true}); err != nil {
					t.Fatal(err)
				}
			}
			if w.Store().Packs() != 1 {
				t.Fatalf("%d packs, want both versions' chunks in one", w.Store().Packs())
			}
			if _, err := w.Remove(t.Context(), head(t, w, "vm"), 1); err != nil {
				t.Fatal(err)
			}
			tick(t, w)
			st, err := w.Collect(t.Context(), CollectOptions{Rewrite: tc.rewrite})
			if err != nil {
				t.Fatal(err)
			}
			if (st.Rewritten == 1) != tc.rewritten || (st.Deleted == 1) != tc.freed || (st.BytesCopied > 0) != tc.rewritten {
				t.Fatalf("stats %+v", st)
			}
			r := b.receiver(t)
			checkAllListed(t, r, "vm", map[chunk.ID][][]byte{vKeep.Digest: keep})
			_, err = r.Store().Get(t.Context(), chunk.Sum(gone[0]))
			if tc.freed != errors.Is(err, chunk.ErrChunkMissing) {
				t.Fatalf("a chunk only the removed version used: %v", err)
			}
			if c, err := r.Store().Census(t.Context()); err != nil || c.Copies != 0 {
				t.Fatalf("census %+v, %v", c, err)
			}
		})
	}
}
