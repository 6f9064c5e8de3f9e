package repo

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestOpen: opening makes the directories a repository needs, private
// even when an older ntc made them open to all, and clears what a dead
// process left in DIR/tmp while sparing what a live one writes there.
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{setsDir, tmpDir} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stale := filepath.Join(dir, tmpDir, "version-dead")
	fresh := filepath.Join(dir, tmpDir, "version-live")
	for _, p := range []string{stale, fresh} {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-staleTmp - time.Minute)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{setsDir, tmpDir} {
		if fi, err := os.Stat(filepath.Join(dir, d)); err != nil || fi.Mode().Perm() != dirMode {
			t.Errorf("%s after Open: %v, %v; want mode %#o", d, fi.Mode(), err, dirMode)
		}
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a stale entry of tmp survived Open: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a live process's entry of tmp was removed: %v", err)
	}
	// A new directory, nested: created, private.
	nested := filepath.Join(t.TempDir(), "a", "b")
	if _, err := Open(nested); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(nested); err != nil || fi.Mode().Perm() != dirMode {
		t.Errorf("new repository directory: %v, %v", fi.Mode(), err)
	}
}

// TestOpenExisting: only a repository opens, and opening creates nothing.
func TestOpenExisting(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	setsFile := t.TempDir()
	if err := os.WriteFile(filepath.Join(setsFile, setsDir), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	made := t.TempDir()
	if _, err := Open(made); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dir string
		ok        bool
	}{
		{"a repository", made, true},
		{"an empty directory", t.TempDir(), false},
		{"a missing directory", filepath.Join(t.TempDir(), "none"), false},
		{"a file", file, false},
		{"sets is a file", setsFile, false},
		{"no name", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := OpenExisting(tc.dir)
			if tc.ok {
				if err != nil || r.Dir() != tc.dir {
					t.Fatalf("OpenExisting(%s) = %v, %v", tc.dir, r, err)
				}
				return
			}
			if !errors.Is(err, ErrNotRepo) {
				t.Fatalf("OpenExisting(%s) = %v, want ErrNotRepo", tc.dir, err)
			}
			if tc.dir != "" {
				if _, err := os.Stat(filepath.Join(tc.dir, tmpDir)); err == nil {
					t.Errorf("OpenExisting made %s/tmp", tc.dir)
				}
			}
		})
	}
}
