package qemu_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ntc-project/ntc/qemu"
	"github.com/ntc-project/ntc/qemu/qmptest"
)

// TestDialStartingWaitsForListen: a QEMU starting up has bound its QMP
// socket (the file exists) but not yet listens on it, and a connection is
// refused: Dial says so, DialStarting waits until QEMU listens.
func TestDialStartingWaitsForListen(t *testing.T) {
	dir, err := os.MkdirTemp("", "ntcq-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "qmp.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	ctx := t.Context()
	if s, err := qemu.Dial(ctx, path, qemu.DialOptions{}); !errors.Is(err, syscall.ECONNREFUSED) {
		if s != nil {
			s.Close()
		}
		unix.Close(fd)
		t.Fatalf("Dial of a bound socket nobody listens on: %v, want ECONNREFUSED", err)
	}

	type dialed struct {
		s   *qemu.Session
		err error
	}
	got := make(chan dialed, 1)
	go func() {
		s, err := qemu.DialStarting(ctx, path, qemu.DialOptions{}, nil)
		got <- dialed{s, err}
	}()
	// QEMU listens: the waiting dial connects.
	if err := unix.Listen(fd, 4); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), path)
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go qmptest.Serve(l, func(qmptest.Request) []string { return []string{`{"return": {}}`} })
	d := <-got
	if d.err != nil {
		t.Fatalf("DialStarting: %v", d.err)
	}
	defer d.s.Close()
	if err := d.s.Run(ctx, "query-status", nil, nil); err != nil {
		t.Errorf("a command on the session: %v", err)
	}
}

// TestDialStartingStopsWhenQEMUExits: no socket ever comes; the QEMU's
// exit (or ctx) ends the wait.
func TestDialStartingStopsWhenQEMUExits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "never.sock")
	exited := make(chan struct{})
	close(exited)
	if _, err := qemu.DialStarting(t.Context(), path, qemu.DialOptions{}, exited); !errors.Is(err, qemu.ErrExited) {
		t.Errorf("DialStarting with QEMU gone: %v, want ErrExited", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := qemu.DialStarting(ctx, path, qemu.DialOptions{}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DialStarting past its deadline: %v, want DeadlineExceeded", err)
	}
	// A socket that is not QEMU's QMP is an answer, not something to wait for.
	notSock := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notSock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := qemu.DialStarting(t.Context(), notSock, qemu.DialOptions{}, nil); !errors.Is(err, qemu.ErrNotQMP) {
		t.Errorf("DialStarting on a regular file: %v, want ErrNotQMP", err)
	}
}
