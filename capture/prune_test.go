package capture

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
)

// fakeCheckpoints writes n complete checkpoints of one 1 MiB disk into the
// repository in dir, each recording a 64 KiB change since its parent, and
// returns the disk's index of each (by seq).
func fakeCheckpoints(t *testing.T, r *Repository, n int) map[int]*chunk.Index {
	t.Helper()
	idx := map[int]*chunk.Index{}
	data := make([]byte, 1<<20)
	for seq := 1; seq <= n; seq++ {
		rng := rand.New(rand.NewPCG(uint64(seq), 0))
		for i := range 64 << 10 {
			data[seq*(64<<10)+i] = byte(rng.Uint32())
		}
		x, _, err := chunk.Build(t.Context(), chunk.Bytes(data), chunk.DefaultCDC(), chunk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		idx[seq] = x
		for _, e := range x.Entries {
			if !e.Zero {
				if err := r.packs.Put(t.Context(), e.ID, data[e.Offset:e.End()]); err != nil {
					t.Fatal(err)
				}
			}
		}
		d := Disk{Name: "disk-vda", Index: "disk-vda.idx", Size: x.Size, Mode: "full"}
		m := &Manifest{Version: ManifestVersion, Seq: seq, Created: created(),
			DeviceState: ImageRef{Index: deviceIndex}, Stream: StreamInfo{Index: streamIndex}}
		empty, _, err := chunk.Build(t.Context(), chunk.Bytes(nil), chunk.DefaultCDC(), chunk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		idxs := map[string]*chunk.Index{d.Index: x, deviceIndex: empty, streamIndex: empty}
		changes := map[string][]chunk.Range{}
		if seq > 1 {
			d.Mode, d.Changes = "incremental", d.Name+changesSuffix
			changes[d.Changes] = []chunk.Range{{Off: int64(seq) * 64 << 10, Len: 64 << 10}}
		}
		m.Disks = []Disk{d}
		var parent repo.Digest
		if head, err := r.nodes.Head(r.set); err != nil {
			t.Fatal(err)
		} else if head != nil {
			parent = head.Digest
		}
		if _, err := r.commit(t.Context(), m, idxs, changes, parent, "test"); err != nil {
			t.Fatal(err)
		}
	}
	return idx
}

func TestPrune(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		keep   int
		pinned []int
		state  int // the seq state.json's chain continues; 0: no state
		want   []int
	}{
		{"keeps the newest", 6, 3, nil, 0, []int{1, 2, 3}},
		{"keeps the pinned", 6, 3, []int{2}, 0, []int{1, 3}},
		{"pinned among the newest", 6, 2, []int{6, 5}, 0, []int{1, 2, 3, 4}},
		{"keeps the chain's checkpoint", 6, 2, []int{1}, 3, []int{2, 4}},
		{"fewer than keep", 2, 3, nil, 0, nil},
		{"keep 0 keeps one", 3, 0, nil, 0, []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := OpenRepository(t.Context(), t.TempDir(), DefaultSet)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			fakeCheckpoints(t, r, tc.n)
			if tc.state > 0 {
				if err := r.saveState(&state{Disks: []diskState{{Name: "disk-vda", Seq: tc.state}}}); err != nil {
					t.Fatal(err)
				}
			}
			got, err := r.Prune(t.Context(), tc.keep, tc.pinned...)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Prune(%d, %v) removed %v, want %v", tc.keep, tc.pinned, got, tc.want)
			}
			left, err := r.Checkpoints()
			if err != nil {
				t.Fatal(err)
			}
			for seq := 1; seq <= tc.n; seq++ {
				_, verr := r.Version(seq)
				if gone := slices.Contains(tc.want, seq); gone != errors.Is(verr, repo.ErrNotFound) || gone == slices.Contains(left, seq) {
					t.Errorf("checkpoint %d: removed %v, version %v, listed %v", seq, gone, verr, left)
				}
			}
		})
	}
}

// TestPruneBreaksChangeChain: a checkpoint whose chain of recorded changes
// back to the receiver's copy crosses a pruned checkpoint is not an error,
// only not patchable; a chain that stays whole still is.
func TestPruneBreaksChangeChain(t *testing.T) {
	r, err := OpenRepository(t.Context(), t.TempDir(), DefaultSet)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	idx := fakeCheckpoints(t, r, 6)
	if got, err := r.Prune(t.Context(), 2, 2); err != nil || !reflect.DeepEqual(got, []int{1, 3, 4}) {
		t.Fatalf("Prune(2, 2) = %v, %v", got, err)
	}
	m6, err := r.Manifest(6)
	if err != nil {
		t.Fatal(err)
	}
	is := func(seq int) func(*chunk.Index) bool {
		return func(x *chunk.Index) bool { return reflect.DeepEqual(x, idx[seq]) }
	}
	if _, _, ok, err := r.ChangedSince(m6, "disk-vda", is(2)); ok || err != nil {
		t.Errorf("ChangedSince(6, checkpoint 2 across pruned 3 and 4) = %v, %v; want not found, no error", ok, err)
	}
	base, changed, ok, err := r.ChangedSince(m6, "disk-vda", is(5))
	if err != nil || !ok || !reflect.DeepEqual(base, idx[5]) || !reflect.DeepEqual(changed, []chunk.Range{{Off: 6 * 64 << 10, Len: 64 << 10}}) {
		t.Errorf("ChangedSince(6, checkpoint 5) = %v, %v, %v", changed, ok, err)
	}
}

func TestPruneNeedsWriter(t *testing.T) {
	dir := t.TempDir()
	w, err := OpenRepository(t.Context(), dir, DefaultSet)
	if err != nil {
		t.Fatal(err)
	}
	fakeCheckpoints(t, w, 3)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := OpenRepositoryForReading(dir, DefaultSet)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Prune(t.Context(), 1); !errors.Is(err, chunk.ErrReadOnly) {
		t.Errorf("Prune on a repository open for reading: %v, want ErrReadOnly", err)
	}
	if seqs, _ := r.Checkpoints(); len(seqs) != 3 {
		t.Errorf("checkpoints left: %v", seqs)
	}
}

// TestCollect: once checkpoints are pruned, Collect drops the chunks only
// they used and keeps every chunk of the others, readable.
func TestCollect(t *testing.T) {
	ctx := t.Context()
	r, err := OpenRepository(t.Context(), t.TempDir(), DefaultSet)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	idx := fakeCheckpoints(t, r, 5)
	if _, err := r.Prune(t.Context(), 2); err != nil {
		t.Fatal(err)
	}
	st, err := r.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kept := map[chunk.ID]bool{}
	for _, seq := range []int{4, 5} {
		for _, e := range idx[seq].Entries {
			kept[e.ID] = true
			if _, err := r.packs.Get(ctx, e.ID); err != nil && !e.Zero {
				t.Fatalf("a chunk of kept checkpoint %d: %v", seq, err)
			}
		}
	}
	dropped := map[chunk.ID]bool{}
	for _, seq := range []int{1, 2, 3} {
		for _, e := range idx[seq].Entries {
			if kept[e.ID] || e.Zero {
				continue
			}
			dropped[e.ID] = true
			if ok, _ := r.packs.Has(ctx, e.ID); ok {
				t.Fatalf("chunk %s of pruned checkpoint %d is still in the store", e.ID.Short(), seq)
			}
		}
	}
	if len(dropped) == 0 || st.ChunksDropped != len(dropped) {
		t.Fatalf("Collect dropped %d chunks; the pruned checkpoints had %d of their own", st.ChunksDropped, len(dropped))
	}
	// Nothing more to drop.
	if st, err := r.Collect(ctx); err != nil || st.ChunksDropped != 0 {
		t.Fatalf("second Collect: %+v, %v", st, err)
	}
}
