package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/internal/testguest/guesttest"
)

func TestCheckpointUsage(t *testing.T) {
	dir, err := os.MkdirTemp("", "ntcm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "not-qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	for _, tc := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"no socket given", []string{"checkpoint", "--out", dir}, exitUsage, "--qmp SOCKET is required"},
		{"no repository given", []string{"checkpoint", "--qmp", sock}, exitUsage, "--out DIR is required"},
		{"unknown method", []string{"checkpoint", "--qmp", sock, "--out", dir, "--method", "fast"}, exitUsage, "--method"},
		{"not a QMP socket", []string{"checkpoint", "--qmp", sock, "--out", filepath.Join(dir, "repo")}, exitError, "not a QMP socket"},
		{"no such socket", []string{"checkpoint", "--qmp", filepath.Join(dir, "nope"), "--out", filepath.Join(dir, "repo")}, exitError, "start QEMU with -qmp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			code, _, errs := ntc(t, ctx, tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.says) {
				t.Errorf("exit %d, stderr %q; want exit %d saying %q", code, errs, tc.code, tc.says)
			}
			// A checkpoint that could not start leaves no repository.
			if _, err := os.Stat(filepath.Join(dir, "repo")); err == nil {
				t.Errorf("%s left %s behind", tc.name, filepath.Join(dir, "repo"))
			}
		})
	}
}

// TestCheckpointCommand checkpoints the test guest twice through the
// command line: the JSON summary, then the human one.
func TestCheckpointCommand(t *testing.T) {
	vm := startTickingGuest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	repo := filepath.Join(t.TempDir(), "repo")

	code, out, errs := ntc(t, ctx, "--json", "checkpoint", "--qmp", vm.QMPPath(), "--out", repo)
	if code != 0 {
		t.Fatalf("checkpoint: exit %d: %s", code, errs)
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(out), &first); err != nil {
		t.Fatalf("--json printed %q: %v", out, err)
	}
	for _, k := range []string{"seq", "set", "repo", "digest", "guest_pause_ms", "ram_bytes", "ram_pages_new", "disk_bytes_read", "disk_bytes_changed", "duration_ms"} {
		if _, ok := first[k]; !ok {
			t.Errorf("--json lacks %q: %s", k, out)
		}
	}
	if first["seq"] != 1.0 || first["disk_mode"] != "full" || first["ram_bytes"].(float64) < 256<<20 {
		t.Errorf("first checkpoint: %s", out)
	}
	if _, err := os.Stat(filepath.Join(repo, "sets", "vm", "versions", "000001", "meta")); err != nil {
		t.Error(err)
	}

	if _, err := vm.WaitTick(ctx, vm.LastTick()+2); err != nil {
		t.Fatal(err)
	}
	code, out, errs = ntc(t, ctx, "checkpoint", "--qmp", vm.QMPPath(), "--out", repo)
	if code != 0 {
		t.Fatalf("second checkpoint: exit %d: %s", code, errs)
	}
	t.Logf("ntc checkpoint printed:\n%s", out)
	for _, want := range []string{"checkpoint 2 of", "guest paused", "written since checkpoint 1", "merged 1 old overlay(s)", "version 2 of vm in " + repo} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := vm.WaitTick(ctx, vm.LastTick()+1); err != nil {
		t.Fatalf("guest stopped ticking after the checkpoints: %v", err)
	}
}

// startTickingGuest starts the test guest (it writes 1 MiB of its disk every
// second) and waits for its second tick. It skips t without QEMU.
func startTickingGuest(t *testing.T) *testguest.VM {
	t.Helper()
	guesttest.SkipIfNoQEMU(t)
	// Short: the QMP socket path must fit in 107 bytes.
	vmDir, err := os.MkdirTemp("", "ntcm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(vmDir) })
	vm := guesttest.Start(t, testguest.StartOptions{Dir: vmDir, DiskBusyMiB: 1})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if _, err := vm.WaitTick(ctx, 2); err != nil {
		t.Fatal(err)
	}
	return vm
}
