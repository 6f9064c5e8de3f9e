package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/replicate"
)

// scrape fetches the metrics page a registry serves.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return string(b)
}

func TestReplicateMetrics(t *testing.T) {
	reg := newRegistry()
	m := newReplicateMetrics(reg, "vm")
	start := time.Unix(1700000000, 0)
	m.observe(replicate.Round{N: 1, Start: start, Committed: true, GuestPause: 12 * time.Millisecond,
		Lag: 1500 * time.Millisecond, Duration: 2 * time.Second, Pushed: replicate.Pushed{BytesSent: 4096, ChunksSent: 3}})
	m.observe(replicate.Round{N: 2, Start: start.Add(5 * time.Second), Err: errors.New("link down"), Failures: 1, Duration: time.Second})
	addr, err := serveMetrics(t.Context(), "127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	page := scrape(t, "http://"+addr.String()+"/metrics")
	for _, want := range []string{
		`ntc_replicate_rounds_total{result="ok",set="vm"} 1`,
		`ntc_replicate_rounds_total{result="failed",set="vm"} 1`,
		`ntc_replicate_consecutive_failures{set="vm"} 1`,
		`ntc_replicate_lag_seconds{set="vm"} 1.5`,
		`ntc_replicate_last_success_timestamp_seconds{set="vm"} 1.700000002e+09`,
		`ntc_replicate_guest_pause_seconds_count{set="vm"} 1`,
		`ntc_replicate_sent_bytes_total{set="vm"} 4096`,
		`ntc_replicate_sent_chunks_total{set="vm"} 3`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian's prometheus package has it; scripts/deps.sh installs it)")
	}
	cmd := exec.CommandContext(context.Background(), promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(page)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
}
