package sdnotify

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen returns a datagram socket standing in for systemd's and its name.
func listen(t *testing.T, abstract bool) (*net.UnixConn, string) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify.sock")
	addr := name
	if abstract {
		name = "@ntc-sdnotify-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		addr = "\x00" + name[1:]
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, name
}

func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

func TestMessages(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		c, name := listen(t, abstract)
		t.Setenv("NOTIFY_SOCKET", name)
		n := FromEnv()
		if !n.Enabled() {
			t.Fatal("not enabled with NOTIFY_SOCKET set")
		}
		for _, tc := range []struct {
			send func() error
			want string
		}{
			{func() error { return n.Ready("serving on :7400") }, "READY=1\nSTATUS=serving on :7400\n"},
			{func() error { return n.Status("two\nlines") }, "STATUS=two lines\n"},
			{func() error { return n.Alive() }, "WATCHDOG=1\n"},
			{func() error { return n.Stopping("") }, "STOPPING=1\n"},
		} {
			if err := tc.send(); err != nil {
				t.Fatal(err)
			}
			if got := recv(t, c); got != tc.want {
				t.Errorf("abstract=%v: sent %q, want %q", abstract, got, tc.want)
			}
		}
	}
}

func TestOutsideSystemdDoesNothing(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := FromEnv()
	if n.Enabled() || n.Ready("x") != nil || n.Watchdog(context.Background(), nil) != nil {
		t.Fatal("a notifier without a socket must do nothing")
	}
}

func TestWatchdog(t *testing.T) {
	c, name := listen(t, false)
	t.Setenv("NOTIFY_SOCKET", name)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", "")
	n := FromEnv()
	if n.WatchdogInterval() != 20*time.Millisecond {
		t.Fatalf("interval %v", n.WatchdogInterval())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Watchdog(ctx, func() bool { return true }) }()
	for range 3 {
		if got := recv(t, c); !strings.Contains(got, "WATCHDOG=1") {
			t.Fatalf("got %q", got)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Another process's watchdog is not ours.
	t.Setenv("WATCHDOG_PID", "1")
	if FromEnv().WatchdogInterval() != 0 {
		t.Fatal("WATCHDOG_PID of another process must disable the watchdog here")
	}
}

func TestWatchdogStaysSilentWhileUnhealthy(t *testing.T) {
	c, name := listen(t, false)
	t.Setenv("NOTIFY_SOCKET", name)
	t.Setenv("WATCHDOG_USEC", "2000")
	n := FromEnv()
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := n.Watchdog(ctx, func() bool {
		if calls++; calls == 3 {
			cancel()
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	// Datagrams are queued when Write returns: none may be there now.
	c.SetReadDeadline(time.Now())
	if k, err := c.Read(make([]byte, 64)); err == nil {
		t.Fatalf("a wedged service sent a sign of life (%d bytes)", k)
	}
}
