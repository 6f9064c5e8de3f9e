package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestSyncHandoffReceiverKilled: the receiving side killed (kill -9 of its
// serve) while it starts the copy: the copy does not survive it, the
// original runs on at the office, and running the hand-off again once
// serve is back finishes it, with one copy running, at home.
func TestSyncHandoffReceiverKilled(t *testing.T) {
	_, guest, vm, ctx := startRoundTripGuest(t, 0)
	office, home := newNode(t), newNode(t)
	officeRepo, homeRepo := t.TempDir(), t.TempDir()
	homeCopy := filepath.Join(home.home, "resume", "vm")
	t.Cleanup(func() { killQEMUsIn(t, homeCopy) })
	y := fmt.Sprintf("resume:\n  kernel: %s\n  initrd: %s\n", guest.Kernel, guest.Initrd)
	if err := os.WriteFile(filepath.Join(home.home, "ntc.yaml"), []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	homeAddr, srv := serveWith(t, home, homeRepo, []string{"--resume-allow", office.id}, office.id)
	y = fmt.Sprintf("repo: %s\nvms:\n  vm:\n    qmp: %s\npeers:\n  home: {addr: %q, id: %s}\n", officeRepo, vm.QMPPath(), homeAddr, home.id)
	if err := os.WriteFile(filepath.Join(office.home, "ntc.yaml"), []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}

	// Kill home's serve as soon as the copy's QEMU appears.
	c := office.cmd(ctx, "--json", "sync", "vm", "--to", "home", "--handoff")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, func() bool { return len(qemusIn(t, homeCopy)) > 0 })
	srv.Process.Signal(syscall.SIGKILL)
	err := c.Wait()
	t.Logf("sync with home's serve killed: %v: %s", err, stderr.String())
	if err == nil {
		t.Fatal("the hand-off succeeded although home's serve was killed while it started the copy")
	}
	// The copy went with serve; the original runs on.
	waitFor(t, time.Minute, func() bool { return len(qemusIn(t, homeCopy)) == 0 })
	if !guestRunning(ctx, vm.QMPPath()) {
		t.Fatal("the original is not running after the failed hand-off")
	}

	// serve back (same address), the hand-off again: it finishes.
	serveWith(t, home, homeRepo, []string{"--resume-allow", office.id, "--listen", homeAddr}, office.id)
	out, err := office.cmd(ctx, "--json", "sync", "vm", "--to", "home", "--handoff").Output()
	if err != nil {
		t.Fatalf("sync again: %v: %s", err, stderrOf(err))
	}
	t.Logf("sync again: %s", out)
	waitFor(t, time.Minute, func() bool { return !processAlive(vm.PID()) })
	if !guestRunning(ctx, filepath.Join(homeCopy, "qmp.sock")) {
		t.Error("home's copy is not running after the hand-off was run again")
	}
}
