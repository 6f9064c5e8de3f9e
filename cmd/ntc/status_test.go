package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/replicate"
)

func TestStatusRecordsRounds(t *testing.T) {
	home := t.TempDir()
	start := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	st := &replicateStatus{Set: "vm", To: "home:7400", PID: os.Getpid(), Started: start, EveryMS: 5000}
	ok := replicate.Round{N: 1, Start: start, Seq: 4, Committed: true, GuestPause: 11 * time.Millisecond,
		Lag: 1500 * time.Millisecond, Duration: 2 * time.Second, Pushed: replicate.Pushed{Version: 4, BytesSent: 2 << 20}}
	commit := start.Add(2 * time.Second)
	st.record(ok, roundJSON(ok), commit)
	failed := replicate.Round{N: 2, Start: start.Add(5 * time.Second), Err: errors.New("dial home:7400: no recent network activity"), Failures: 1}
	st.record(failed, roundJSON(failed), start.Add(6*time.Second))
	if err := writeStatus(home, st); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(statusPath(home, "vm")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("status file: %v, %v", fi, err)
	}

	now := start.Add(10 * time.Second)
	var out bytes.Buffer
	g := newGlobals(&out, &bytes.Buffer{})
	g.v.Set("home", home)
	g.json = true
	if err := runStatus(t.Context(), g, statusOptions{}, nil, now); err != nil {
		t.Fatal(err)
	}
	var got statusJSON
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Replicating) != 1 {
		t.Fatalf("replicating %+v", got.Replicating)
	}
	r := got.Replicating[0]
	// The receiver holds the checkpoint of round 1, whose instant was its
	// commit (2 s after the start) less its lag (1.5 s): 9.5 s before now.
	if !r.Running || r.HeldSeq != 4 || r.LosesMS != 9500 || r.LastError == "" || r.Last.Round != 2 || r.RateBPS != float64(1<<20) {
		t.Errorf("status %+v, loses %.0f ms", r.replicateStatus, r.LosesMS)
	}

	out.Reset()
	g.json = false
	if err := runStatus(t.Context(), g, statusOptions{}, []string{"vm"}, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"vm -> home:7400 (replicating every 5s", "a failure now loses 9.5s", "last round 2 at", "failed (1 in a row)", "last error", "no recent network activity"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, out.String())
		}
	}

	// After a successful round, its figures and rate.
	st.record(ok, roundJSON(ok), commit)
	writeStatus(home, st)
	out.Reset()
	runStatus(t.Context(), g, statusOptions{}, nil, now)
	if !strings.Contains(out.String(), "paused 11 ms, sent 2.0 MiB in 2.0 s (8.4 Mbit/s), lag 1.5 s") {
		t.Errorf("after a good round: %s", out.String())
	}

	// A replicate that stopped says so.
	stopped := now
	st.Stopped, st.StopErr = &stopped, "the guest is gone"
	writeStatus(home, st)
	out.Reset()
	runStatus(t.Context(), g, statusOptions{}, nil, now)
	if !strings.Contains(out.String(), "stopped") || !strings.Contains(out.String(), "the guest is gone") {
		t.Errorf("stopped replicate: %s", out.String())
	}
}
