package main

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ntc-project/ntc/internal/testguest/guesttest"
)

// TestResumeFromS3: a checkpoint of the running test guest pushed to
// 'ntc serve --store s3://…' resumes at another node straight from the
// bucket ('ntc resume --store s3://…' writes the images into that node's
// cache first): the copy's console goes on from the checkpoint's tick.
func TestResumeFromS3(t *testing.T) {
	guesttest.SkipIfNoQEMU(t)
	url := newS3Bed(t).url
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	office, home, elsewhere := newNode(t), newNode(t), newNode(t)
	addr, _ := serve(t, home, url, office.id)
	p := pushCheckpoint(t, ctx, office, addr, home.id)
	res, _ := p.resumeDetached(t, ctx, elsewhere, url, filepath.Join(p.dir, "copy"))
	if first := copyTick(t, ctx, res.SerialLog, 2); first < p.before || first > p.after+1 {
		t.Errorf("the copy's first tick is %d; the original printed %d before the checkpoint and %d after", first, p.before, p.after)
	}
	images, _ := filepath.Glob(filepath.Join(elsewhere.home, "cache", "s3", "*", "repo", "sets", "office-vm", "images", "disk-*"))
	if len(images) != 1 {
		t.Errorf("the images the copy runs from: %v, want one disk in the node's cache", images)
	}
	if err := syscall.Kill(res.PID, syscall.SIGTERM); err != nil {
		t.Fatalf("the detached copy is not running: %v", err)
	}
}
