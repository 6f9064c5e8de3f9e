package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notifier sends messages to systemd's notification socket.
type Notifier struct {
	socket string // "" outside systemd
	// watchdog is the interval systemd expects WATCHDOG=1 within; 0: none.
	watchdog time.Duration
}

// FromEnv returns the Notifier that $NOTIFY_SOCKET, $WATCHDOG_USEC and
// $WATCHDOG_PID describe for this process.
func FromEnv() *Notifier {
	n := &Notifier{socket: os.Getenv("NOTIFY_SOCKET")}
	if us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64); err == nil && us > 0 {
		pid := os.Getenv("WATCHDOG_PID")
		if pid == "" || pid == strconv.Itoa(os.Getpid()) {
			n.watchdog = time.Duration(us) * time.Microsecond
		}
	}
	return n
}

// Enabled reports whether the process runs under systemd's notification.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// WatchdogInterval is the interval systemd expects a sign of life within,
// 0 when it expects none.
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Ready says that the service is up (it listens, or has started its work).
func (n *Notifier) Ready(status string) error { return n.send("READY=1", status) }

// Stopping says that the service is shutting down.
func (n *Notifier) Stopping(status string) error { return n.send("STOPPING=1", status) }

// Status sets the one-line status 'systemctl status' shows.
func (n *Notifier) Status(status string) error { return n.send("", status) }

// Alive is one sign of life for the watchdog.
func (n *Notifier) Alive() error { return n.send("WATCHDOG=1", "") }

// Watchdog sends a sign of life every half watchdog interval, while healthy
// reports true, until ctx ends. A service whose work loop is wedged should
// report false: systemd then restarts it. Without a watchdog it returns at
// once.
func (n *Notifier) Watchdog(ctx context.Context, healthy func() bool) error {
	iv := n.WatchdogInterval()
	if !n.Enabled() || iv <= 0 {
		return nil
	}
	t := time.NewTicker(iv / 2)
	defer t.Stop()
	for {
		if healthy == nil || healthy() {
			if err := n.Alive(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (n *Notifier) send(state, status string) error {
	if !n.Enabled() {
		return nil
	}
	var lines []string
	if state != "" {
		lines = append(lines, state)
	}
	if status != "" {
		lines = append(lines, "STATUS="+strings.Map(func(r rune) rune {
			if r == '\n' {
				return ' '
			}
			return r
		}, status))
	}
	if len(lines) == 0 {
		return nil
	}
	addr := &net.UnixAddr{Name: n.socket, Net: "unixgram"}
	if strings.HasPrefix(addr.Name, "@") {
		addr.Name = "\x00" + addr.Name[1:]
	}
	c, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}
