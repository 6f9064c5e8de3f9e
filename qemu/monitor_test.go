package qemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp/raw"

	"github.com/ntc-project/ntc/qemu/qmptest"
)

func dialMonitor(t *testing.T, path string) *SocketMonitor {
	t.Helper()
	m, err := DialMonitor(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Disconnect() })
	return m
}

// TestMonitorUnderGoQEMU runs go-qemu's generated command layer on the
// monitor: its requests go out as QEMU wants them, replies and QEMU's
// errors come back as go-qemu expects.
func TestMonitorUnderGoQEMU(t *testing.T) {
	var mu sync.Mutex
	var got []string
	path := qmptest.Start(t, func(r qmptest.Request) []string {
		cmd := r.Command
		mu.Lock()
		got = append(got, cmd)
		mu.Unlock()
		switch cmd {
		case "query-status":
			return []string{`{"return": {"status": "paused", "singlestep": false, "running": false}}`}
		case "stop":
			return []string{`{"error": {"class": "GenericError", "desc": "no stop today"}}`}
		}
		return []string{`{"error": {"class": "CommandNotFound", "desc": "unexpected"}}`}
	})
	m := dialMonitor(t, path)
	if v := m.Version(); v.String() != "7.2.22" || v.Package != "fake" {
		t.Errorf("version %v %q", v, v.Package)
	}
	r := raw.NewMonitor(m)
	st, err := r.QueryStatus()
	if err != nil || st.Running || st.Status != raw.RunStatePaused {
		t.Errorf("QueryStatus: %+v, %v", st, err)
	}
	err = r.Stop()
	var re *ReplyError
	if !errors.As(err, &re) || re.Desc != "no stop today" || re.Class != "GenericError" {
		t.Errorf("Stop: %v, want QEMU's error reply", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, " ") != "query-status stop" {
		t.Errorf("QEMU saw %v", got)
	}
}

// TestMonitorRepliesOutliveLaterLines: every reply is followed by a burst
// of events the reader takes in while the caller decodes the reply. go-qemu's
// own SocketMonitor hands out replies in its scanner's buffer, which those
// lines overwrite (the race detector reports it); this monitor copies each
// line, so every reply is still its command's. Run with -race.
func TestMonitorRepliesOutliveLaterLines(t *testing.T) {
	pad := strings.Repeat("p", 3000)
	path := qmptest.Start(t, func(r qmptest.Request) []string {
		args := r.Args
		var a struct{ N int }
		json.Unmarshal(args, &a)
		out := []string{fmt.Sprintf(`{"return": {"n": %d, "pad": %q}}`, a.N, pad)}
		for i := range 20 {
			out = append(out, fmt.Sprintf(`{"event": "TICK", "data": {"i": %d, "pad": %q}, "timestamp": {"seconds": 1, "microseconds": 2}}`, i, pad))
		}
		return out
	})
	m := dialMonitor(t, path)
	evs, err := m.Events(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	go func() {
		for range evs {
		}
	}()
	for i := range n {
		cmd, _ := json.Marshal(Command{Execute: "echo", Args: map[string]int{"n": i}})
		out, err := m.Run(cmd)
		if err != nil {
			t.Fatal(err)
		}
		var rep struct {
			Return struct {
				N   int
				Pad string
			} `json:"return"`
		}
		if err := json.Unmarshal(out, &rep); err != nil || rep.Return.N != i || rep.Return.Pad != pad {
			t.Fatalf("reply %d: %.100s (%v)", i, out, err)
		}
	}
}

// TestMonitorEvents: events come with QEMU's timestamp, in order, and the
// channel closes when the connection ends.
func TestMonitorEvents(t *testing.T) {
	path := qmptest.Start(t, func(r qmptest.Request) []string {
		cmd := r.Command
		if cmd == "quit" {
			return nil
		}
		return []string{
			`{"event": "STOP", "timestamp": {"seconds": 1700000000, "microseconds": 250000}}`,
			`{"event": "RESUME", "data": {"x": 1}, "timestamp": {"seconds": 1700000001, "microseconds": 5}}`,
			`{"return": {}}`,
		}
	})
	m := dialMonitor(t, path)
	evs, _ := m.Events(t.Context())
	if _, err := m.Run([]byte(`{"execute":"cont"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Run([]byte(`{"execute":"quit"}`)); err == nil {
		t.Error("quit: a reply from a server that hung up")
	}
	var names []string
	for e := range evs {
		names = append(names, fmt.Sprintf("%s@%d.%06d%v", e.Event, e.Timestamp.Seconds, e.Timestamp.Microseconds, e.Data))
	}
	if want := "STOP@1700000000.250000map[] RESUME@1700000001.000005map[x:1]"; strings.Join(names, " ") != want {
		t.Errorf("events %q, want %q", names, want)
	}
}

func TestIsQEMU(t *testing.T) {
	for _, tc := range []struct {
		exe  string
		want bool
	}{
		{"/usr/bin/qemu-system-x86_64", true},
		{"/usr/libexec/qemu-kvm", true},
		{"qemu-system-aarch64", true},
		{"/tmp/go-build1/b001/qemu.test", false},
		{"/usr/bin/socat", false},
		{"", false},
	} {
		if got := (Process{Exe: tc.exe}).IsQEMU(); got != tc.want {
			t.Errorf("IsQEMU(%q) = %v", tc.exe, got)
		}
	}
}

// TestSessionPassesFiles: RunWithFile hands QEMU the descriptor with the
// command (getfd), over the same wire.
func TestSessionPassesFiles(t *testing.T) {
	got := make(chan string, 1)
	path := qmptest.Start(t, func(r qmptest.Request) []string {
		if r.Command != "getfd" || len(r.Files) != 1 {
			return []string{`{"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}}`}
		}
		b, _ := io.ReadAll(r.Files[0])
		r.Files[0].Close()
		got <- string(b)
		return []string{`{"return": {}}`}
	})
	s, err := Dial(t.Context(), path, DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(pw, "through the descriptor")
	pw.Close()
	err = s.RunWithFile(t.Context(), "getfd", map[string]string{"fdname": "x"}, pr)
	pr.Close()
	if err != nil {
		t.Fatal(err)
	}
	if b := <-got; b != "through the descriptor" {
		t.Errorf("QEMU read %q from the descriptor", b)
	}
	var ce *CommandError
	if err := s.Run(t.Context(), "getfd", map[string]string{"fdname": "y"}, nil); !errors.As(err, &ce) || !strings.Contains(ce.Desc, "SCM_RIGHTS") {
		t.Errorf("getfd without a file: %v", err)
	}
}
