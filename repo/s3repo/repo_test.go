package s3repo

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/internal/s3test"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/repo/s3versions"
)

// receivers opens n Repos on one bucket, as n receivers would.
func receivers(t *testing.T, n int) []*Repo {
	t.Helper()
	srv := s3test.Start(t)
	url := "s3://" + srv.NewBucket(t) + "/r"
	var out []*Repo
	for range n {
		st, err := s3store.Open(t.Context(), s3store.Config{URL: url, Endpoint: srv.Endpoint, PathStyle: true,
			Region: srv.Region, Credentials: srv.Credentials(), PackSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		out = append(out, New(s3versions.New(st)))
	}
	return out
}

// version makes a sealed version of set with one image of random bytes,
// its chunks stored in r's bucket when store is set.
func version(t *testing.T, r *Repo, set, node string, parent repo.Digest, seed uint64, store bool) (*repo.Version, []*chunk.Index, []byte) {
	t.Helper()
	ctx := t.Context()
	data := make([]byte, 256<<10)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	st, release, err := r.OpenStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	x, _, err := chunk.Build(ctx, chunk.Bytes(data), chunk.DefaultCDC(), chunk.Options{Chunk: func(e chunk.Entry, b []byte) error {
		if !store {
			return nil
		}
		return st.PutVerified(ctx, e.ID, b, nil, false)
	}})
	if err == nil {
		err = st.Sync(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	v := &repo.Version{Set: set, Parent: parent, Node: node, Created: time.Now().UTC(), Images: []repo.Image{{Name: "disk"}}}
	meta := []byte("meta " + node)
	if err := v.Seal([]*chunk.Index{x}, meta); err != nil {
		t.Fatal(err)
	}
	return v, []*chunk.Index{x}, meta
}

// TestCommitRules: two receivers on one bucket commit by repo.Repo's
// rules: a fast-forward moves the current version whoever committed the
// parent; a version that does not follow it is kept beside it
// (ErrDiverged) and listed as diverged until forced; committing it again
// finds it; the current version cannot be removed; chunks not in the
// bucket are refused.
func TestCommitRules(t *testing.T) {
	ctx := t.Context()
	rs := receivers(t, 2)
	r1, r2 := rs[0], rs[1]
	commit := func(r *Repo, v *repo.Version, idx []*chunk.Index, meta []byte, opt repo.CommitOptions) (*repo.Committed, error) {
		t.Helper()
		return r.Commit(ctx, v, idx, meta, opt)
	}
	v1, x1, m1 := version(t, r1, "vm", "office", repo.Digest{}, 1, true)
	c, err := commit(r1, v1, x1, m1, repo.CommitOptions{})
	if err != nil || c.Version.Seq != 1 || c.Existed || c.Head.Digest != v1.Digest {
		t.Fatalf("first commit: %+v, %v", c, err)
	}
	v2, x2, m2 := version(t, r2, "vm", "office", v1.Digest, 2, true)
	if c, err = commit(r2, v2, x2, m2, repo.CommitOptions{}); err != nil || c.Version.Seq != 2 || c.Head.Digest != v2.Digest {
		t.Fatalf("fast-forward through the other receiver: %+v, %v", c, err)
	}
	vx, xx, mx := version(t, r1, "vm", "laptop", v1.Digest, 3, true)
	c, err = commit(r1, vx, xx, mx, repo.CommitOptions{})
	if !errors.Is(err, repo.ErrDiverged) || c == nil || c.Version.Seq != 3 || c.Head.Digest != v2.Digest {
		t.Fatalf("a version beside the current one: %+v, %v", c, err)
	}
	if h, err := r2.Head(ctx, "vm"); err != nil || h.Digest != v2.Digest || h.Seq != 2 {
		t.Fatalf("head after the diverged commit: %+v, %v", h, err)
	}
	if d, err := r2.Diverged(ctx, "vm"); err != nil || len(d) != 1 || d[0].Digest != vx.Digest {
		t.Fatalf("diverged: %v, %v", d, err)
	}
	if n, err := r2.Newest(ctx, "vm", []repo.Digest{v1.Digest, vx.Digest}); err != nil || n == nil || n.Seq != 3 {
		t.Fatalf("newest of v1 and vx: %+v, %v", n, err)
	}
	if c, err = commit(r2, vx, xx, mx, repo.CommitOptions{Force: true}); err != nil || !c.Existed || c.Head.Digest != vx.Digest {
		t.Fatalf("forced: %+v, %v", c, err)
	}
	if err := r1.Remove(ctx, "vm", 3); err == nil {
		t.Fatal("the current version was removed")
	}
	if err := r1.Remove(ctx, "vm", 1); err != nil {
		t.Fatal(err)
	}
	vs, err := r2.Versions(ctx, "vm")
	if err != nil || len(vs) != 2 || vs[0].Seq != 2 || vs[1].Seq != 3 {
		t.Fatalf("versions after removing 1: %v, %v", vs, err)
	}
	x, err := r1.Index(ctx, "vm", 2, "disk")
	if err != nil || !slices.Equal(x.Entries, x2[0].Entries) {
		t.Fatalf("index of version 2: %v", err)
	}
	if m, err := r1.Meta(ctx, "vm", 2); err != nil || string(m) != string(m2) {
		t.Fatalf("meta of version 2: %q, %v", m, err)
	}

	lost, xl, ml := version(t, r1, "vm", "office", v2.Digest, 4, false)
	var missing *s3store.MissingError
	if _, err := commit(r1, lost, xl, ml, repo.CommitOptions{}); !errors.As(err, &missing) {
		t.Fatalf("a version whose chunks are not stored: %v", err)
	}
	if h, _ := r1.Head(ctx, "vm"); h.Digest != vx.Digest {
		t.Fatal("the refused commit moved the head")
	}
}
