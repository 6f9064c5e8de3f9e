package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestCheckpointToS3: 'ntc checkpoint --out s3://…' checkpoints a working
// guest into the node repository and uploads each version to the bucket;
// the second upload carries what the guest changed, not the whole guest,
// and the bucket's disk restores byte for byte as the node's does.
func TestCheckpointToS3(t *testing.T) {
	vm := startTickingGuest(t)
	bed := newS3Bed(t)
	office := newNode(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	checkpoint := func() checkpointJSON {
		t.Helper()
		out, err := office.cmd(ctx, "--json", "checkpoint", "--qmp", vm.QMPPath(), "--out", bed.url, "--name", "web").Output()
		if err != nil {
			t.Fatalf("checkpoint --out %s: %v: %s", bed.url, err, stderrOf(err))
		}
		var c checkpointJSON
		if err := json.Unmarshal(out, &c); err != nil || c.Uploaded == nil {
			t.Fatalf("checkpoint printed %q (%v): want its upload", out, err)
		}
		if !c.Uploaded.Current || c.Uploaded.Digest != c.Digest {
			t.Errorf("checkpoint %d (%s) uploaded as %+v: want it current in the bucket, same digest", c.Seq, c.Digest.Short(), *c.Uploaded)
		}
		return c
	}
	first := checkpoint()
	if _, err := vm.WaitTick(ctx, vm.LastTick()+2); err != nil {
		t.Fatal(err)
	}
	second := checkpoint()
	up1, up2 := first.Uploaded, second.Uploaded
	t.Logf("first upload %d of %d chunks, %d bytes; second %d of %d chunks, %d bytes (guest wrote %d bytes of disk, %d RAM pages new)",
		up1.Copied, up1.Chunks, up1.CopiedBytes, up2.Copied, up2.Chunks, up2.CopiedBytes, second.DiskBytesChanged, second.RAMPagesNew)
	if up1.Copied != up1.Chunks {
		t.Errorf("the first upload copied %d of %d chunks into an empty bucket", up1.Copied, up1.Chunks)
	}
	// What the second checkpoint stored new is all the bucket lacks.
	if newBytes := second.DiskBytesNew + second.RAMBytesNew; up2.CopiedBytes > 2*newBytes+(1<<20) || up2.CopiedBytes*10 > up1.CopiedBytes {
		t.Errorf("the second upload copied %d bytes; the checkpoint stored %d new (the first upload: %d)", up2.CopiedBytes, newBytes, up1.CopiedBytes)
	}

	sets := lsStore(t, office, bed.url)
	web, ok := sets["web"]
	if !ok || len(web.Versions) != 2 || web.Current == nil {
		t.Fatalf("the bucket lists %+v, want set web with two versions", sets)
	}
	disk := ""
	for _, im := range web.Current.Images {
		if strings.HasPrefix(im.Name, "disk-") {
			disk = im.Name
		}
	}
	if disk == "" {
		t.Fatalf("the bucket's current version has no disk: %+v", web.Current.Images)
	}
	fromBucket := restoreFrom(t, office, bed.url, "web", disk, 0)
	fromNode := restoreFrom(t, office, second.Repo, "web", disk, 0)
	if !bytes.Equal(fromBucket, fromNode) || len(fromNode) == 0 {
		t.Errorf("%s restored from the bucket (%d bytes) differs from the node's (%d bytes)", disk, len(fromBucket), len(fromNode))
	}
	if _, err := vm.WaitTick(ctx, vm.LastTick()+1); err != nil {
		t.Fatalf("the guest stopped ticking: %v", err)
	}
}
