package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	gosync "sync"
	"testing"
	"time"

	"github.com/ntc-project/ntc/chunk"
)

// index returns a small index whose content depends on seed.
func index(tb testing.TB, seed byte) *chunk.Index {
	tb.Helper()
	data := make([]byte, 8192)
	for i := range data {
		data[i] = seed + byte(i%7)
	}
	x, _, err := chunk.Build(context.Background(), chunk.Bytes(data), chunk.DefaultCDC(), chunk.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return x
}

// version returns a sealed version of set with one image "disk" from seed.
func version(tb testing.TB, set string, parent Digest, node string, seed byte) (*Version, []*chunk.Index) {
	tb.Helper()
	v := &Version{Set: set, Parent: parent, Node: node, Created: time.Unix(1700000000, int64(seed)).UTC(), Images: []Image{{Name: "disk"}}}
	idx := []*chunk.Index{index(tb, seed)}
	if err := v.Seal(idx, []byte{seed}); err != nil {
		tb.Fatal(err)
	}
	return v, idx
}

func commit(tb testing.TB, r *Repo, v *Version, idx []*chunk.Index, opt CommitOptions) (*Committed, error) {
	tb.Helper()
	return r.Commit(context.Background(), v, idx, []byte{byte(v.Created.Nanosecond())}, opt)
}

func TestDigestCoversEveryField(t *testing.T) {
	base, _ := version(t, "vm", Digest{}, "office", 1)
	change := map[string]func(v *Version){
		"set":     func(v *Version) { v.Set = "vm2" },
		"parent":  func(v *Version) { v.Parent = Digest{1} },
		"node":    func(v *Version) { v.Node = "home" },
		"created": func(v *Version) { v.Created = v.Created.Add(time.Nanosecond) },
		"meta":    func(v *Version) { v.Meta = Digest{2} },
		"size":    func(v *Version) { v.Images[0].Size++ },
		"index":   func(v *Version) { v.Images[0].Index = Digest{3} },
		"name":    func(v *Version) { v.Images[0].Name = "disk2" },
	}
	for name, f := range change {
		t.Run(name, func(t *testing.T) {
			v := *base
			v.Images = slices.Clone(base.Images)
			f(&v)
			if err := v.Verify(); !errors.Is(err, ErrBadVersion) {
				t.Fatalf("changed %s: Verify = %v, want ErrBadVersion", name, err)
			}
		})
	}
	local := *base
	local.Seq, local.From = 9, "peer"
	if err := local.Verify(); err != nil {
		t.Fatalf("Seq and From are local, not part of the digest: %v", err)
	}
}

func TestCommitFastForwardAndDivergence(t *testing.T) {
	r, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v1, x1 := version(t, "vm", Digest{}, "office", 1)
	c, err := commit(t, r, v1, x1, CommitOptions{})
	if err != nil || c.Head.Digest != v1.Digest || c.Version.Seq != 1 {
		t.Fatalf("first commit: %+v, %v", c, err)
	}
	v2, x2 := version(t, "vm", v1.Digest, "office", 2)
	if c, err = commit(t, r, v2, x2, CommitOptions{}); err != nil || c.Head.Digest != v2.Digest {
		t.Fatalf("child of the head: %+v, %v", c, err)
	}
	// A copy resumed from v1 elsewhere made v3: the office's head v2 is not
	// its ancestor.
	v3, x3 := version(t, "vm", v1.Digest, "home", 3)
	c, err = commit(t, r, v3, x3, CommitOptions{})
	if !errors.Is(err, ErrDiverged) || c == nil || c.Head.Digest != v2.Digest || c.Version.Seq != 3 {
		t.Fatalf("diverged commit: %+v, %v; want ErrDiverged, v3 kept as 3, head still v2", c, err)
	}
	if head, _ := r.Head("vm"); head.Digest != v2.Digest {
		t.Fatalf("head moved to %s after a divergence", head.Digest.Short())
	}
	tips, err := r.Diverged("vm")
	if err != nil || len(tips) != 1 || tips[0].Digest != v3.Digest {
		t.Fatalf("Diverged = %v, %v; want v3", tips, err)
	}
	// Committing it again with Force is the user's choice.
	c, err = commit(t, r, v3, x3, CommitOptions{Force: true})
	if err != nil || !c.Existed || c.Head.Digest != v3.Digest {
		t.Fatalf("forced: %+v, %v", c, err)
	}
	if tips, _ := r.Diverged("vm"); len(tips) != 1 || tips[0].Digest != v2.Digest {
		t.Fatalf("after forcing v3 the other tip is v2, got %v", tips)
	}
	seqs, _ := r.Seqs("vm")
	if !slices.Equal(seqs, []uint64{1, 2, 3}) {
		t.Fatalf("versions %v, want both copies' kept", seqs)
	}
}

func TestCommitFollowsLineageItDoesNotHold(t *testing.T) {
	// Home holds v1; the office made v2 and v3 and pushes v3 only, with the
	// links back to v1.
	r, _ := Open(t.TempDir())
	v1, x1 := version(t, "vm", Digest{}, "office", 1)
	v2, _ := version(t, "vm", v1.Digest, "office", 2)
	v3, x3 := version(t, "vm", v2.Digest, "office", 3)
	if _, err := commit(t, r, v1, x1, CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := commit(t, r, v3, x3, CommitOptions{}); !errors.Is(err, ErrDiverged) {
		t.Fatalf("without the links v3 cannot be shown to follow v1: %v", err)
	}
	r2, _ := Open(t.TempDir())
	commit(t, r2, v1, x1, CommitOptions{})
	c, err := commit(t, r2, v3, x3, CommitOptions{Lineage: []Link{{v3.Digest, v2.Digest}, {v2.Digest, v1.Digest}}})
	if err != nil || c.Head.Digest != v3.Digest {
		t.Fatalf("with the links: %+v, %v", c, err)
	}
	anc, err := r2.Ancestry("vm", v3.Digest, 10)
	want := []Link{{v3.Digest, v2.Digest}, {v2.Digest, v1.Digest}, {v1.Digest, Digest{}}}
	if err != nil || !slices.Equal(anc, want) {
		t.Fatalf("Ancestry = %v, %v; want %v", anc, err, want)
	}
	if anc, _ := r2.Ancestry("vm", v3.Digest, 1); len(anc) != 1 {
		t.Fatalf("Ancestry bounded by n: got %d links", len(anc))
	}
}

func TestNewestCommonVersion(t *testing.T) {
	r, _ := Open(t.TempDir())
	v1, x1 := version(t, "vm", Digest{}, "office", 1)
	v2, x2 := version(t, "vm", v1.Digest, "office", 2)
	commit(t, r, v1, x1, CommitOptions{})
	commit(t, r, v2, x2, CommitOptions{})
	other, _ := version(t, "vm", v2.Digest, "home", 9)
	for _, tc := range []struct {
		offered []Digest
		want    *Version
	}{
		{[]Digest{other.Digest, v2.Digest, v1.Digest}, v2},
		{[]Digest{other.Digest, v1.Digest}, v1},
		{[]Digest{other.Digest}, nil},
		{nil, nil},
	} {
		got, err := r.Newest("vm", tc.offered)
		if err != nil || (got == nil) != (tc.want == nil) || (got != nil && got.Digest != tc.want.Digest) {
			t.Errorf("Newest(%d offered) = %v, %v; want %v", len(tc.offered), got, err, tc.want)
		}
	}
}

func TestCommitRefusesMismatches(t *testing.T) {
	r, _ := Open(t.TempDir())
	v, x := version(t, "vm", Digest{}, "office", 1)
	ctx := context.Background()
	if _, err := r.Commit(ctx, v, []*chunk.Index{index(t, 9)}, []byte{1}, CommitOptions{}); !errors.Is(err, ErrBadVersion) {
		t.Errorf("another index: %v", err)
	}
	if _, err := r.Commit(ctx, v, x, []byte{2}, CommitOptions{}); !errors.Is(err, ErrBadVersion) {
		t.Errorf("other metadata: %v", err)
	}
	bad := *v
	bad.Node = "someone else"
	if _, err := r.Commit(ctx, &bad, x, []byte{1}, CommitOptions{}); !errors.Is(err, ErrBadVersion) {
		t.Errorf("a version claiming another's digest: %v", err)
	}
	big := make([]byte, MaxMeta+1)
	large := &Version{Set: "vm", Node: "office", Created: v.Created, Images: []Image{{Name: "disk"}}}
	if err := large.Seal(x, big); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Commit(ctx, large, x, big, CommitOptions{}); !errors.Is(err, ErrBadVersion) {
		t.Errorf("metadata over MaxMeta, which Meta would refuse to read: %v", err)
	}
	evil := &Version{Set: "../x", Images: []Image{{Name: "disk"}}}
	if err := evil.Seal(x, nil); !errors.Is(err, ErrBadName) {
		t.Errorf("set ../x: %v", err)
	}
	if seqs, _ := r.Seqs("vm"); len(seqs) != 0 {
		t.Errorf("refused commits left versions %v", seqs)
	}
}

func TestFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	r, _ := Open(dir)
	v, x := version(t, "vm", Digest{}, "office", 1)
	commit(t, r, v, x, CommitOptions{})
	r.SetRunner(context.Background(), "vm", "office", v.Digest)
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, _ := d.Info()
		want := fs.FileMode(fileMode)
		if d.IsDir() {
			want = dirMode
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
}

func TestConcurrentCommitsGetDistinctNumbers(t *testing.T) {
	dir := t.TempDir()
	var wg gosync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			r, err := Open(dir) // one Repo each: as separate processes would
			if err != nil {
				errs <- err
				return
			}
			v, x := version(t, fmt.Sprintf("vm%d", i%2), Digest{}, "n", byte(i))
			_, err = commit(t, r, v, x, CommitOptions{Force: true})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	r, _ := Open(dir)
	for _, set := range []string{"vm0", "vm1"} {
		seqs, err := r.Seqs(set)
		if err != nil || !slices.Equal(seqs, []uint64{1, 2, 3, 4}) {
			t.Errorf("%s: versions %v, %v; want 1-4", set, seqs, err)
		}
	}
}

func TestTornLineageLineIsIgnored(t *testing.T) {
	r, _ := Open(t.TempDir())
	v1, x1 := version(t, "vm", Digest{}, "office", 1)
	commit(t, r, v1, x1, CommitOptions{})
	p := filepath.Join(r.setDir("vm"), lineageFile)
	f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("0123abcd") // a crash in the middle of a line
	f.Close()
	v2, x2 := version(t, "vm", v1.Digest, "office", 2)
	if c, err := commit(t, r, v2, x2, CommitOptions{}); err != nil || c.Head.Digest != v2.Digest {
		t.Fatalf("after a torn line: %+v, %v", c, err)
	}
	if ok, _ := r.isAncestor("vm", v1.Digest, v2.Digest); !ok {
		t.Fatal("the link written after the torn line was lost")
	}
}

func TestRunner(t *testing.T) {
	r, _ := Open(t.TempDir())
	if rn, err := r.Runner("vm"); rn != nil || err != nil {
		t.Fatalf("nobody recorded: %v, %v", rn, err)
	}
	d := Digest{7}
	if err := r.SetRunner(context.Background(), "vm", "home", d); err != nil {
		t.Fatal(err)
	}
	rn, err := r.Runner("vm")
	if err != nil || rn.Node != "home" || rn.Version != d {
		t.Fatalf("Runner = %+v, %v", rn, err)
	}
}

func FuzzParseLinks(f *testing.F) {
	f.Add(appendLink(nil, Link{Digest{1}, Digest{2}}))
	f.Add([]byte("zz 00\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		links := parseLinks(b)
		var enc []byte
		for d, p := range links {
			enc = appendLink(enc, Link{d, p})
		}
		again := parseLinks(enc)
		if len(again) != len(links) {
			t.Fatalf("re-encoded lineage has %d links, had %d", len(again), len(links))
		}
	})
}

func FuzzVersionJSON(f *testing.F) {
	v, _ := version(f, "vm", Digest{}, "office", 1)
	b, _ := json.Marshal(v)
	f.Add(b)
	f.Add([]byte(`{"set":"../x","images":[{"name":"a","index":"zz"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var v Version
		if json.Unmarshal(b, &v) != nil || v.Verify() != nil {
			return
		}
		again, err := json.Marshal(&v)
		if err != nil {
			t.Fatal(err)
		}
		var w Version
		if err := json.Unmarshal(again, &w); err != nil || w.Verify() != nil || w.Digest != v.Digest {
			t.Fatalf("a verified version does not survive encoding: %v", err)
		}
	})
}

// TestRemoveAndChosenNumbers: a version can be committed under a number
// above the set's (never at or below it), removed unless it is the head,
// and its lineage outlives it.
func TestRemoveAndChosenNumbers(t *testing.T) {
	r, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v1, idx1 := version(t, "vm", Digest{}, "office", 1)
	if c, err := commit(t, r, v1, idx1, CommitOptions{Seq: 7}); err != nil || c.Version.Seq != 7 {
		t.Fatalf("commit as 7: %v, %+v", err, c)
	}
	v2, idx2 := version(t, "vm", v1.Digest, "office", 2)
	if _, err := commit(t, r, v2, idx2, CommitOptions{Seq: 7}); !errors.Is(err, ErrBadVersion) {
		t.Fatalf("commit as 7 again: %v, want %v", err, ErrBadVersion)
	}
	if c, err := commit(t, r, v2, idx2, CommitOptions{}); err != nil || c.Version.Seq != 8 {
		t.Fatalf("next commit: %v, %+v", err, c)
	}
	if err := r.Remove(t.Context(), "vm", 8); err == nil {
		t.Fatal("the head was removed")
	}
	if err := r.Remove(t.Context(), "vm", 7); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(t.Context(), "vm", 7); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing it again: %v, want %v", err, ErrNotFound)
	}
	if seqs, _ := r.Seqs("vm"); !slices.Equal(seqs, []uint64{8}) {
		t.Fatalf("versions after removal: %v", seqs)
	}
	if ok, err := r.isAncestor("vm", v1.Digest, v2.Digest); err != nil || !ok {
		t.Fatalf("the removed version's lineage is gone: %v", err)
	}
}

// TestVersionFileThroughALinkIsRefused: a repository's files are read
// only as themselves, never through a symbolic link.
func TestVersionFileThroughALinkIsRefused(t *testing.T) {
	r, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, idx := version(t, "vm", Digest{}, "office", 1)
	if _, err := commit(t, r, v, idx, CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(r.versionDir("vm", 1), versionFile)
	outside := filepath.Join(t.TempDir(), versionFile)
	if err := os.Rename(p, outside); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, p); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Version("vm", 1); err == nil {
		t.Fatal("a version read through a symbolic link")
	}
}
