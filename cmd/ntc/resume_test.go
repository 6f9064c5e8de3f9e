package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/internal/testguest/guesttest"

	"github.com/ntc-project/ntc/qemu"
)

// TestResumeCheckpoint checkpoints the running test guest, pushes it
// between real ntc processes, stops the original and resumes the received
// copy with a real 'ntc resume': the copy's console goes on counting from
// the checkpoint (no boot), its disk keeps the ticks, its NIC link is down,
// the receiver's images are not touched, and Ctrl-C stops it. Then two
// manifests that do not fit their machine: a clear error, no QEMU left.
func TestResumeCheckpoint(t *testing.T) {
	guesttest.SkipIfNoQEMU(t)
	vmDir, err := os.MkdirTemp("", "ntcr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(vmDir) })
	guest := guesttest.Build(t)
	vm := guesttest.Start(t, testguest.StartOptions{Guest: guest, Dir: vmDir, NIC: true})
	// The guest boots its kernel directly: a receiver names its own copy.
	kernel := []string{"--kernel", guest.Kernel, "--initrd", guest.Initrd}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if _, err := vm.WaitTick(ctx, 2); err != nil {
		t.Fatal(err)
	}
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serve(t, home, store, office.id)
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
	images := filepath.Join(store, "sets", "office-vm", "images")
	diskTick, err := testguest.ReadDiskTick(ctx, filepath.Join(images, "disk-vda"))
	if err != nil {
		t.Fatal(err)
	}
	if diskTick < before || diskTick > after+1 {
		t.Fatalf("the received disk says tick %d; the guest printed tick %d before the checkpoint and %d after", diskTick, before, after)
	}
	sums := treeSums(t, images)

	work := filepath.Join(vmDir, "copy")
	c := home.cmd(context.Background(), append([]string{"--json", "resume", "--store", store, "--name", "office-vm", "--workdir", work}, kernel...)...)
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	c.Stderr = &stderr
	t0 := time.Now()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	// One reader of the output until it ends, then Wait (which closes the
	// pipe).
	lines := make(chan string, 16)
	exited := make(chan error, 1)
	go func() {
		r := bufio.NewReader(stdout)
		for {
			l, err := r.ReadString('\n')
			if l != "" {
				lines <- l
			}
			if err != nil {
				break
			}
		}
		close(lines)
		exited <- c.Wait()
	}()
	t.Cleanup(func() {
		c.Process.Kill()
		<-exited
		killQEMUsIn(t, work)
	})
	line, ok := <-lines
	if !ok {
		t.Fatalf("resume printed nothing: %s", stderr.String())
	}
	var res resumeJSON
	if err := json.Unmarshal([]byte(line), &res); err != nil || res.Event != "running" {
		t.Fatalf("resume printed %q: %v", line, err)
	}
	t.Logf("resumed in %.0f ms (QEMU up in %.0f ms, %d-byte stream loaded in %.0f ms); %s after the command started",
		res.ResumeMS, res.LaunchMS, res.StreamBytes, res.MigrateMS, time.Since(t0).Round(time.Millisecond))
	if res.SerialLog == "" || res.QMP == "" || len(res.Disks) != 1 || len(res.LinksDown) != 1 || res.LinksDown[0] != testguest.NICDevice {
		t.Fatalf("resume --json: %+v", res)
	}
	if !res.Sandboxed {
		t.Errorf("QEMU ran without its seccomp sandbox (Debian's QEMU has one): %+v", res)
	}
	// Private: the work directory 0700, the overlay and logs 0600.
	for _, f := range []string{work, res.Disks[0].Overlay, res.SerialLog, res.Log} {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: %v, %v: want it private", f, fi.Mode(), err)
		}
	}

	// The console goes on from the checkpoint: the first tick follows the
	// one on the received disk, and nothing boots.
	console, ticks, err := testguest.WaitSerialTicks(ctx, res.SerialLog, 3, nil)
	if err != nil {
		t.Fatalf("the copy's serial console: %v: %q", err, console)
	}
	for _, l := range console {
		if strings.Contains(l, "Linux version") || strings.HasPrefix(l, "ntc: ready") {
			t.Errorf("the copy booted: %q", l)
		}
	}
	first := ticks[0]
	if first != diskTick+1 && first != diskTick {
		t.Errorf("the copy's first tick is %d; the checkpoint's disk says %d (the original printed %d before, %d after)", first, diskTick, before, after)
	}
	t.Logf("the original printed ticks %d..%d around the checkpoint, whose disk says %d; the copy went on with tick %d", before, after, diskTick, first)
	if n, err := testguest.ReadDiskTick(ctx, res.Disks[0].Overlay); err != nil || n < first {
		t.Errorf("the copy's disk says tick %d (%v), its console printed %d", n, err, first)
	}

	// The link is down: the virtio-net status field (config space, read
	// through its BAR) has LINK_UP clear.
	up, err := nicLinkUp(ctx, res.QMP, testguest.NICDevice)
	if err != nil {
		t.Fatal(err)
	}
	if up {
		t.Error("the copy's NIC link is up")
	}

	// Ctrl-C stops the copy.
	if err := c.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("resume after Ctrl-C: %v: %s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatal("resume did not exit on Ctrl-C")
	}
	exited <- nil
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if len(rest) != 1 || !strings.Contains(rest[0], `"stopped"`) {
		t.Errorf("resume printed %q after Ctrl-C", rest)
	}
	if err := syscall.Kill(res.PID, 0); err == nil {
		t.Errorf("QEMU (pid %d) still runs after Ctrl-C", res.PID)
	}
	if got := treeSums(t, images); got != sums {
		t.Errorf("the receiver's images changed during the resume:\n%s\nnow:\n%s", sums, got)
	}

	// The first copy made home the node that runs the set: another node
	// (this test process, with its own state directory) is refused...
	if code, _, errs := ntc(t, ctx, append([]string{"resume", "--store", store, "--name", "office-vm", "--workdir", work + "-other"}, kernel...)...); code != exitError || !strings.Contains(errs, "runs at node "+home.id) || !strings.Contains(errs, "--force") {
		t.Errorf("resume by another node while home runs it: exit %d, %q", code, errs)
	}
	// ...and the stopped copy's work directory holds its writes: refused.
	if code, _, errs := ntc(t, ctx, append([]string{"resume", "--store", store, "--name", "office-vm", "--workdir", work, "--force"}, kernel...)...); code != exitError || !strings.Contains(errs, "earlier copy") {
		t.Errorf("resume into the used work directory: exit %d, %q", code, errs)
	}

	// --detach leaves the copy running; --network on keeps its link up.
	detached := filepath.Join(vmDir, "detached")
	t.Cleanup(func() { killQEMUsIn(t, detached) })
	// (The real binary: a detached copy has a keeper, ntc re-executed.)
	dc := home.cmd(ctx, append([]string{"--json", "resume", "--store", store, "--name", "office-vm", "--workdir", detached, "--detach", "--network", "on"}, kernel...)...)
	var derr strings.Builder
	dc.Stderr = &derr
	doutb, err := dc.Output()
	if err != nil {
		t.Fatalf("resume --detach: %v: %s", err, derr.String())
	}
	dout := string(doutb)
	var dres resumeJSON
	if err := json.Unmarshal([]byte(dout), &dres); err != nil || !dres.Detached || len(dres.LinksDown) != 0 {
		t.Fatalf("resume --detach printed %q: %v", dout, err)
	}
	if up, err := nicLinkUp(ctx, dres.QMP, testguest.NICDevice); err != nil || !up {
		t.Errorf("with --network on the copy's link is up: %v, %v", up, err)
	}
	waitSerialFile(t, ctx, dres.SerialLog, 1)
	b, err := os.ReadFile(dres.PIDFile)
	if err != nil {
		t.Fatal(err)
	}
	if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid != dres.PID {
		t.Fatalf("pid file says %q, resume said %d", b, dres.PID)
	}
	if err := syscall.Kill(dres.PID, syscall.SIGTERM); err != nil {
		t.Fatalf("the detached copy is not running: %v", err)
	}

	// --user runs QEMU unprivileged; the received images reach it as
	// descriptors, the kernel (readable by all here) by path.
	t.Run("user", func(t *testing.T) {
		pub, err := os.MkdirTemp("", "ntck-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(pub) })
		os.Chmod(pub, 0o755)
		var files []string
		for _, src := range []string{guest.Kernel, guest.Initrd} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(pub, filepath.Base(src))
			if err := os.WriteFile(dst, b, 0o644); err != nil {
				t.Fatal(err)
			}
			files = append(files, dst)
		}
		w := filepath.Join(pub, "w") // its parents must let the user through
		t.Cleanup(func() { killQEMUsIn(t, w) })
		c := home.cmd(ctx, "--json", "resume", "--store", store, "--name", "office-vm", "--workdir", w, "--detach",
			"--user", "nobody", "--kernel", files[0], "--initrd", files[1])
		var errb strings.Builder
		c.Stderr = &errb
		out, err := c.Output()
		if err != nil {
			t.Fatalf("resume --user nobody: %v: %s", err, errb.String())
		}
		var ures resumeJSON
		if err := json.Unmarshal(out, &ures); err != nil {
			t.Fatal(err)
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", ures.PID))
		if !regexp.MustCompile(`(?m)^Uid:\s+65534\s`).Match(status) {
			t.Errorf("QEMU does not run as nobody: %s", status)
		}
		waitSerialFile(t, ctx, ures.SerialLog, 1)
		syscall.Kill(ures.PID, syscall.SIGTERM)
	})

	// A stream that never loads (QEMU stopped as soon as it appears):
	// resume gives up after --load-timeout, says what to do, and leaves no
	// QEMU behind.
	t.Run("load timeout", func(t *testing.T) {
		w := filepath.Join(vmDir, "stuck")
		t.Cleanup(func() { killQEMUsIn(t, w) })
		c := home.cmd(ctx, append([]string{"resume", "--store", store, "--name", "office-vm", "--workdir", w, "--load-timeout", "3s"}, kernel...)...)
		var msg strings.Builder
		c.Stdout, c.Stderr = &msg, &msg
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		pid := stopQEMUIn(t, w)
		err := c.Wait()
		t.Logf("ntc resume said: %s", msg.String())
		if exitCode(err) != exitError || !strings.Contains(msg.String(), "--load-timeout") {
			t.Errorf("exit %v, %q; want an error pointing at --load-timeout", err, msg.String())
		}
		if processAlive(pid) {
			t.Errorf("QEMU (pid %d) is still there", pid)
		}
	})

	// ntc killed during a --detach resume, before the copy runs: its
	// keeper dies with it, and QEMU with the keeper.
	t.Run("killed during detach", func(t *testing.T) {
		w := filepath.Join(vmDir, "killed")
		t.Cleanup(func() { killQEMUsIn(t, w) })
		c := home.cmd(ctx, append([]string{"resume", "--store", store, "--name", "office-vm", "--workdir", w, "--detach"}, kernel...)...)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		pid := stopQEMUIn(t, w)
		if err := c.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		c.Wait()
		waitFor(t, 30*time.Second, func() bool { return !processAlive(pid) })
	})

	// Manifests whose machine does not match: QEMU refuses the stream.
	for _, tc := range []struct {
		name, says string
		tamper     func(m *capture.Manifest)
	}{
		{"RAM size", "mismatch", func(m *capture.Manifest) { m.Machine.RAM.Size += 64 << 20 }},
		{"machine type", "Machine type received", func(m *capture.Manifest) { m.Machine.Type = "pc-i440fx-7.1" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "store")
			if out, err := exec.Command("cp", "-a", store, bad).CombinedOutput(); err != nil {
				t.Fatalf("copy the store: %v: %s", err, out)
			}
			// The checkpoint's manifest is the version's metadata.
			mp := filepath.Join(bad, "sets", "office-vm", "versions", "000001", "meta")
			b, err := os.ReadFile(mp)
			if err != nil {
				t.Fatal(err)
			}
			var m capture.Manifest
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			tc.tamper(&m)
			if b, err = json.Marshal(&m); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(mp, b, 0o644); err != nil {
				t.Fatal(err)
			}
			w := filepath.Join(vmDir, "bad")
			t.Cleanup(func() { killQEMUsIn(t, w) })
			code, _, errs := ntc(t, ctx, append([]string{"resume", "--store", bad, "--name", "office-vm", "--workdir", w, "--force"}, kernel...)...)
			t.Logf("ntc resume said: %s", errs)
			if code != exitError || !strings.Contains(errs, "does not match") || !strings.Contains(errs, tc.says) {
				t.Errorf("exit %d, stderr %q; want exit %d saying the machine does not match, with QEMU's %q", code, errs, exitError, tc.says)
			}
			if pids := qemusIn(t, w); len(pids) > 0 {
				t.Errorf("QEMU left running: %v", pids)
			}
			if _, err := os.Stat(filepath.Join(w, "disk-vda.qcow2")); err == nil {
				t.Error("the failed resume left its overlay behind")
			}
		})
	}
}

// tickRe is a guest's tick line (resume_libvirt_test.go reads them).
var tickRe = regexp.MustCompile(`^tick (\d+)$`)

// waitSerialFile waits until the serial log at path holds n tick lines and
// returns its lines (testguest.WaitSerialTicks).
func waitSerialFile(t *testing.T, ctx context.Context, path string, n int) []string {
	t.Helper()
	lines, _, err := testguest.WaitSerialTicks(ctx, path, n, nil)
	if err != nil {
		t.Fatalf("the copy's serial console: %v: %q", err, lines)
	}
	return lines
}

// nicLinkUp reads the LINK_UP bit of a virtio-net device's status field:
// its device configuration sits at 0x2000 in BAR 4 (virtio-pci's modern
// layout), after the 6-byte MAC address. set_link changes only this bit
// and nothing QMP reports.
func nicLinkUp(ctx context.Context, qmp, dev string) (bool, error) {
	s, err := qemu.Dial(ctx, qmp, qemu.DialOptions{})
	if err != nil {
		return false, err
	}
	defer s.Close()
	return sessionNICLinkUp(ctx, s, dev)
}

// sessionNICLinkUp is nicLinkUp over a session (a libvirt domain's).
func sessionNICLinkUp(ctx context.Context, s *qemu.Session, dev string) (bool, error) {
	var buses []struct {
		Devices []struct {
			QDevID  string `json:"qdev_id"`
			Regions []struct {
				Bar     int    `json:"bar"`
				Type    string `json:"type"`
				Address int64  `json:"address"`
			} `json:"regions"`
		} `json:"devices"`
	}
	if err := s.Run(ctx, "query-pci", nil, &buses); err != nil {
		return false, err
	}
	for _, b := range buses {
		for _, d := range b.Devices {
			if d.QDevID != dev {
				continue
			}
			for _, r := range d.Regions {
				if r.Bar != 4 || r.Type != "memory" || r.Address <= 0 {
					continue
				}
				var out string
				cmd := fmt.Sprintf("xp /1hx %#x", r.Address+0x2000+6)
				if err := s.Run(ctx, "human-monitor-command", map[string]any{"command-line": cmd}, &out); err != nil {
					return false, err
				}
				_, val, ok := strings.Cut(strings.TrimSpace(out), ": ")
				v, err := strconv.ParseUint(strings.TrimPrefix(val, "0x"), 16, 16)
				if !ok || err != nil {
					return false, fmt.Errorf("%s printed %q", cmd, out)
				}
				return v&1 != 0, nil
			}
		}
	}
	return false, fmt.Errorf("no PCI device %s with a memory BAR 4", dev)
}

// treeSums lists every file under dir with its SHA-256.
func treeSums(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %s\n", hex.EncodeToString(h.Sum(nil)), strings.TrimPrefix(p, dir))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// stopQEMUIn waits for the QEMU a resume starts in dir to appear, stops
// it (SIGSTOP: it will never load the stream) and returns its pid. Nothing
// announces the process: /proc is read again every 20 ms (waitFor).
func stopQEMUIn(t *testing.T, dir string) int {
	t.Helper()
	var pid int
	waitFor(t, time.Minute, func() bool {
		if pids := qemusIn(t, dir); len(pids) > 0 {
			pid = pids[0]
			return true
		}
		return false
	})
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	return pid
}

// processAlive reports whether pid is a process that has not exited (a
// zombie has).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// qemusIn returns the PIDs of QEMU processes (not their keepers) whose
// command line mentions dir.
func qemusIn(t *testing.T, dir string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && strings.HasPrefix(string(comm), "qemu-system") && strings.Contains(string(b), dir) && processAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killQEMUsIn kills the QEMU processes a test started in dir.
func killQEMUsIn(t *testing.T, dir string) {
	for _, pid := range qemusIn(t, dir) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
