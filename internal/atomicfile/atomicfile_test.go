package atomicfile

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteNew: a new file gets the content and the mode asked for; an
// existing one is refused and left as it was; a failed fill leaves no
// file.
func TestWriteNew(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	fill := func(b []byte) func(io.Writer) error {
		return func(w io.Writer) error { _, err := w.Write(b); return err }
	}
	if err := WriteNew(p, 0o600, fill([]byte("one"))); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "one" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if err := WriteNew(p, 0o600, fill([]byte("two"))); !errors.Is(err, os.ErrExist) {
		t.Errorf("writing over an existing file: %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, []byte("one")) {
		t.Errorf("the existing file now holds %q", b)
	}
	bad := errors.New("fill failed")
	q := filepath.Join(dir, "g")
	if err := WriteNew(q, 0o600, func(w io.Writer) error { w.Write([]byte("part")); return bad }); !errors.Is(err, bad) {
		t.Errorf("a failed fill: %v", err)
	}
	if _, err := os.Stat(q); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed fill left %s: %v", q, err)
	}
}
