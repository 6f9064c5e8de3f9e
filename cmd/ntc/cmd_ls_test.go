package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ntcsync "github.com/ntc-project/ntc/sync"
)

// TestLs lists a repository holding a set of two versions and one of one:
// counts read as English, the sender's whole ID is printed, and --json
// gives digests as hex strings (the manifest's own) and each image's path.
func TestLs(t *testing.T) {
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serve(t, home, store, office.id)
	dir := t.TempDir()
	disk, ram := filepath.Join(dir, "disk.img"), filepath.Join(dir, "ram.img")
	randomFile(t, disk, 1<<20, 1)
	randomFile(t, ram, 1<<20, 2)
	for _, img := range []string{disk, ram} {
		if _, err := push(t, t.Context(), office, addr, home.id, img); err != nil {
			t.Fatal(err)
		}
	}
	randomFile(t, disk, 1<<20, 3)
	if _, err := push(t, t.Context(), office, addr, home.id, disk); err != nil {
		t.Fatal(err)
	}

	code, out, errs := ntc(t, t.Context(), "ls", "--store", store)
	if code != 0 {
		t.Fatalf("ls: exit %d: %s", code, errs)
	}
	for _, want := range []string{"disk.img: 2 versions\n", "ram.img: 1 version\n", "from " + office.id + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("ls printed\n%s\nwithout %q", out, want)
		}
	}

	code, out, errs = ntc(t, t.Context(), "--json", "ls", "--store", store)
	if code != 0 {
		t.Fatalf("ls --json: exit %d: %s", code, errs)
	}
	var sets []lsJSON
	if err := json.Unmarshal([]byte(out), &sets); err != nil {
		t.Fatalf("ls --json printed %s: %v", out, err)
	}
	if len(sets) != 2 || sets[0].Set != "disk.img" || len(sets[0].Versions) != 2 || sets[1].Set != "ram.img" || len(sets[1].Versions) != 1 {
		t.Fatalf("ls --json: %+v", sets)
	}
	repo, err := ntcsync.OpenRepoForReading(store)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sets {
		cur := s.Current
		if cur == nil || cur.Sender != office.id || len(cur.Images) != 1 {
			t.Fatalf("set %s: current %+v", s.Set, cur)
		}
		m, err := repo.Manifest(s.Set, cur.Version)
		if err != nil {
			t.Fatal(err)
		}
		im := cur.Images[0]
		if im.Digest != m.Images[0].Digest.String() || len(im.Digest) != 64 {
			t.Errorf("set %s: digest %q, the manifest's is %s", s.Set, im.Digest, m.Images[0].Digest)
		}
		if data, err := os.ReadFile(im.Path); err != nil || int64(len(data)) != im.Size {
			t.Errorf("set %s: image path %s: %d bytes, %v; want %d", s.Set, im.Path, len(data), err, im.Size)
		}
	}
}
