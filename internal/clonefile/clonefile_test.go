package clonefile

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// sparseFile writes a file of size bytes holding data at each offset in
// at (1 MiB each, random), holes elsewhere.
func sparseFile(tb testing.TB, path string, size int64, at ...int64) []byte {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	want := make([]byte, size)
	for _, off := range at {
		b := make([]byte, 1<<20)
		rand.Read(b)
		if _, err := f.WriteAt(b, off); err != nil {
			tb.Fatal(err)
		}
		copy(want[off:], b)
	}
	if err := f.Truncate(size); err != nil {
		tb.Fatal(err)
	}
	return want
}

// TestClone: the copy has the source's content and size, its holes stay
// holes (what the copy allocates is what the source has), it is a file
// of its own with the mode asked for, and an existing target is refused
// and left alone.
func TestClone(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	want := sparseFile(t, src, 64<<20, 0, 5<<20, 63<<20)
	if err := os.Chmod(src, 0o640); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dst")
	m, err := CopyFile(src, dst, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the copy (%s) differs from the source (%v)", m, err)
	}
	var sst, dst2 syscall.Stat_t
	if err := syscall.Stat(src, &sst); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(dst, &dst2); err != nil {
		t.Fatal(err)
	}
	if dst2.Blocks > sst.Blocks+64 || dst2.Blocks >= 64<<20/512/2 {
		t.Errorf("the copy (%s) allocates %d blocks, the source %d: holes were filled", m, dst2.Blocks, sst.Blocks)
	}
	if dst2.Ino == sst.Ino || os.FileMode(dst2.Mode).Perm() != 0o600 {
		t.Errorf("the copy: inode %d (source %d), mode %v; want a file of its own, 0600", dst2.Ino, sst.Ino, os.FileMode(dst2.Mode).Perm())
	}
	t.Logf("copied by %s: %d blocks of 512 bytes, the source %d", m, dst2.Blocks, sst.Blocks)

	if _, err := CopyFile(src, dst, 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("a copy over an existing file: %v, want fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, want) {
		t.Error("the refused copy changed the existing file")
	}
	// An empty file, and one that is all hole.
	for _, size := range []int64{0, 3 << 20} {
		s := filepath.Join(dir, "empty")
		os.Remove(s)
		sparseFile(t, s, size)
		d := filepath.Join(dir, "empty-copy")
		os.Remove(d)
		if _, err := CopyFile(s, d, 0o600); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(d); err != nil || fi.Size() != size {
			t.Errorf("copy of a %d-byte hole: %v, %v", size, fi, err)
		}
	}
	if _, err := CopyFile(dir, filepath.Join(dir, "d"), 0o600); err == nil {
		t.Error("a directory was copied")
	}
}
