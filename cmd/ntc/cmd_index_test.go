package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestIndexRangeExamples runs the README's incremental index, whose second
// range is written START-END with END a sum (3G-3G+4K), on a sparse 4 GiB
// image: it reads only around the two changes and equals a full index.
func TestIndexRangeExamples(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(4 << 30); err != nil {
		t.Fatal(err)
	}
	write := func(off int64, b byte, n int) {
		t.Helper()
		if _, err := f.WriteAt(bytes.Repeat([]byte{b, b + 1, b + 2}, n/3+1)[:n], off); err != nil {
			t.Fatal(err)
		}
	}
	write(1<<30, 1, 64<<10)
	write(3<<30, 2, 4<<10)
	if code, _, errs := ntc(t, t.Context(), "index", img); code != 0 {
		t.Fatalf("index: exit %d: %s", code, errs)
	}
	write(1<<30, 7, 64<<10)
	write(3<<30, 8, 4<<10)
	next := filepath.Join(dir, "new.idx")
	code, out, errs := ntc(t, t.Context(), "--json", "index", img, "--prev", img+".idx", "--changed", "1G+64K,3G-3G+4K", "-o", next)
	if code != 0 {
		t.Fatalf("index --changed 1G+64K,3G-3G+4K: exit %d: %s", code, errs)
	}
	var inc indexJSON
	if err := json.Unmarshal([]byte(out), &inc); err != nil {
		t.Fatal(err)
	}
	if inc.Mode != "incremental" || inc.BytesRead == 0 || inc.BytesRead > 1<<20 || inc.Diff == nil || inc.Diff.NewBytes < 68<<10 {
		t.Errorf("incremental index: mode %s, read %d bytes, diff %+v; want both changes read and new", inc.Mode, inc.BytesRead, inc.Diff)
	}
	checkSameAsFullIndex(t, img, next)
}

// checkSameAsFullIndex checks that the index file idx (written
// incrementally) equals a full index of img.
func checkSameAsFullIndex(t *testing.T, img, idx string) {
	t.Helper()
	full := filepath.Join(t.TempDir(), "full.idx")
	if code, _, errs := ntc(t, t.Context(), "index", img, "-o", full); code != 0 {
		t.Fatalf("full index: %s", errs)
	}
	a, err1 := os.ReadFile(idx)
	b, err2 := os.ReadFile(full)
	if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
		t.Errorf("the incremental index %s differs from a full one (%v, %v)", idx, err1, err2)
	}
}
