package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/internal/testguest/guesttest"
)

// TestResumeFromS3: a checkpoint of the running test guest pushed to
// 'ntc serve --store s3://…' resumes at another node straight from the
// bucket ('ntc resume --store s3://…' writes the images into that node's
// cache first): the copy's console goes on from the checkpoint's tick.
func TestResumeFromS3(t *testing.T) {
	guesttest.SkipIfNoQEMU(t)
	url := newS3Bed(t).url
	vmDir, err := os.MkdirTemp("", "ntcr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(vmDir) })
	guest := guesttest.Build(t)
	vm := guesttest.Start(t, testguest.StartOptions{Guest: guest, Dir: vmDir})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if _, err := vm.WaitTick(ctx, 2); err != nil {
		t.Fatal(err)
	}
	office, home, elsewhere := newNode(t), newNode(t), newNode(t)
	addr, _ := serve(t, home, url, office.id)
	repo := filepath.Join(t.TempDir(), "office-vm")
	before := vm.LastTick()
	if code, _, errs := ntc(t, ctx, "checkpoint", "--qmp", vm.QMPPath(), "--out", repo, "--name", "office-vm"); code != 0 {
		t.Fatalf("checkpoint: exit %d: %s", code, errs)
	}
	after := vm.LastTick()
	if _, err := push(t, ctx, office, addr, home.id, "--checkpoint", repo, "--name", "office-vm"); err != nil {
		t.Fatal(err)
	}
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	work := filepath.Join(vmDir, "copy")
	t.Cleanup(func() { killQEMUsIn(t, work) })
	c := elsewhere.cmd(ctx, "--json", "resume", "--store", url, "--name", "office-vm", "--workdir", work, "--detach",
		"--kernel", guest.Kernel, "--initrd", guest.Initrd)
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("resume from the bucket: %v: %s", err, stderr.String())
	}
	var res resumeJSON
	if err := json.Unmarshal(out, &res); err != nil || !res.Detached {
		t.Fatalf("resume printed %q: %v", out, err)
	}
	first := -1
	for _, l := range waitSerialFile(t, ctx, res.SerialLog, 2) {
		if strings.Contains(l, "Linux version") {
			t.Errorf("the copy booted: %q", l)
		}
		if m := tickRe.FindStringSubmatch(l); m != nil && first < 0 {
			first, _ = strconv.Atoi(m[1])
		}
	}
	if first < before || first > after+1 {
		t.Errorf("the copy's first tick is %d; the original printed %d before the checkpoint and %d after", first, before, after)
	}
	images, _ := filepath.Glob(filepath.Join(elsewhere.home, "cache", "s3", "*", "repo", "sets", "office-vm", "images", "disk-*"))
	if len(images) != 1 {
		t.Errorf("the images the copy runs from: %v, want one disk in the node's cache", images)
	}
	if err := syscall.Kill(res.PID, syscall.SIGTERM); err != nil {
		t.Fatalf("the detached copy is not running: %v", err)
	}
}
