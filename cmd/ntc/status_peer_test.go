package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStatusAtPeers asks a real 'ntc serve' what it holds, through a
// configured peer's name, through ID@ADDR, and through the configuration
// alone (every peer), in text and JSON; a node serve does not allow gets
// no answer.
func TestStatusAtPeers(t *testing.T) {
	office, home, stranger := newNode(t), newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serve(t, home, store, office.id)
	img := filepath.Join(t.TempDir(), "disk.img")
	randomFile(t, img, 1<<20, 4)
	for _, name := range []string{"web", "db", "db"} {
		if name == "db" {
			randomFile(t, img, 1<<20, uint64(time.Now().UnixNano())) // each db push a new version
		}
		if _, err := push(t, t.Context(), office, addr, home.id, img, "--name", name); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf("peers:\n  home: {addr: %q, id: %q}\n", addr, home.id)
	if err := os.WriteFile(filepath.Join(office.home, "ntc.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	status := func(n node, args ...string) (statusJSON, string, error) {
		t.Helper()
		c := n.cmd(t.Context(), append([]string{"--json", "status"}, args...)...)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.Output()
		var st statusJSON
		if jerr := json.Unmarshal(out, &st); jerr != nil {
			t.Fatalf("status printed %q (%s): %v", out, stderr.String(), jerr)
		}
		return st, stderr.String(), err
	}
	for _, args := range [][]string{{"--peer", "home"}, {"--peer", addr}, {"--peer", home.id + "@" + addr}, nil} {
		st, errs, err := status(office, args...)
		if err != nil || len(st.Peers) != 1 {
			t.Fatalf("status %v: %v, %s, %+v", args, err, errs, st)
		}
		p := st.Peers[0]
		t.Logf("status %v: answered in %.1f ms", args, p.LatencyMS)
		if p.Error != "" || p.ID != home.id || len(p.Sets) != 2 || p.Now == nil {
			t.Fatalf("status %v: %+v", args, p)
		}
		for _, s := range p.Sets {
			want := map[string]uint64{"web": 1, "db": 2}[s.Set]
			if s.Version != want || s.Versions != want || s.SenderName != "this node" || s.Sender != office.id ||
				s.AgeMS < 0 || s.AgeMS > float64(time.Minute.Milliseconds()) {
				t.Errorf("status %v: set %+v, want version %d from this node", args, s, want)
			}
		}
	}
	// Only the sets named.
	st, _, err := status(office, "db", "--peer", "home")
	if err != nil || len(st.Peers) != 1 || len(st.Peers[0].Sets) != 1 || st.Peers[0].Sets[0].Set != "db" {
		t.Fatalf("status of db: %v, %+v", err, st)
	}
	// In words.
	out, err := office.cmd(t.Context(), "status", "--peer", "home").Output()
	t.Logf("status --peer home:\n%s", out)
	if err != nil || !strings.Contains(string(out), "at home, "+addr+" (answered in ") || !strings.Contains(string(out), "db: version 2 of ") ||
		!strings.Contains(string(out), "from this node, 2 versions kept") {
		t.Fatalf("status text: %v\n%s", err, out)
	}

	// A node serve does not allow: no answer, and a failed command when
	// it asked for that peer; --local asks nobody.
	if err := os.WriteFile(filepath.Join(stranger.home, "ntc.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	st, errs, err := status(stranger, "--peer", "home")
	if err == nil || len(st.Peers) != 1 || st.Peers[0].Error == "" || len(st.Peers[0].Sets) != 0 {
		t.Fatalf("status from a node serve does not allow: %v, %+v", err, st)
	}
	// What to do is said once: by the failed command's error (the
	// transport's typed error and its hint), not in the peer's answer.
	if !strings.Contains(errs, "\nhint: ") || strings.Contains(st.Peers[0].Error, "hint") {
		t.Errorf("status --peer home from a stranger: error %q, stderr %q: want one hint, on stderr", st.Peers[0].Error, errs)
	}
	// Asking the configuration's peers does not fail: the report says what
	// to check under the peer that did not answer.
	out, err = stranger.cmd(t.Context(), "status").Output()
	if err != nil || !strings.Contains(string(out), "no answer: ") || !strings.Contains(string(out), "\n  hint: ") {
		t.Errorf("status from a stranger, in words: %v\n%s", err, out)
	}
	st, _, err = status(stranger, "--local")
	if err != nil || len(st.Peers) != 0 {
		t.Fatalf("status --local: %v, %+v", err, st)
	}
}
