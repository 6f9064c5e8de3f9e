package repo

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// thinRepo holds versions 1 to 5 of "vm" in one line (5 is the head) and
// 6, made from 2 by another node: the tip of a diverged copy.
func thinRepo(t *testing.T) *Repo {
	t.Helper()
	r, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var parent, second Digest
	for seed := byte(1); seed <= 5; seed++ {
		v, idx := version(t, "vm", parent, "office", seed)
		if _, err := commit(t, r, v, idx, CommitOptions{}); err != nil {
			t.Fatal(err)
		}
		parent = v.Digest
		if seed == 2 {
			second = v.Digest
		}
	}
	v, idx := version(t, "vm", second, "home", 6)
	if _, err := commit(t, r, v, idx, CommitOptions{}); !errors.Is(err, ErrDiverged) {
		t.Fatalf("the other copy's version: %v, want ErrDiverged", err)
	}
	return r
}

// keepSeqs keeps the versions numbered seqs.
func keepSeqs(seqs ...uint64) Keep {
	return func(vs []*Version) []bool {
		keep := make([]bool, len(vs))
		for i, v := range vs {
			keep[i] = slices.Contains(seqs, v.Seq)
		}
		return keep
	}
}

func TestThin(t *testing.T) {
	for _, tc := range []struct {
		name    string
		keep    Keep
		noHead  bool
		want    []uint64 // removed, oldest first
		wantErr bool
	}{
		{name: "keeps nothing: the head and the diverged tip stay", keep: keepSeqs(), want: []uint64{1, 2, 3, 4}},
		{name: "keeps everything", keep: keepSeqs(1, 2, 3, 4, 5, 6)},
		{name: "pins", keep: keepSeqs(2, 4), want: []uint64{1, 3}},
		{name: "pinning the head changes nothing", keep: keepSeqs(5, 6, 1), want: []uint64{2, 3, 4}},
		{name: "by position: the newest three", keep: func(vs []*Version) []bool {
			keep := make([]bool, len(vs))
			for i := len(vs) - 3; i < len(vs); i++ {
				keep[i] = true
			}
			return keep
		}, want: []uint64{1, 2, 3}},
		{name: "by policy: the last three made", keep: Policy{Last: 3}.KeepVersions, want: []uint64{1, 2, 3}},
		{name: "no head: nothing goes", keep: keepSeqs(), noHead: true},
		{name: "a choice per version or none", keep: func([]*Version) []bool { return []bool{true} }, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := thinRepo(t)
			if tc.noHead {
				if err := os.Remove(filepath.Join(r.setDir("vm"), headFile)); err != nil {
					t.Fatal(err)
				}
			}
			before, _ := r.Seqs("vm")
			got, err := r.Thin(t.Context(), "vm", tc.keep)
			if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
				t.Fatalf("Thin removed %v, %v; want %v (error: %v)", got, err, tc.want, tc.wantErr)
			}
			left, err := r.Seqs("vm")
			if err != nil {
				t.Fatal(err)
			}
			want := slices.DeleteFunc(before, func(s uint64) bool { return slices.Contains(tc.want, s) })
			if !slices.Equal(left, want) {
				t.Fatalf("left %v, want %v", left, want)
			}
		})
	}
}

// failingRemove is a repository elsewhere whose Remove fails on one
// version.
type failingRemove struct {
	withContext
	at uint64
}

func (f failingRemove) Remove(ctx context.Context, set string, seq uint64) error {
	if seq == f.at {
		return errors.New("the bucket said no")
	}
	return f.withContext.Remove(ctx, set, seq)
}

// TestThinStopsAtAFailure: what was removed before a failure is reported
// with it, and nothing after it goes.
func TestThinStopsAtAFailure(t *testing.T) {
	r := thinRepo(t)
	got, err := Thin(t.Context(), failingRemove{withContext{r}, 3}, "vm", keepSeqs())
	if err == nil || !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("Thin = %v, %v; want 1 and 2 removed, then the error", got, err)
	}
	if left, _ := r.Seqs("vm"); !slices.Equal(left, []uint64{3, 4, 5, 6}) {
		t.Fatalf("left %v", left)
	}
}
