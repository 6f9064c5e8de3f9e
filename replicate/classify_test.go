package replicate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/repo"
	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"

	"github.com/ntc-project/ntc/qemu"
)

func TestReplicatePushClassify(t *testing.T) {
	self, err := transport.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	p := &Push{Sender: &ntcsync.Sender{Node: self.ID().String()}}
	for _, tc := range []struct {
		name      string
		err       error
		permanent bool
		says      string
	}{
		{"refused", fmt.Errorf("push: %w", &transport.WireError{Code: transport.CodePeerNotAllowed, Remote: true}), true, "allow this node, " + self.ID().String()},
		{"another node", &transport.PeerMismatchError{}, true, "expected"},
		{"protocol", fmt.Errorf("x: %w", ntcsync.ErrVersionMismatch), true, "protocol version"},
		{"transport version", fmt.Errorf("x: %w", &transport.WireError{Code: transport.CodeVersionMismatch, Remote: true}), true, ""},
		{"receiver busy", fmt.Errorf("x: %w", ntcsync.ErrBusy), false, ""},
		{"receiver gone", fmt.Errorf("x: %w", &transport.WireError{Code: transport.CodeShuttingDown, Remote: true}), false, ""},
		{"timeout", context.DeadlineExceeded, false, ""},
		{"disk full there", &ntcsync.RemoteError{Code: 6}, false, ""},
		{"diverged", fmt.Errorf("x: %w", repo.ErrDiverged), true, ""}, // what to do is cmd's hint
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := p.classify(tc.err)
			if IsPermanent(got) != tc.permanent || !errors.Is(got, tc.err) || !strings.Contains(got.Error(), tc.says) {
				t.Errorf("classify(%v) = %v (permanent %v), want permanent %v saying %q", tc.err, got, IsPermanent(got), tc.permanent, tc.says)
			}
		})
	}
}

func TestReplicateCaptureClassify(t *testing.T) {
	dir := t.TempDir()
	// A socket file nothing listens on: QEMU killed.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	live := filepath.Join(dir, "live.sock")
	if l, err = net.Listen("unix", live); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		name, qmp string
		err       error
		permanent bool
	}{
		{"socket removed", filepath.Join(dir, "gone.sock"), fmt.Errorf("x: %w", qemu.ErrNoSocket), true},
		{"connection refused", stale, fmt.Errorf("connect to QMP socket: %w", syscall.ECONNREFUSED), true},
		{"not QMP", live, fmt.Errorf("x: %w", qemu.ErrNotQMP), true},
		{"paused", live, fmt.Errorf("x: %w", capture.ErrGuestNotRunning), false},
		{"QMP busy", live, fmt.Errorf("x: %w", qemu.ErrQMPBusy), false},
		{"disconnected", live, fmt.Errorf("x: %w", qemu.ErrDisconnected), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Capture{Config: capture.Config{QMP: tc.qmp}}
			got := c.classify(tc.err)
			if IsPermanent(got) != tc.permanent || !errors.Is(got, tc.err) {
				t.Errorf("classify(%v) = %v, permanent %v; want %v", tc.err, got, IsPermanent(got), tc.permanent)
			}
			if tc.permanent && tc.qmp != live && !strings.Contains(got.Error(), "the guest is gone") {
				t.Errorf("classify(%v) = %v: does not say the guest is gone", tc.err, got)
			}
		})
	}
	if _, err := os.Stat(stale); err != nil {
		t.Fatal(err)
	}
}
