package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRunningQEMU: a program named like QEMU counts while it runs, not
// once it has exited (a zombie, then reaped); other programs never do.
func TestRunningQEMU(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1):", err)
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	if err := os.WriteFile(fake, b, 0o700); err != nil {
		t.Fatal(err)
	}
	other := exec.Command(sleep, "60")
	qemu := exec.Command(fake, "60")
	for _, c := range []*exec.Cmd{other, qemu} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	if _, ok := RunningQEMU(other.Process.Pid); ok {
		t.Errorf("sleep (pid %d) counts as a running QEMU", other.Process.Pid)
	}
	if _, ok := RunningQEMU(os.Getpid()); ok {
		t.Errorf("the test binary counts as a running QEMU")
	}
	pid := qemu.Process.Pid
	p, ok := RunningQEMU(pid)
	if !ok || p.PID != pid || p.Name() != "qemu-system-x86_64" {
		t.Fatalf("RunningQEMU(%d) = %+v, %v: want the running qemu-system-x86_64", pid, p, ok)
	}
	if err := qemu.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Wait for the exit without reaping: the process stays a zombie.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := RunningQEMU(pid); ok {
		t.Errorf("an exited QEMU not yet reaped (a zombie) counts as running")
	}
	qemu.Wait()
	if _, ok := RunningQEMU(pid); ok {
		t.Errorf("a reaped QEMU counts as running")
	}
}

func TestStatState(t *testing.T) {
	for _, c := range []struct {
		line string
		want byte
	}{
		{"42 (qemu-system-x86) S 1 42", 'S'},
		{"42 (a) Z) Z 1 42", 'Z'}, // the name holds ") Z"
		{"42 (qemu-system-x86) Z 1 42", 'Z'},
		{"42 (qemu", 0},
		{"42 (q)", 0},
	} {
		if got := statState([]byte(c.line)); got != c.want {
			t.Errorf("statState(%q) = %q, want %q", c.line, got, c.want)
		}
	}
}
