package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/qemu"
	"github.com/ntc-project/ntc/resume"
	ntcsync "github.com/ntc-project/ntc/sync"
)

// TestHint: a library's error, however wrapped, gets the command line's
// advice; one naming two conditions gets both; others get none.
func TestHint(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want []string
	}{
		{fmt.Errorf("checkpoint: %w", fmt.Errorf("%w at /x.sock", qemu.ErrNoSocket)), []string{"--qmp SOCKET"}},
		{fmt.Errorf("x: %w", capture.ErrNotConverging), []string{"--method background-snapshot"}},
		{fmt.Errorf("layer: %w: %w", capture.ErrLayerNotPlain, capture.ErrUnsupported), []string{"qemu-img convert -O qcow2"}},
		{fmt.Errorf("resume: %w", resume.ErrLoadTimeout), []string{"--load-timeout"}},
		{fmt.Errorf("kernel and initrd: %w; %w", resume.ErrNeedKernel, resume.ErrNeedInitrd), []string{"--kernel PATH", "--initrd PATH"}},
		{fmt.Errorf("push: %w", ntcsync.ErrVersionMismatch), []string{"upgrade ntc on both sides"}},
		{fmt.Errorf("push: %w", ntcsync.ErrNoSpace), []string{"free space on the receiver"}},
		{errors.New("something else"), nil},
	} {
		got := hint(tc.err)
		if lines := strings.Count(got, "hint: "); lines != len(tc.want) {
			t.Errorf("hint(%v) = %q: %d hints, want %d", tc.err, got, lines, len(tc.want))
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("hint(%v) = %q, want it to say %q", tc.err, got, w)
			}
		}
	}
}

// TestHintPrinted: ntc prints the hint under the error it follows.
func TestHintPrinted(t *testing.T) {
	dir := t.TempDir()
	code, _, errs := ntc(t, t.Context(), "checkpoint", "--qmp", filepath.Join(dir, "nope.sock"), "--out", filepath.Join(dir, "repo"))
	if code != exitError || !strings.Contains(errs, "no QMP socket at") || !strings.Contains(errs, "\nhint: give the running QEMU's QMP socket with --qmp SOCKET\n") {
		t.Errorf("exit %d, stderr %q; want the error and the --qmp hint", code, errs)
	}
}
