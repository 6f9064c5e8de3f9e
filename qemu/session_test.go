package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/qemu/qmptest"
)

func TestSession(t *testing.T) {
	big := strings.Repeat("x", 200<<10)
	path := qmptest.Start(t, func(r qmptest.Request) []string {
		cmd := r.Command
		switch cmd {
		case "query-status":
			return []string{
				`{"event": "STOP", "timestamp": {"seconds": 1700000000, "microseconds": 250000}}`,
				`{"return": {"status": "running", "running": true}}`,
			}
		case "big":
			return []string{`{"return": "` + big + `"}`}
		case "hang":
			return []string{""}
		case "quit":
			return nil
		}
		return []string{`{"error": {"class": "CommandNotFound", "desc": "The command ` + cmd + ` has not been found"}}`}
	})
	ctx := t.Context()
	s, err := Dial(ctx, path, DialOptions{CommandTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Version() != "7.2.22" || !s.VersionAtLeast(7, 2) || s.VersionAtLeast(7, 3) {
		t.Errorf("version %s", s.Version())
	}

	mark := s.EventMark()
	var st struct{ Running bool }
	err = s.Run(ctx, "query-status", nil, &st)
	if err != nil || !st.Running {
		t.Fatalf("query-status: %+v, %v", st, err)
	}
	ev, _, err := s.WaitEvent(ctx, mark, func(e Event) bool { return e.Name == "STOP" })
	if err != nil || ev.Time != time.Unix(1700000000, 250000000) {
		t.Errorf("STOP event %+v, %v", ev, err)
	}

	var ce *CommandError
	if err := s.Run(ctx, "bogus", nil, nil); !errors.As(err, &ce) || !strings.Contains(ce.Desc, "bogus") {
		t.Errorf("bogus: %v", err)
	}
	if maxLine > len(big) {
		var got string
		if err := s.Run(ctx, "big", nil, &got); err != nil || got != big {
			t.Errorf("200 KiB reply: %d bytes, %v", len(got), err)
		}
	}

	// No reply: the session times out and is unusable afterwards.
	err = s.Run(ctx, "hang", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hang: %v", err)
	}
	if s.Err() == nil {
		t.Error("session usable after a lost reply")
	}
	if err := s.Run(ctx, "query-status", nil, nil); err == nil {
		t.Error("command ran on a broken session")
	}

	// A server that hangs up.
	s2, err := Dial(ctx, path, DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Run(ctx, "quit", nil, nil); !errors.Is(err, ErrDisconnected) {
		t.Errorf("quit: %v", err)
	}
	if _, _, err := s2.WaitEvent(ctx, s2.EventMark(), func(Event) bool { return true }); !errors.Is(err, ErrDisconnected) {
		t.Errorf("wait after hang-up: %v", err)
	}
}

func TestDialErrors(t *testing.T) {
	dir, err := os.MkdirTemp("", "ntcq-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx := t.Context()
	opts := DialOptions{ConnectTimeout: 300 * time.Millisecond}

	listen := func(name string, serve func(net.Conn)) string {
		p := filepath.Join(dir, name)
		l, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		if serve != nil {
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() { defer c.Close(); serve(c) }()
				}
			}()
		}
		return p
	}
	regular := filepath.Join(dir, "file")
	os.WriteFile(regular, []byte("{}"), 0o644)
	stale := filepath.Join(dir, "stale.sock")
	if l, err := net.Listen("unix", stale); err != nil {
		t.Fatal(err)
	} else {
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
	}

	for _, tc := range []struct {
		name, path string
		is         error
		says       string
	}{
		{"missing", filepath.Join(dir, "nope.sock"), ErrNoSocket, "-qmp unix:"},
		{"regular file", regular, ErrNotQMP, "not a unix socket"},
		{"stale socket", stale, nil, "nothing listens"},
		// A plain listener that never accepts: the connection waits in
		// its backlog, like a QEMU serving another client, but the
		// process behind it is not QEMU.
		{"silent listener", listen("silent.sock", nil), ErrNotQMP, "sent no QMP greeting"},
		{"accepts, says nothing", listen("mute.sock", func(c net.Conn) { time.Sleep(time.Second) }), ErrNotQMP, "sent no QMP greeting"},
		{"speaks another protocol", listen("http.sock", func(c net.Conn) { fmt.Fprintln(c, "HTTP/1.1 400 Bad Request") }), ErrNotQMP, "QMP greeting"},
		{"hangs up", listen("eof.sock", func(c net.Conn) {}), ErrNotQMP, "did not answer with a QMP greeting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			s, err := Dial(ctx, tc.path, opts)
			if err == nil {
				s.Close()
				t.Fatal("Dial succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v, want %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}
