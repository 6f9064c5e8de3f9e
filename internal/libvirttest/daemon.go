package libvirttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// URI is the connection the tests use.
const URI = "qemu:///system"

// Sockets the system daemons listen on.
const (
	libvirtdSocket = "/run/libvirt/libvirt-sock"
	virtlogdSocket = "/run/libvirt/virtlogd-sock"
)

// startTimeout bounds a daemon's start (libvirtd probes QEMU's
// capabilities on its first start: about 5 s here).
const startTimeout = 2 * time.Minute

// Daemon makes sure a libvirtd answers at URI and returns URI. It skips tb
// if libvirtd or virsh is not installed (CI installs them with
// scripts/deps-libvirt.sh) and starts virtlogd and libvirtd when nothing
// listens on their sockets; it fails tb with the daemon's own words if one
// cannot start. What it starts stays running when tb ends, as the system's
// own service would: 'go test ./...' runs test binaries side by side, and
// another one may be using the daemon this one started (stopping it at
// the end made that one's libvirt test fail).
func Daemon(tb testing.TB) string {
	tb.Helper()
	for _, bin := range []string{"libvirtd", "virtlogd", "virsh"} {
		if _, err := exec.LookPath(bin); err != nil {
			tb.Skipf("%s not found (%v): install Debian's libvirt-daemon-system and libvirt-clients (scripts/deps-libvirt.sh)", bin, err)
		}
	}
	ctx, cancel := context.WithTimeout(tb.Context(), startTimeout)
	defer cancel()
	for _, d := range []struct {
		bin, socket string
	}{{"virtlogd", virtlogdSocket}, {"libvirtd", libvirtdSocket}} {
		if answers(d.socket) {
			continue
		}
		if _, err := startDaemon(ctx, d.bin, d.socket); err != nil {
			tb.Fatal(err)
		}
	}
	if out, err := exec.CommandContext(ctx, "virsh", "-c", URI, "version").CombinedOutput(); err != nil {
		tb.Fatalf("libvirtd does not answer at %s: virsh version: %v: %s", URI, err, out)
	}
	return URI
}

// answers reports whether something accepts connections on the unix
// socket at path.
func answers(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// startDaemon starts bin in the foreground as a child of the test and
// waits until it accepts connections on socket. stop ends it (SIGTERM,
// then SIGKILL after 30 s) and reaps it.
func startDaemon(ctx context.Context, bin, socket string) (stop func() error, err error) {
	cmd := exec.Command(bin)
	// A file, not a pipe: the daemon outlives the test (see Daemon), and
	// would die writing to a pipe nobody reads.
	logPath := filepath.Join(os.TempDir(), "ntc-test-"+bin+".log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	out := logTail{logPath}
	// Own process group: a terminal's ^C goes to the test, which stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			return nil
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("%s (pid %d) ignored SIGTERM for 30 s; killed it", bin, cmd.Process.Pid)
		}
	}
	for delay := 10 * time.Millisecond; !answers(socket); delay = min(2*delay, 200*time.Millisecond) {
		select {
		case err := <-exited:
			return nil, fmt.Errorf("%s exited before listening on %s (%v): %s", bin, socket, err, out.String())
		case <-ctx.Done():
			stop()
			return nil, fmt.Errorf("%s did not listen on %s: %w: %s", bin, socket, ctx.Err(), out.String())
		case <-time.After(delay):
		}
	}
	return stop, nil
}

// Virsh runs virsh against URI and returns its standard output; an error
// carries its standard error.
func Virsh(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "virsh", append([]string{"-c", URI}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), fmt.Errorf("virsh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return string(out), fmt.Errorf("virsh %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// userfaultfdAllowed reports whether an unprivileged QEMU (libvirt's) may
// use userfaultfd, which QEMU 7.2's background snapshot needs.
func userfaultfdAllowed() bool {
	b, err := os.ReadFile("/proc/sys/vm/unprivileged_userfaultfd")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// RequireUserfaultfd fails tb unless libvirt's unprivileged QEMU may use
// userfaultfd (vm.unprivileged_userfaultfd=1, set by
// scripts/deps-libvirt.sh), which a background snapshot needs.
func RequireUserfaultfd(tb testing.TB) {
	tb.Helper()
	if !userfaultfdAllowed() {
		tb.Fatal("libvirt runs QEMU unprivileged: QEMU 7.2's background snapshot needs vm.unprivileged_userfaultfd=1 (scripts/deps-libvirt.sh sets it)")
	}
}

// logTail is the end of a daemon's log file, for an error message.
type logTail struct{ path string }

func (l logTail) String() string {
	b, _ := os.ReadFile(l.path)
	return string(b[max(0, len(b)-2000):])
}
