package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ntc-project/ntc/chunk"
	ntcsync "github.com/ntc-project/ntc/sync"
)

// TestCheckFindsDamage pushes two versions of an image through real
// processes, then damages the receiver's repository three ways and checks
// that 'ntc check' names exactly the versions each damage breaks: a
// flipped byte inside a chunk only v2 uses (found only with --read-data),
// a truncated index of v1, and a missing pack (every version).
func TestCheckFindsDamage(t *testing.T) {
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	addr, srv := serve(t, home, store, office.id)
	img := filepath.Join(t.TempDir(), "disk.img")
	data := randomFile(t, img, 4<<20, 1)
	if _, err := push(t, t.Context(), office, addr, home.id, img, "--name", "vm"); err != nil {
		t.Fatal(err)
	}
	copy(data[1<<20:], bytes.Repeat([]byte{7}, 256<<10))
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := push(t, t.Context(), office, addr, home.id, img, "--name", "vm"); err != nil {
		t.Fatal(err)
	}
	// The repository is checked as it is on disk, with serve stopped so
	// that nothing heals or rewrites it meanwhile.
	srv.Process.Signal(os.Interrupt)
	srv.Wait()

	check := func(args ...string) (int, chunk.CheckReport, string) {
		t.Helper()
		code, out, errs := ntc(t, t.Context(), append([]string{"--json", "check", store}, args...)...)
		var rep chunk.CheckReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("check printed %q (%s): %v", out, errs, err)
		}
		return code, rep, errs
	}
	if code, rep, errs := check("--read-data"); code != 0 || !rep.OK() || rep.Owners != 2 || rep.Read != rep.Chunks || rep.Chunks == 0 {
		t.Fatalf("intact repository: exit %d, %+v, %s", code, rep, errs)
	}

	// A byte flipped inside a chunk only v2 refers to.
	repo, err := ntcsync.OpenRepoForReading(store)
	if err != nil {
		t.Fatal(err)
	}
	x1, err1 := repo.Index("vm", 1, "disk.img")
	x2, err2 := repo.Index("vm", 2, "disk.img")
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	var only2 chunk.ID
	for _, e := range x2.Entries {
		if !slices.ContainsFunc(x1.Entries, func(f chunk.Entry) bool { return f.ID == e.ID }) {
			only2 = e.ID
			break
		}
	}
	flipChunk(t, store, only2)
	packs, _ := filepath.Glob(filepath.Join(store, "packs", "pack-*.dat"))
	if code, rep, _ := check(); code != 0 || !rep.OK() {
		t.Errorf("without --read-data a damaged payload is not looked at: exit %d, %+v", code, rep)
	}
	code, rep, errs := check("--read-data")
	if code != exitError || !slices.Equal(rep.BrokenNames(), []string{"vm v2"}) || !slices.Contains(rep.Damaged, only2) ||
		!strings.Contains(errs, "push them again") {
		t.Errorf("flipped byte: exit %d, broken %v, damaged %d chunks, %s", code, rep.BrokenNames(), len(rep.Damaged), errs)
	}

	// A truncated index of v1.
	idx := filepath.Join(store, "sets", "vm", "versions", "000001", "disk.img.idx")
	fi, _ := os.Stat(idx)
	os.Truncate(idx, fi.Size()/2)
	if code, rep, _ := check(); code != exitError || !slices.Equal(rep.BrokenNames(), []string{"vm v1"}) {
		t.Errorf("truncated index: exit %d, broken %v", code, rep.BrokenNames())
	}

	// A missing pack: what is left of every version is gone.
	for _, p := range packs {
		os.Remove(p)
		os.Remove(strings.TrimSuffix(p, ".dat") + ".hdr")
	}
	if code, rep, _ := check(); code != exitError || !slices.Equal(rep.BrokenNames(), []string{"vm v1", "vm v2"}) || len(rep.Missing) == 0 {
		t.Errorf("missing packs: exit %d, broken %v, %d missing", code, rep.BrokenNames(), len(rep.Missing))
	}

	if code, _, errs := ntc(t, context.Background(), "check", t.TempDir()); code != exitUsage || !strings.Contains(errs, "not a repository") {
		t.Errorf("check of an empty directory: exit %d, %s", code, errs)
	}
}

func TestParseShare(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"10%", 0.1, true}, {"0.25", 0.25, true}, {"100%", 1, true}, {"0", 0, false}, {"150%", 0, false}, {"x", 0, false},
	} {
		got, err := parseShare(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseShare(%q) = %v, %v", tc.in, got, err)
		}
	}
}
