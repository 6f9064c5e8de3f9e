package safefile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// dir makes a directory holding one of each kind of thing a repository's
// reader may meet, and returns it open as a root.
func dir(t *testing.T) *os.Root {
	t.Helper()
	d := t.TempDir()
	outside := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(d, "small"), []byte("0123456789"), 0o600))
	must(os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600))
	must(os.Mkdir(filepath.Join(d, "sub"), 0o700))
	must(os.WriteFile(filepath.Join(d, "sub", "file"), []byte("inner"), 0o600))
	must(os.Symlink(filepath.Join(outside, "secret"), filepath.Join(d, "out")))
	must(os.Symlink("small", filepath.Join(d, "in")))
	must(os.Symlink(outside, filepath.Join(d, "outdir")))
	must(syscall.Mkfifo(filepath.Join(d, "fifo"), 0o600))
	// Sparse: 64 GiB that take no room; reading it would.
	f, err := os.Create(filepath.Join(d, "huge"))
	must(err)
	must(f.Truncate(64 << 30))
	must(f.Close())
	root, err := os.OpenRoot(d)
	must(err)
	t.Cleanup(func() { root.Close() })
	return root
}

func TestRead(t *testing.T) {
	root := dir(t)
	for _, tc := range []struct {
		name  string
		limit int64
		want  string // the content, or with err the error's text
		err   bool
	}{
		{"small", 10, "0123456789", false},
		{"small", NoLimit, "0123456789", false},
		{"sub/file", 5, "inner", false},
		{"small", 9, "more than the 9 allowed", true},
		{"huge", 1 << 20, "more than the 1048576 allowed", true},
		{"out", NoLimit, "escapes", true},
		{"in", NoLimit, "not a regular file (L", true},
		{"outdir/secret", NoLimit, "escapes", true},
		{"../" + filepath.Base(root.Name()) + "/small", NoLimit, "escapes", true},
		{"fifo", NoLimit, "not a regular file (p", true},
		{"sub", NoLimit, "not a regular file (d", true},
		{"missing", NoLimit, "no such file", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Read(root, tc.name, tc.limit)
			if tc.err {
				var pe *fs.PathError
				if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &pe) {
					t.Fatalf("Read(%s, %d) = %q, %v; want a path error saying %q", tc.name, tc.limit, b, err, tc.want)
				}
				return
			}
			if err != nil || string(b) != tc.want {
				t.Fatalf("Read(%s, %d) = %q, %v; want %q", tc.name, tc.limit, b, err, tc.want)
			}
		})
	}
	if _, err := Read(root, "missing", NoLimit); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing file: %v, want fs.ErrNotExist", err)
	}
}

// TestBoundBeforeAllocation: a file over its bound costs no buffer of its
// size (a 64 GiB one would not fit).
func TestBoundBeforeAllocation(t *testing.T) {
	root := dir(t)
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := Read(root, "huge", 1<<20); err == nil {
			t.Fatal("a 64 GiB file read under a 1 MiB bound")
		}
	})
	// Path errors and the Lstat's file info: a few small objects.
	if allocs > 40 {
		t.Errorf("refusing an oversized file took %.0f allocations", allocs)
	}
	if _, err := ReadSize(root, "huge", 10); err == nil || !strings.Contains(err.Error(), "more than the 10 allowed") {
		t.Errorf("ReadSize of a 64 GiB file declared 10 bytes: %v", err)
	}
}

func TestReadSize(t *testing.T) {
	root := dir(t)
	if b, err := ReadSize(root, "small", 10); err != nil || string(b) != "0123456789" {
		t.Fatalf("ReadSize(small, 10) = %q, %v", b, err)
	}
	if _, err := ReadSize(root, "small", 11); err == nil || !strings.Contains(err.Error(), "holds 10 bytes, 11 were declared") {
		t.Fatalf("ReadSize(small, 11) = %v", err)
	}
	if _, err := ReadSize(root, "small", 9); err == nil {
		t.Fatal("ReadSize(small, 9) read a 10-byte file")
	}
}

// TestReadsWhatWasThere: a file that grows while it is read gives no more
// than the size it had when opened.
func TestReadsWhatWasThere(t *testing.T) {
	root := dir(t)
	f, err := Open(root, "small", 10)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.WriteFile(filepath.Join(root.Name(), "small"), bytes.Repeat([]byte("x"), 100), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := readN(f, 10)
	if err != nil || len(b) != 10 {
		t.Fatalf("readN = %d bytes, %v", len(b), err)
	}
}

func TestIn(t *testing.T) {
	root := dir(t)
	if b, err := ReadIn(root.Name(), "sub/file", 5); err != nil || string(b) != "inner" {
		t.Fatalf("ReadIn = %q, %v", b, err)
	}
	f, err := OpenIn(root.Name(), "in", NoLimit)
	if err == nil {
		f.Close()
		t.Fatal("OpenIn followed a link")
	}
	if _, err := ReadIn(filepath.Join(root.Name(), "nothere"), "small", NoLimit); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadIn in a missing directory: %v", err)
	}
}
