package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/qemu"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/resume"
	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"
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
		{fmt.Errorf("enable: %w: %w", capture.ErrNoBackgroundSnapshot, capture.ErrUnsupported), []string{"--method precopy"}},
		{fmt.Errorf("read index: %w: %w: version 9", chunk.ErrCorruptIndex, chunk.ErrIndexVersion), []string{"upgrade ntc here"}},
		{fmt.Errorf("push: %w", ntcsync.ErrLimit), []string{"raise the limit there"}},
		{fmt.Errorf("push: %w", repo.ErrDiverged), []string{"--force"}},
		{fmt.Errorf("kernel and initrd: %w; %w", resume.ErrNeedKernel, resume.ErrNeedInitrd), []string{"--kernel PATH", "--initrd PATH"}},
		{fmt.Errorf("push: %w", ntcsync.ErrVersionMismatch), []string{"upgrade ntc on both sides"}},
		{fmt.Errorf("push: %w", ntcsync.ErrNoSpace), []string{"free space on the receiver"}},
		{fmt.Errorf("connect to h:1: %w", transport.ErrNoAnswer), []string{"'ntc serve' runs there"}},
		{fmt.Errorf("push: %w", fmt.Errorf("open repository d: %w", repo.ErrNotRepo)), []string{"'ntc checkpoint --out'"}},
		{fmt.Errorf("x: %w", capture.ErrGuestNotRunning), []string{"virsh start or resume DOMAIN"}},
		{fmt.Errorf("lock: %w", capture.ErrBusy), []string{"wait for the other checkpoint"}},
		{fmt.Errorf("x: %w (status active): %w", capture.ErrMigrating, capture.ErrBusy), []string{"wait for the other checkpoint", "migrate_cancel"}},
		{fmt.Errorf("x: %w: %w", capture.ErrHeadUnreadable, capture.ErrOldManifest), []string{"into another set", "take a new checkpoint with this ntc"}},
		{fmt.Errorf("x: %w: exec: not found", capture.ErrNoQemuImg), []string{"qemu-utils"}},
		{fmt.Errorf("libvirt URI %q: %w", "qemu+ssh://h/system", capture.ErrRemoteLibvirt), []string{"--connect qemu:///system"}},
		{fmt.Errorf("%w in /run/libvirt", capture.ErrNoLibvirtd), []string{"is libvirtd"}},
		{fmt.Errorf("domain: %w: %w", capture.ErrNoDomain, errors.New("Domain not found")), []string{"list --all"}},
		{fmt.Errorf("x: %w", capture.ErrNoQEMUProcess), []string{"on the domain's host"}},
		{fmt.Errorf("cmdline: %w: %w", qemu.ErrNoAccess, os.ErrPermission), []string{"as QEMU's user or as root"}},
		{fmt.Errorf("open chunk store d: %w", chunk.ErrStoreBusy), []string{"another ntc process"}},
		{fmt.Errorf("%w: %w", ntcsync.ErrDamagedStore, ntcsync.ErrOldSender), []string{"upgrade ntc on the sending node"}},
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

// TestPushCheckpointNotARepository: push --checkpoint of a directory that
// is no node repository says so once, with the hint, and leaves the
// directory as it was (reading what the receiver acknowledged would have
// made a repository of it).
func TestPushCheckpointNotARepository(t *testing.T) {
	office, home := newNode(t), newNode(t)
	dir := t.TempDir()
	_, err := push(t, t.Context(), office, "127.0.0.1:9", home.id, "--checkpoint", dir)
	if err == nil || !strings.Contains(err.Error(), repo.ErrNotRepo.Error()) ||
		strings.Count(err.Error(), "hint: ") != 1 || !strings.Contains(err.Error(), "'ntc checkpoint --out'") {
		t.Fatalf("push --checkpoint of an empty directory: %v; want ErrNotRepo and its hint, once", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the directory holds %d entries after the refused push, want none", len(left))
	}
}
