package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"

	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeAsAService runs 'ntc serve' as systemd would run the shipped
// unit (Type=notify, JSON logs, metrics): it says READY=1 once it listens,
// logs one JSON object per line, serves metrics that say what it holds
// after a push (and that promtool accepts), and on SIGTERM says STOPPING=1
// and exits 0.
func TestServeAsAService(t *testing.T) {
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	c := home.cmd(context.Background(), "--json", "--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--store", store,
		"--allow", office.id, "--metrics-listen", "127.0.0.1:0")
	c.Env = append(c.Env, "NOTIFY_SOCKET="+notify.LocalAddr().String(), "WATCHDOG_USEC=60000000")
	stdout, _ := c.StdoutPipe()
	stderr, _ := c.StderrPipe()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Process.Kill()
	events := make(chan map[string]any, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var ev map[string]any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = map[string]any{"bad line": sc.Text()}
			}
			events <- ev
		}
		close(events)
	}()
	recv := func(want string) {
		t.Helper()
		notify.SetReadDeadline(time.Now().Add(30 * time.Second))
		b := make([]byte, 4096)
		for {
			n, err := notify.Read(b)
			if err != nil {
				t.Fatalf("no %s from serve: %v", want, err)
			}
			if strings.Contains(string(b[:n]), want) {
				return
			}
		}
	}
	recv("READY=1")
	var ev listeningJSON
	if err := json.NewDecoder(stdout).Decode(&ev); err != nil {
		t.Fatal(err)
	}
	var metrics string
	for metrics == "" {
		e, ok := <-events
		if !ok {
			t.Fatal("serve's log ended before it said where its metrics are")
		}
		if e["bad line"] != nil || e["component"] != "serve" {
			t.Fatalf("a log line that is not a JSON event of serve: %v", e)
		}
		if msg, _ := e["msg"].(string); strings.HasPrefix(msg, "metrics at ") {
			metrics = strings.TrimPrefix(msg, "metrics at ")
		}
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	randomFile(t, img, 2<<20, 5)
	if _, err := push(t, t.Context(), office, ev.Addr, home.id, img, "--name", "vm"); err != nil {
		t.Fatal(err)
	}
	page := scrape(t, metrics)
	for _, want := range []string{`ntc_serve_versions{set="vm"} 1`, `ntc_serve_current_version_age_seconds{set="vm"}`, "ntc_serve_store_bytes ", "ntc_serve_refusals_total 0"} {
		if !strings.Contains(page, want) {
			t.Errorf("serve's metrics lack %s", want)
		}
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(page)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
	c.Process.Signal(syscall.SIGTERM)
	recv("STOPPING=1")
	if err := c.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}

}
