package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/bench"
	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/internal/testguest/guesttest"

	"github.com/ntc-project/ntc/qemu"
)

// TestRoundTrip carries a running guest (it rewrites 1 MiB of its disk a
// second) office → home → office with real
// ntc processes, each node with one repository that its 'ntc serve'
// receives into and its 'ntc checkpoint' writes: the office checkpoints
// and pushes; home resumes the copy, which works on; home's checkpoint of
// the copy is incremental (it reads only what the copy wrote) and its push
// back sends at most 1.2× what the guest changed at home (its pages and
// disk blocks, zstd), as a delta against the office's own checkpoint; the office resumes what came back and the
// guest's console goes on from where home left it.
func TestRoundTrip(t *testing.T) {
	vmDir, guest, vm, ctx := startRoundTripGuest(t, 1)
	kernel := []string{"--kernel", guest.Kernel, "--initrd", guest.Initrd}
	office, home := newNode(t), newNode(t)
	officeRepo, homeRepo := t.TempDir(), t.TempDir()
	homeAddr, _ := serve(t, home, homeRepo, office.id)
	officeAddr, _ := serve(t, office, officeRepo, home.id)
	checkpoint := func(n node, qmp, repo string) checkpointJSON {
		t.Helper()
		out, err := n.cmd(ctx, "--json", "checkpoint", "--qmp", qmp, "--out", repo, "--name", "vm").Output()
		if err != nil {
			t.Fatalf("checkpoint into %s: %v: %s", repo, err, stderrOf(err))
		}
		var c checkpointJSON
		if err := json.Unmarshal(out, &c); err != nil {
			t.Fatalf("checkpoint printed %q: %v", out, err)
		}
		return c
	}
	resume := func(n node, repo, work string) resumeJSON {
		t.Helper()
		t.Cleanup(func() { killQEMUsIn(t, work) })
		// No hand-off told either node that the other stopped: --force.
		out, err := n.cmd(ctx, append([]string{"--json", "resume", "--store", repo, "--name", "vm", "--workdir", work, "--detach", "--force"}, kernel...)...).Output()
		if err != nil {
			t.Fatalf("resume from %s: %v: %s", repo, err, stderrOf(err))
		}
		var r resumeJSON
		if err := json.Unmarshal(out, &r); err != nil || r.Event != "running" {
			t.Fatalf("resume printed %q: %v", out, err)
		}
		return r
	}

	// Out: the office's checkpoint, pushed home.
	c1 := checkpoint(office, vm.QMPPath(), officeRepo)
	out, err := push(t, ctx, office, homeAddr, home.id, "--checkpoint", officeRepo, "--name", "vm")
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	officeTick := vm.LastTick()

	// Home: the copy runs on from the checkpoint, then its own checkpoint.
	hw := filepath.Join(vmDir, "home")
	hr := resume(home, homeRepo, hw)
	homeTicks := lastTick(waitSerialFile(t, ctx, hr.SerialLog, 5))
	if homeTicks <= officeTick {
		t.Fatalf("the copy at home shows tick %d, the office stopped at %d", homeTicks, officeTick)
	}
	c2 := checkpoint(home, hr.QMP, homeRepo)
	t.Logf("office checkpoint %d: %d bytes of disk read; home checkpoint %d (parent %d, %s): %d bytes of disk read, %d written since the resume",
		c1.Seq, c1.DiskBytesRead, c2.Seq, c2.Parent, c2.DiskMode, c2.DiskBytesRead, c2.DiskBytesChanged)
	if c2.DiskMode != "incremental" || c2.Parent != 1 || c2.DiskBytesRead > c2.DiskBytesChanged || c2.DiskBytesChanged >= 16<<20 {
		t.Errorf("home's checkpoint of the copy: mode %s, parent %d, %d bytes read, %d changed; want an incremental child of version 1 that reads only what the copy wrote",
			c2.DiskMode, c2.Parent, c2.DiskBytesRead, c2.DiskBytesChanged)
	}
	stopCopy(t, ctx, hr)

	// Back: only what changed at home travels, against the office's own
	// checkpoint, and becomes the office's current version.
	back, err := push(t, ctx, home, officeAddr, office.id, "--checkpoint", homeRepo, "--name", "vm")
	if err != nil {
		t.Fatal(err)
	}
	ratio := float64(back.BytesSent) / float64(out.BytesSent)
	t.Logf("out: %d bytes on the wire; back: %d bytes (%.4f of out), base %s", out.BytesSent, back.BytesSent, ratio, back.Base.Short())
	if back.Base != out.Digest || back.Parent != out.Digest || back.Head != back.Digest || back.IndexFetched {
		t.Errorf("push back: base %s, parent %s, head %s, index fetched %v; want a delta against %s made current",
			back.Base.Short(), back.Parent.Short(), back.Head.Short(), back.IndexFetched, out.Digest.Short())
	}
	// Against what the guest changed at home: its pages and 4 KiB disk
	// blocks that differ from the version home resumed (zstd).
	hr2, err := capture.OpenRepositoryForReading(homeRepo, "vm")
	if err != nil {
		t.Fatal(err)
	}
	m1, err1 := hr2.Manifest(1)
	m2, err2 := hr2.Manifest(c2.Seq)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	oracle, changedBytes, err := bench.CheckpointOracle(ctx, hr2, m1, m2)
	hr2.Close()
	if err != nil {
		t.Fatal(err)
	}
	// What QUIC sent again after a loss (loopback drops packets when the
	// receiver falls behind on a busy machine) is the link's cost, not the
	// protocol's.
	sent := back.BytesSent - back.BytesLost
	t.Logf("the way back: %d bytes on the wire (%d up, %d down, %d of them resent after losses; chunks %d bytes, %d compressed, %d grouped); the guest changed %d bytes at home, %d after zstd: %.2f× the oracle",
		back.BytesSent, back.BytesUp, back.BytesDown, back.BytesLost, back.ChunkBytes, back.DataBytes, back.Grouped, changedBytes, oracle, float64(sent)/float64(oracle))
	if float64(sent) > 1.2*float64(oracle) {
		t.Errorf("the way back sent %d bytes (besides what was resent), more than 1.2× what the guest changed at home (%d after zstd)", sent, oracle)
	}

	// The office resumes what came back: the guest goes on from home's ticks.
	or := resume(office, officeRepo, filepath.Join(vmDir, "office"))
	lines := waitSerialFile(t, ctx, or.SerialLog, 2)
	if first := firstTick(lines); first < homeTicks {
		t.Errorf("the office's copy starts at tick %d; home's copy had printed tick %d before its checkpoint", first, homeTicks)
	}
	stopCopy(t, ctx, or)
}

var tickLine = regexp.MustCompile(`^tick (\d+)$`)

func lastTick(lines []string) int {
	n := -1
	for _, l := range lines {
		if m := tickLine.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			n, _ = strconv.Atoi(m[1])
		}
	}
	return n
}

func firstTick(lines []string) int {
	for _, l := range lines {
		if m := tickLine.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	return -1
}

// stopCopy quits a detached copy through its QMP socket.
func stopCopy(t *testing.T, ctx context.Context, r resumeJSON) {
	t.Helper()
	s, err := qemu.Dial(ctx, r.QMP, qemu.DialOptions{})
	if err != nil {
		t.Fatalf("stop the copy: %v", err)
	}
	defer s.Close()
	if err := s.Run(ctx, "quit", nil, nil); err != nil && !errors.Is(err, qemu.ErrDisconnected) {
		t.Fatalf("stop the copy: %v", err)
	}
	waitFor(t, time.Minute, func() bool { return !processAlive(r.PID) })
}

// stderrOf returns what a command that failed wrote to its stderr.
func stderrOf(err error) string {
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return string(ee.Stderr)
	}
	return ""
}

// TestSyncHandoff moves a running guest office → home → office → home with 'ntc
// sync VM --to PEER --handoff' on each side, each node configured by name
// (peers, vms, its repository) and serving with --resume-allow for the
// other: each hand-off leaves exactly one copy running, at the peer, which
// goes on with the guest's ticks; the way back sends a small fraction of
// the way out.
func TestSyncHandoff(t *testing.T) {
	_, guest, vm, ctx := startRoundTripGuest(t, 0)
	office, home := newNode(t), newNode(t)
	officeRepo, homeRepo := t.TempDir(), t.TempDir()
	// Each node resumes handed-off copies in $NTC_HOME/resume/vm, with its
	// own kernel; home's copy will be the VM it hands back.
	officeCopy := filepath.Join(office.home, "resume", "vm")
	homeCopy := filepath.Join(home.home, "resume", "vm")
	t.Cleanup(func() { killQEMUsIn(t, homeCopy); killQEMUsIn(t, officeCopy) })
	config := func(n node, repo, qmp string, peers string) {
		t.Helper()
		y := fmt.Sprintf("repo: %s\nresume:\n  kernel: %s\n  initrd: %s\nvms:\n  vm:\n    qmp: %s\n%s",
			repo, guest.Kernel, guest.Initrd, qmp, peers)
		if err := os.WriteFile(filepath.Join(n.home, "ntc.yaml"), []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	config(office, officeRepo, vm.QMPPath(), "")
	config(home, homeRepo, filepath.Join(homeCopy, "qmp.sock"), "")
	homeAddr, _ := serveWith(t, home, homeRepo, []string{"--resume-allow", office.id}, office.id)
	officeAddr, _ := serveWith(t, office, officeRepo, []string{"--resume-allow", home.id}, home.id)
	config(office, officeRepo, vm.QMPPath(), fmt.Sprintf("peers:\n  home: {addr: %q, id: %s}\n", homeAddr, home.id))
	config(home, homeRepo, filepath.Join(homeCopy, "qmp.sock"), fmt.Sprintf("peers:\n  office: {addr: %q, id: %s}\n", officeAddr, office.id))
	handoff := func(n node, to, crashAt string) syncJSON {
		t.Helper()
		// First killed at crashAt (as kill -9 would): never two copies
		// running; then run again, which finishes the hand-off.
		running := 0
		if crashAt != "" {
			c := n.cmd(ctx, "--json", "sync", "vm", "--to", to, "--handoff")
			c.Env = append(c.Env, "NTC_TEST_CRASH_AT="+crashAt)
			if err := c.Run(); exitCode(err) != -1 && exitCode(err) != 137 {
				t.Logf("sync killed at %s: %v", crashAt, err)
			}
			for _, qmp := range []string{vm.QMPPath(), filepath.Join(homeCopy, "qmp.sock"), filepath.Join(officeCopy, "qmp.sock")} {
				if guestRunning(ctx, qmp) {
					running++
				}
			}
			if running > 1 {
				t.Fatalf("after a crash %s: %d copies running", crashAt, running)
			}
		}
		out, err := n.cmd(ctx, "--json", "sync", "vm", "--to", to, "--handoff").Output()
		if err != nil {
			t.Fatalf("sync vm --to %s --handoff: %v: %s", to, err, stderrOf(err))
		}
		var s syncJSON
		if err := json.Unmarshal(out, &s); err != nil || s.Resumed == nil {
			t.Fatalf("sync printed %q: %v", out, err)
		}
		t.Logf("sync --to %s: checkpoint %d, %d bytes on the wire (base %s), running there %.0f ms after the pause: %s",
			to, s.Seq, s.BytesSent, s.Base.Short(), s.DowntimeMS, s.Resumed.Detail)
		running = 0
		for _, qmp := range []string{vm.QMPPath(), filepath.Join(homeCopy, "qmp.sock"), filepath.Join(officeCopy, "qmp.sock")} {
			if guestRunning(ctx, qmp) {
				running++
			}
		}
		if running != 1 {
			t.Fatalf("after the hand-off to %s: %d copies running, want 1", to, running)
		}
		return s
	}

	// Evening: the office hands the VM home.
	tick := vm.LastTick()
	out := handoff(office, "home", "before-quit")
	waitFor(t, time.Minute, func() bool { return !processAlive(vm.PID()) })
	homeLines := waitSerialFile(t, ctx, filepath.Join(homeCopy, "serial.log"), 4)
	if first := firstTick(homeLines); first < tick {
		t.Fatalf("home's copy starts at tick %d; the office printed tick %d before the hand-off", first, tick)
	}
	if got := qemusIn(t, homeCopy); len(got) != 1 {
		t.Fatalf("QEMUs running home's copy: %v", got)
	}

	// Morning: home hands it back; only what changed at home travels.
	homeTick := lastTick(homeLines)
	back := handoff(home, "office", "before-resume")
	waitFor(t, time.Minute, func() bool { return len(qemusIn(t, homeCopy)) == 0 })
	officeLines := waitSerialFile(t, ctx, filepath.Join(officeCopy, "serial.log"), 2)
	if first := firstTick(officeLines); first < homeTick {
		t.Errorf("the office's copy starts at tick %d; home's printed tick %d before the hand-off", first, homeTick)
	}
	ratio := float64(back.BytesSent) / float64(out.BytesSent)
	t.Logf("out %d bytes, back %d bytes: %.4f", out.BytesSent, back.BytesSent, ratio)
	if back.Base != out.Digest || ratio > 0.1 {
		t.Errorf("the way back: base %s (want %s), %.3f of the way out (want at most 0.1)", back.Base.Short(), out.Digest.Short(), ratio)
	}

	// The next evening: the office hands home the copy it runs now (found
	// without configuration: the office's vms.vm still names the first
	// original); home's copy of the night before was handed back, so its
	// work directory goes to the new one.
	officeTick := lastTick(waitSerialFile(t, ctx, filepath.Join(officeCopy, "serial.log"), 3))
	again := handoff(office, "home", "")
	waitFor(t, time.Minute, func() bool { return len(qemusIn(t, officeCopy)) == 0 })
	if first := firstTick(waitSerialFile(t, ctx, filepath.Join(homeCopy, "serial.log"), 2)); first < officeTick {
		t.Errorf("home's new copy starts at tick %d; the office's printed tick %d before the hand-off", first, officeTick)
	}
	if again.Base != back.Digest || float64(again.BytesSent) > 0.1*float64(out.BytesSent) {
		t.Errorf("the third leg: base %s (want %s), %d bytes (the first %d)", again.Base.Short(), back.Digest.Short(), again.BytesSent, out.BytesSent)
	}
}

// startRoundTripGuest starts the test guest (with a NIC, rewriting
// diskBusy MiB of its disk a second) in a short temporary directory
// (sockets live there) and waits for its second tick; ctx bounds the test.
func startRoundTripGuest(t *testing.T, diskBusy int) (string, *testguest.Guest, *testguest.VM, context.Context) {
	t.Helper()
	guesttest.SkipIfNoQEMU(t)
	vmDir, err := os.MkdirTemp("", "ntcrt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(vmDir) })
	guest := guesttest.Build(t)
	if err := os.Mkdir(filepath.Join(vmDir, "vm"), 0o700); err != nil {
		t.Fatal(err)
	}
	vm := guesttest.Start(t, testguest.StartOptions{Guest: guest, Dir: filepath.Join(vmDir, "vm"), NIC: true, DiskBusyMiB: diskBusy})
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	t.Cleanup(cancel)
	if _, err := vm.WaitTick(ctx, 2); err != nil {
		t.Fatal(err)
	}
	return vmDir, guest, vm, ctx
}

// guestRunning reports whether the QEMU serving QMP at path runs its guest
// (false when nothing answers there, or the guest is paused).
func guestRunning(ctx context.Context, path string) bool {
	s, err := qemu.Dial(ctx, path, qemu.DialOptions{})
	if err != nil {
		return false
	}
	defer s.Close()
	var st struct {
		Running bool `json:"running"`
	}
	return s.Run(ctx, "query-status", nil, &st) == nil && st.Running
}
