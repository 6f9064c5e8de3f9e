package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/capture"
	ntcsync "github.com/ntc-project/ntc/sync"
)

// TestPushCheckpoint checkpoints the running test guest twice and pushes
// each checkpoint between two real ntc processes: the second push moves a
// small fraction of the first, and the receiver's images are byte for byte
// the checkpoint's disk, RAM blocks, device state, stream description and
// manifest.
func TestPushCheckpoint(t *testing.T) {
	vm := startTickingGuest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serve(t, home, store, office.id)
	repo := filepath.Join(t.TempDir(), "office")
	const set = "office-vm"

	checkpoint := func(seq int) {
		t.Helper()
		code, _, errs := ntc(t, ctx, "checkpoint", "--qmp", vm.QMPPath(), "--out", repo, "--name", set)
		if code != 0 {
			t.Fatalf("checkpoint %d: exit %d: %s", seq, code, errs)
		}
	}
	checkpoint(1)
	res1, err := push(t, ctx, office, addr, home.id, "--checkpoint", repo, "--name", set)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("push of checkpoint 1: %d bytes on the wire, %d chunks", res1.BytesSent, res1.ChunksSent)
	if res1.Version != 1 || res1.Checkpoint != 1 || res1.Set != "office-vm" {
		t.Fatalf("first push: %+v", res1)
	}
	checkReceived(t, repo, 1, store, set)

	if _, err := vm.WaitTick(ctx, vm.LastTick()+2); err != nil {
		t.Fatal(err)
	}
	checkpoint(2)
	res2, err := push(t, ctx, office, addr, home.id, "--checkpoint", repo, "--name", set)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("push of checkpoint 2: %d bytes on the wire (%.1f%% of the first), %d chunks, %d as patches, %d bytes changed",
		res2.BytesSent, 100*float64(res2.BytesSent)/float64(res1.BytesSent), res2.ChunksSent, res2.Patched, res2.ChangedBytes)
	if res2.Version != 2 || res2.Checkpoint != 2 {
		t.Fatalf("second push: %+v", res2)
	}
	if res2.BytesSent*5 > res1.BytesSent {
		t.Errorf("the second push moved %d bytes, more than a fifth of the first's %d", res2.BytesSent, res1.BytesSent)
	}
	checkReceived(t, repo, 2, store, set)

	// An older checkpoint does not silently become current again; with
	// --force it does, and nothing travels: the receiver holds it.
	if _, err := push(t, ctx, office, addr, home.id, "--checkpoint", repo, "--name", set, "--seq", "1"); err == nil || !strings.Contains(err.Error(), "not make it current") {
		t.Errorf("push of the older checkpoint 1: %v, want it kept but not made current", err)
	}
	checkReceived(t, repo, 2, store, set)
	res3, err := push(t, ctx, office, addr, home.id, "--checkpoint", repo, "--name", set, "--seq", "1", "--force")
	if err != nil {
		t.Fatal(err)
	}
	if res3.Version != 1 || res3.Checkpoint != 1 || res3.ChunksSent != 0 {
		t.Errorf("push of checkpoint 1 again: %+v", res3)
	}
	checkReceived(t, repo, 1, store, set)
	if _, err := vm.WaitTick(ctx, vm.LastTick()+1); err != nil {
		t.Fatalf("the guest stopped ticking: %v", err)
	}
}

// checkReceived compares the receiver's current version of set (in the
// repository store) with checkpoint seq of the sender's repository: the
// same version (digest), every image byte for byte, and the manifest.
func checkReceived(t *testing.T, repoDir string, seq int, store, set string) {
	t.Helper()
	ctx := t.Context()
	repo, err := capture.OpenRepositoryForReading(repoDir, set)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	m, err := repo.Manifest(seq)
	if err != nil {
		t.Fatal(err)
	}
	v, err := repo.Version(seq)
	if err != nil {
		t.Fatal(err)
	}
	rr, err := ntcsync.OpenRepoForReading(store)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := rr.Current(set)
	if err != nil || cur == nil || cur.Digest != v.Digest {
		t.Fatalf("the receiver's current version %+v (%v), want checkpoint %d (%s)", cur, err, seq, v.Digest.Short())
	}
	got, err := receivedManifest(rr, set)
	if err != nil || got.Machine.Type != m.Machine.Type || len(got.RAM) != len(m.RAM) || got.Created != m.Created {
		t.Errorf("the receiver's manifest is not checkpoint %d's (%v): %+v", seq, err, got)
	}
	dir := filepath.Join(store, "sets", set)
	imgs, err := repo.Images(m)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[capture.ImageKind]int{}
	for _, im := range imgs {
		kinds[im.Kind]++
		want, err := repo.Image(ctx, seq, im.Name+".idx")
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(filepath.Join(dir, "images", im.Name))
		if err != nil {
			t.Error(err)
			continue
		}
		if fi, _ := f.Stat(); fi.Size() != want.Size() {
			t.Errorf("%s: the receiver's file holds %d bytes, the checkpoint %d", im.Name, fi.Size(), want.Size())
		} else if off, err := sameContent(io.NewSectionReader(want, 0, want.Size()), f); err != nil {
			t.Errorf("%s: differs from checkpoint %d at %d: %v", im.Name, seq, off, err)
		}
		f.Close()
	}
	if kinds[capture.KindDisk] != 1 || kinds[capture.KindRAM] < 2 || kinds[capture.KindDevice] != 1 || kinds[capture.KindStream] != 1 {
		t.Errorf("checkpoint %d's images: %v", seq, kinds)
	}
}

var errDiffer = errors.New("content differs")

// sameContent compares two readers block by block and returns where they
// first differ.
func sameContent(a, b io.Reader) (int64, error) {
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	var off int64
	for {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return off, errDiffer
		}
		off += int64(na)
		if ea != nil || eb != nil {
			if (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF) {
				return off, nil
			}
			return off, errors.Join(ea, eb)
		}
	}
}
