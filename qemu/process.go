package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Process identifies the QEMU process behind a QMP socket. PID, the boot and
// the process start time together name one process for as long as the
// machine runs: a restarted QEMU, even with the same PID, is another.
type Process struct {
	PID int `json:"pid"`
	// Start is the process start time in clock ticks since boot
	// (/proc/PID/stat field 22).
	Start uint64 `json:"start"`
	// Boot is the kernel's boot ID.
	Boot string `json:"boot"`
	// Exe is the executable's path, "" if unreadable.
	Exe string `json:"exe,omitempty"`
}

// Same reports whether p and q are the same process.
func (p Process) Same(q Process) bool {
	return p.PID == q.PID && p.Start == q.Start && p.Boot == q.Boot && p.PID != 0
}

// Name returns the executable's base name, or "unknown program".
func (p Process) Name() string {
	if p.Exe == "" {
		return "unknown program"
	}
	return filepath.Base(p.Exe)
}

// IsQEMU reports whether the executable looks like a QEMU system emulator:
// qemu-system-ARCH, or qemu-kvm as some distributions name it (a program
// merely named after QEMU, like this package's test binary, is not).
func (p Process) IsQEMU() bool {
	n := p.Name()
	return strings.HasPrefix(n, "qemu-system-") || n == "qemu-kvm"
}

// peerProcess connects to the unix socket at path, asks the kernel who
// listens on it (SO_PEERCRED) and hangs up. A QEMU serving another QMP
// client leaves the connection in its listen backlog, where the
// credentials are already known.
func peerProcess(ctx context.Context, path string, timeout time.Duration) (Process, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return Process{}, fmt.Errorf("nothing listens on %s (a stale socket of a QEMU that exited?): %w", path, err)
		}
		return Process{}, fmt.Errorf("connect to QMP socket %s: %w", path, err)
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return Process{}, fmt.Errorf("QMP socket %s: %w", path, err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Process{}, fmt.Errorf("QMP socket %s: %w", path, err)
	}
	if cerr != nil {
		return Process{}, fmt.Errorf("find the process behind %s: %w", path, cerr)
	}
	return LookupProcess(int(cred.Pid))
}

// LookupProcess reads what identifies process pid.
func LookupProcess(pid int) (Process, error) {
	p := Process{PID: pid}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, fmt.Errorf("identify process %d: %w", pid, err)
	}
	if p.Start, err = statStart(stat); err != nil {
		return p, fmt.Errorf("identify process %d: %w", pid, err)
	}
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return p, fmt.Errorf("identify process %d: %w", pid, err)
	}
	p.Boot = strings.TrimSpace(string(boot))
	p.Exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if p.Exe == "" {
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
			p.Exe = strings.TrimSpace(string(comm))
		}
	}
	return p, nil
}

// statStart returns field 22 (starttime) of a /proc/PID/stat line. The
// command name (field 2) is in parentheses and may hold spaces and
// parentheses itself, so fields are counted from the last ')'.
func statStart(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat line")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, errors.New("short /proc stat line")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// ErrNoAccess: this process may not read another's details in /proc (it
// runs as another user than QEMU, and not as root).
var ErrNoAccess = errors.New("no access to the process")

// Cmdline returns the command line of process pid (/proc/PID/cmdline).
func Cmdline(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			err = fmt.Errorf("%w: %w", ErrNoAccess, err)
		}
		return nil, fmt.Errorf("read the command line of process %d: %w", pid, err)
	}
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil, fmt.Errorf("process %d has an empty command line (a zombie?)", pid)
	}
	return strings.Split(string(b), "\x00"), nil
}
