package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/internal/testguest/guesttest"
)

// pushedGuest is a checkpoint of the test guest pushed as set office-vm.
type pushedGuest struct {
	guest *testguest.Guest
	// dir is a short directory for the copies' work directories
	// (QEMU's socket paths are bounded).
	dir string
	// before and after are the ticks the guest printed around the
	// (last) checkpoint.
	before, after int
	// befores and afters are those of each checkpoint, in order.
	befores, afters []int
}

// pushCheckpoint starts the test guest, checkpoints it once it ticks,
// pushes the checkpoint as set office-vm from office to the serve at addr
// (node ID to) and stops the guest.
func pushCheckpoint(t *testing.T, ctx context.Context, office node, addr, to string) pushedGuest {
	t.Helper()
	return pushCheckpoints(t, ctx, office, addr, to, 1)
}

// pushCheckpoints is pushCheckpoint with n checkpoints, each pushed before
// the next, the guest ticking three times between them.
func pushCheckpoints(t *testing.T, ctx context.Context, office node, addr, to string, n int) pushedGuest {
	t.Helper()
	dir, err := os.MkdirTemp("", "ntcr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := pushedGuest{guest: guesttest.Build(t), dir: dir}
	vm := guesttest.Start(t, testguest.StartOptions{Guest: p.guest, Dir: dir})
	if _, err := vm.WaitTick(ctx, 2); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(t.TempDir(), "office-vm")
	for i := range n {
		if i > 0 {
			if _, err := vm.WaitTick(ctx, vm.LastTick()+3); err != nil {
				t.Fatal(err)
			}
		}
		p.before = vm.LastTick()
		if code, _, errs := ntc(t, ctx, "checkpoint", "--qmp", vm.QMPPath(), "--out", repo, "--name", "office-vm"); code != 0 {
			t.Fatalf("checkpoint %d: exit %d: %s", i+1, code, errs)
		}
		p.after = vm.LastTick()
		p.befores, p.afters = append(p.befores, p.before), append(p.afters, p.after)
		if _, err := push(t, ctx, office, addr, to, "--checkpoint", repo, "--name", "office-vm"); err != nil {
			t.Fatal(err)
		}
	}
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// resumeDetached runs 'ntc resume --detach' of office-vm from store as n
// with work directory work, and returns what it printed and said on
// stderr.
func (p pushedGuest) resumeDetached(t *testing.T, ctx context.Context, n node, store, work string, flags ...string) (resumeJSON, string) {
	t.Helper()
	t.Cleanup(func() { killQEMUsIn(t, work) })
	args := append([]string{"--json", "resume", "--store", store, "--name", "office-vm", "--workdir", work, "--detach",
		"--kernel", p.guest.Kernel, "--initrd", p.guest.Initrd}, flags...)
	c := n.cmd(ctx, args...)
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("resume from %s: %v: %s", store, err, stderr.String())
	}
	var res resumeJSON
	if err := json.Unmarshal(out, &res); err != nil || !res.Detached {
		t.Fatalf("resume printed %q: %v", out, err)
	}
	return res, stderr.String()
}

// copyTick waits for n ticks on a copy's console and returns the first;
// a boot message fails the test (a copy goes on, it does not boot).
func copyTick(t *testing.T, ctx context.Context, serialLog string, n int) int {
	t.Helper()
	lines := waitSerialFile(t, ctx, serialLog, n)
	for _, l := range lines {
		if strings.Contains(l, "Linux version") {
			t.Errorf("the copy booted: %q", l)
		}
	}
	return firstTick(lines)
}

// wroteImagesRe is what resume says when it wrote a version's images.
var wroteImagesRe = regexp.MustCompile(`wrote the images of (\S+) version (\d+) from the store in ([0-9.]+) s`)

// TestResumeFromOnDemandServe: a checkpoint pushed to 'serve --images
// on-demand' leaves no image file at the receiver; 'ntc resume' writes
// the version first (and says how long that took) and the copy's console
// goes on counting from the checkpoint. A second resume finds the files
// written and writes nothing.
func TestResumeFromOnDemandServe(t *testing.T) {
	guesttest.SkipIfNoQEMU(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serveWith(t, home, store, []string{"--images", "on-demand"}, office.id)
	p := pushCheckpoint(t, ctx, office, addr, home.id)
	images := filepath.Join(store, "sets", "office-vm", "images")
	if ents, _ := os.ReadDir(images); len(ents) != 0 {
		t.Fatalf("the on-demand receiver wrote %d files into %s", len(ents), images)
	}

	res, errs := p.resumeDetached(t, ctx, home, store, filepath.Join(p.dir, "copy"))
	m := wroteImagesRe.FindStringSubmatch(errs)
	if m == nil || m[1] != "office-vm" || m[2] != "1" {
		t.Fatalf("resume did not say it wrote the images of version 1: %q", errs)
	}
	secs, _ := strconv.ParseFloat(m[3], 64)
	var written int64
	ents, _ := os.ReadDir(images)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && !strings.HasPrefix(e.Name(), ".") {
			written += fi.Size()
		}
	}
	t.Logf("first resume from the on-demand repository: images (%d bytes, %d allocated) written in %.2f s; the resume itself %.0f ms (QEMU up %.0f ms, stream loaded %.0f ms)",
		written, diskUsage(t, images), secs, res.ResumeMS, res.LaunchMS, res.MigrateMS)

	diskTick, err := testguest.ReadDiskTick(ctx, filepath.Join(images, "disk-vda"))
	if err != nil {
		t.Fatal(err)
	}
	if diskTick < p.before || diskTick > p.after+1 {
		t.Fatalf("the written disk says tick %d; the guest printed %d before the checkpoint and %d after", diskTick, p.before, p.after)
	}
	if first := copyTick(t, ctx, res.SerialLog, 2); first != diskTick+1 && first != diskTick {
		t.Errorf("the copy's first tick is %d; the checkpoint's disk says %d", first, diskTick)
	} else {
		t.Logf("the checkpoint's disk says tick %d, the copy went on with tick %d", diskTick, first)
	}
	stopCopy(t, ctx, res)

	// The files hold version 1 now: a second resume writes nothing.
	if _, errs = p.resumeDetached(t, ctx, home, store, filepath.Join(p.dir, "copy2"), "--force"); wroteImagesRe.MatchString(errs) {
		t.Errorf("the second resume wrote the images again: %q", errs)
	}
}

// TestResumeVersion: of two checkpoints pushed, 'ntc resume --version 1'
// continues the first: the copy's ticks go on from the first checkpoint's,
// not the newer one's, and the image files hold version 1 for it.
func TestResumeVersion(t *testing.T) {
	guesttest.SkipIfNoQEMU(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serveWith(t, home, store, nil, office.id)
	p := pushCheckpoints(t, ctx, office, addr, home.id, 2)
	before, after, dir := p.befores, p.afters, p.dir

	res, _ := p.resumeDetached(t, ctx, home, store, filepath.Join(dir, "v1"), "--version", "1", "--force")
	first := copyTick(t, ctx, res.SerialLog, 2)
	t.Logf("checkpoint 1 between ticks %d and %d, checkpoint 2 between %d and %d; the copy of version 1 went on with tick %d",
		before[0], after[0], before[1], after[1], first)
	if first < before[0] || first > after[0]+1 || first > before[1] {
		t.Errorf("the copy of version 1 went on with tick %d; checkpoint 1 was taken between ticks %d and %d, checkpoint 2 after %d",
			first, before[0], after[0], before[1])
	}
	stopCopy(t, ctx, res)
	if code, _, errs := ntc(t, ctx, "resume", "--store", store, "--name", "office-vm", "--version", "7", "--detach"); code == 0 || !strings.Contains(errs, "version 7") {
		t.Errorf("resume of a version the set lacks: exit %d: %s", code, errs)
	}
}
