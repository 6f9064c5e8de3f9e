package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ntc-project/ntc/repo"
)

// TestForget removes versions and a set from a receiver's repository with
// 'ntc forget', through real processes. Set keep (8 MiB) and set gone
// (72 MiB, of which 4 MiB are keep's, then a second version with 1 MiB
// changed) are pushed. Forgetting a version drops exactly the chunks only
// it used; forgetting the set gives back the store's bytes its pushes
// added (within 1%), and keep stays intact: restorable byte for byte,
// 'ntc check --read-data' clean. --dry-run changes nothing; the current
// version alone, a set this node runs and one with a pending hand-off are
// refused, the last two unless --force.
func TestForget(t *testing.T) {
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	addr, srv := serve(t, home, store, office.id)
	dir := t.TempDir()
	keepImg, goneImg := filepath.Join(dir, "keep.img"), filepath.Join(dir, "gone.img")
	keepData := randomFile(t, keepImg, 8<<20, 1)
	goneData := append(bytes.Clone(keepData[:4<<20]), randomFile(t, goneImg, 68<<20, 2)...)
	if err := os.WriteFile(goneImg, goneData, 0o600); err != nil {
		t.Fatal(err)
	}
	pushAs := func(img, set string) {
		t.Helper()
		if _, err := push(t, t.Context(), office, addr, home.id, img, "--name", set); err != nil {
			t.Fatal(err)
		}
	}
	packBytes := func() int64 {
		t.Helper()
		_, n, err := storeUsage(store)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	pushAs(keepImg, "keep")
	afterKeep := packBytes()
	pushAs(goneImg, "gone")
	copy(goneData[40<<20:], bytes.Repeat([]byte{9}, 1<<20))
	if err := os.WriteFile(goneImg, goneData, 0o600); err != nil {
		t.Fatal(err)
	}
	pushAs(goneImg, "gone")
	afterGone := packBytes()
	// The repository is changed with serve stopped: nothing else writes it.
	srv.Process.Signal(os.Interrupt)
	srv.Wait()

	forget := func(args ...string) (int, forgetJSON, string) {
		t.Helper()
		c := home.cmd(t.Context(), append([]string{"--json", "forget", "--store", store}, args...)...)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.Output()
		var res forgetJSON
		if err == nil {
			if jerr := json.Unmarshal(out, &res); jerr != nil {
				t.Fatalf("forget %v printed %q: %v", args, out, jerr)
			}
		}
		return exitCode(err), res, stderr.String()
	}
	nodes, err := repo.OpenExisting(store)
	if err != nil {
		t.Fatal(err)
	}
	seqs := func(set string) []uint64 {
		t.Helper()
		s, err := nodes.Seqs(set)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// Refused: the current version alone, a version or set not there.
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"gone", "--version", "2"}, "current version"},
		{[]string{"gone", "--version", "7"}, "no version 7"},
		{[]string{"nothing"}, "no set"},
	} {
		if code, _, errs := forget(tc.args...); code == 0 || !strings.Contains(errs, tc.says) {
			t.Errorf("forget %v: exit %d, %q; want it refused saying %q", tc.args, code, errs, tc.says)
		}
	}

	// A version: --dry-run first, then for real.
	code, dry, errs := forget("gone", "--version", "1", "--dry-run")
	if code != 0 || !dry.DryRun || dry.OnlyChunks == 0 || dry.OnlyBytes < 1<<20 || dry.OnlyBytes > 2<<20 || packBytes() != afterGone || len(seqs("gone")) != 2 {
		t.Fatalf("forget gone --version 1 --dry-run: exit %d, %+v, %s; want 1-2 MiB only it uses, nothing changed", code, dry, errs)
	}
	if out, err := home.cmd(t.Context(), "forget", "--store", store, "gone", "--version", "1", "--dry-run").Output(); err != nil ||
		!strings.HasPrefix(string(out), "would forget version 1 of gone: ") || !strings.Contains(string(out), "nothing changed") {
		t.Errorf("forget --dry-run (text): %q, %v", out, err)
	}
	code, v1, errs := forget("gone", "--version", "1")
	if code != 0 || v1.OnlyChunks != dry.OnlyChunks || v1.ChunksDropped != dry.OnlyChunks || len(seqs("gone")) != 1 {
		t.Fatalf("forget gone --version 1: exit %d, %+v, %s; versions left %v", code, v1, errs, seqs("gone"))
	}
	t.Logf("forget of version 1: %d chunks (%d bytes) only it used, dropped; packs %d -> %d bytes (its pack, mostly live, is not rewritten)",
		v1.OnlyChunks, v1.OnlyBytes, v1.StoreBytesBefore, v1.StoreBytesAfter)

	// A set this node runs, or with a hand-off waiting, needs --force.
	head, err := nodes.Head("gone")
	if err != nil || head == nil {
		t.Fatal(head, err)
	}
	if err := nodes.SetRunner(t.Context(), "gone", home.id, head.Digest); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := forget("gone"); code == 0 || !strings.Contains(errs, "this node runs gone") || !strings.Contains(errs, "--force") {
		t.Errorf("forget of a set this node runs: exit %d, %q", code, errs)
	}
	if err := writePending(pendingPath(store, "keep"), pendingHandoff{Peer: office.id, Digest: head.Digest, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := forget("keep"); code == 0 || !strings.Contains(errs, "hand-off of keep") {
		t.Errorf("forget of a set with a pending hand-off: exit %d, %q", code, errs)
	}
	os.Remove(pendingPath(store, "keep"))

	// The set, with --force: what its pushes added to the store goes.
	code, gone, errs := forget("gone", "--force")
	if code != 0 || !gone.WholeSet || len(gone.Forced) != 1 || seqs("gone") != nil {
		t.Fatalf("forget gone --force: exit %d, %+v, %s", code, gone, errs)
	}
	added, freed := afterGone-afterKeep, gone.StoreBytesBefore-gone.StoreBytesAfter
	t.Logf("forget of set gone: %d chunks (%d bytes of data) only it used; packs %d -> %d bytes: %d freed, its pushes had added %d (%.4f)",
		gone.OnlyChunks, gone.OnlyBytes, gone.StoreBytesBefore, gone.StoreBytesAfter, freed, added, float64(freed)/float64(added))
	if d := gone.StoreBytesAfter - afterKeep; d < -afterKeep/100 || d > afterKeep/100 || gone.BytesFreed != freed {
		t.Errorf("after forgetting gone the packs hold %d bytes (collection says %d freed); before gone was pushed %d: want within 1%%",
			gone.StoreBytesAfter, gone.BytesFreed, afterKeep)
	}
	if sets, _ := nodes.Sets(); len(sets) != 1 || sets[0] != "keep" {
		t.Errorf("sets left: %v", sets)
	}

	// keep is intact.
	if code, out, errs := ntc(t, context.Background(), "check", store, "--read-data"); code != 0 {
		t.Errorf("check --read-data after forget: exit %d, %s %s", code, out, errs)
	}
	to := filepath.Join(t.TempDir(), "keep.raw")
	if code, _, errs := ntc(t, context.Background(), "restore", "keep", "--store", store, "--image", "keep.img", "--to", to); code != 0 {
		t.Fatalf("restore keep: exit %d, %s", code, errs)
	}
	if got, err := os.ReadFile(to); err != nil || !bytes.Equal(got, keepData) {
		t.Errorf("keep restored after forgetting gone differs (%d bytes, %v)", len(got), err)
	}
}
