package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/capture"
	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"
)

// TestReplicate runs a real 'ntc replicate --every 2s --json' from the
// running test guest to a real 'ntc serve' for three rounds: every round's
// version reaches the receiver, the later rounds send a small fraction of
// the first, rounds start 2 s apart or at once after a longer one, the lag
// is reported and bounded by the round, old checkpoints are pruned, and
// Ctrl-C ends it with exit status 130 leaving the receiver's latest
// version complete (byte for byte its checkpoint). Before that, a sender
// the receiver does not allow, and after it, a guest that is gone, end
// replicate at once with an error that says what to do.
func TestReplicate(t *testing.T) {
	vm := startTickingGuest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	office, home, stranger := newNode(t), newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serveWith(t, home, store, []string{"--keep", "2"}, office.id)
	repo := filepath.Join(t.TempDir(), "office-vm")
	args := func() []string {
		return []string{"--json", "replicate", "--qmp", vm.QMPPath(), "--out", repo, "--name", "office-vm", "--to", addr, "--peer", home.id, "--every", "2s", "--keep", "2"}
	}

	// A sender the receiver does not allow: one round, then an error that
	// names this node and the hint to allow it with --allow.
	var out, errb bytes.Buffer
	c := stranger.cmd(ctx, args()...)
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	if code := exitCode(err); code != exitError || !strings.Contains(errb.String(), "allow this node, "+stranger.id) || !strings.Contains(errb.String(), "\nhint: on the receiver, allow this node: ntc serve ... --allow ID") || out.Len() != 0 {
		t.Fatalf("replicate from a node the receiver does not allow: exit %d (%v), stdout %q, stderr %q", code, err, out.String(), errb.String())
	}

	c = office.cmd(context.Background(), args()...)
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	rounds := make(chan replicateJSON, 16)
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var r replicateJSON
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				r.Error = "bad line " + sc.Text()
			}
			rounds <- r
		}
		close(rounds)
		exited <- c.Wait()
	}()
	t.Cleanup(func() {
		c.Process.Kill()
		<-exited
	})
	sets, err := ntcsync.OpenRepoForReading(store)
	if err != nil {
		t.Fatal(err)
	}
	var got []replicateJSON
	for len(got) < 3 {
		var r replicateJSON
		select {
		case r = <-rounds:
		case <-ctx.Done():
			t.Fatalf("%d rounds reported: %s", len(got), stderr.String())
		}
		if r.Error != "" || !r.Committed {
			t.Fatalf("round %+v: %s", r, stderr.String())
		}
		// The version is on the receiver as soon as the round says so.
		if m, err := sets.Manifest("office-vm", r.Version); err != nil || m.Version != r.Version {
			t.Fatalf("round %d: version %d is not on the receiver: %v", r.Round, r.Version, err)
		}
		t.Logf("round %d: checkpoint %d -> v%d, guest paused %.0f ms, %d bytes on the wire (%d chunks), lag %.0f ms (checkpoint %.0f ms, round %.0f ms), next in %.0f ms",
			r.Round, r.Seq, r.Version, r.GuestPauseMS, r.BytesSent, r.ChunksSent, r.LagMS, r.CheckpointMS, r.DurationMS, r.NextMS)
		got = append(got, r)
	}

	for i, r := range got {
		if r.Round != i+1 || r.Version != uint64(i+1) || r.Acked != r.Seq || r.GuestPauseMS <= 0 || r.ChunksSent == 0 {
			t.Errorf("round %+v", r)
		}
		// Lag runs from the checkpoint's instant, inside the checkpoint,
		// to the commit: within the round.
		if r.LagMS <= 0 || r.LagMS > r.DurationMS {
			t.Errorf("round %d: lag %.0f ms, checkpoint %.0f ms, round %.0f ms", r.Round, r.LagMS, r.CheckpointMS, r.DurationMS)
		}
		if i == 0 {
			continue
		}
		if r.BytesSent*5 > got[0].BytesSent {
			t.Errorf("round %d sent %d bytes, more than a fifth of the first round's %d", r.Round, r.BytesSent, got[0].BytesSent)
		}
		// Rounds start 2 s apart, or at once after a longer round: never
		// sooner. (How much later depends on the machine's load; the
		// schedule itself is tested on a fake clock in package replicate.)
		prev := got[i-1]
		gap := r.Start.Sub(prev.Start)
		want := max(2*time.Second, time.Duration(prev.DurationMS*float64(time.Millisecond)))
		if gap < want {
			t.Errorf("round %d started %v after round %d, which took %.0f ms; want %v or later", r.Round, gap, prev.Round, prev.DurationMS, want)
		}
	}

	// 'ntc status' while it runs: the round it reports is one the JSON
	// lines reported, with the same lag; what a failure would lose runs
	// from that checkpoint's instant.
	st := statusOf(t, ctx, office)
	if len(st.Replicating) != 1 || !st.Replicating[0].Running || st.Replicating[0].Last == nil {
		t.Fatalf("status while replicating: %+v", st)
	}
	sr := st.Replicating[0]
	for len(got) < sr.Last.Round {
		r, ok := <-rounds
		if !ok {
			t.Fatalf("status reports round %d, replicate ended after %d", sr.Last.Round, len(got))
		}
		got = append(got, r)
	}
	jr := got[sr.Last.Round-1]
	if d := sr.Last.LagMS - jr.LagMS; d > 1000 || d < -1000 || sr.HeldSeq != jr.Seq || sr.LosesMS < jr.LagMS {
		t.Errorf("status: round %d, lag %.0f ms, holds %d, loses %.0f ms; the JSON line: lag %.0f ms, checkpoint %d",
			sr.Last.Round, sr.Last.LagMS, sr.HeldSeq, sr.LosesMS, jr.LagMS, jr.Seq)
	}

	// Ctrl-C, inside or between rounds.
	if err := c.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	sigint := time.Now()
	for r := range rounds {
		if r.Committed {
			got = append(got, r)
		}
	}
	err = <-exited
	exited <- err
	if code := exitCode(err); code != exitInterrupted {
		t.Fatalf("replicate after Ctrl-C: exit %d (%v): %s", code, err, stderr.String())
	}
	t.Logf("replicate stopped %v after Ctrl-C", time.Since(sigint).Round(time.Millisecond))
	// It left the guest as it found it: writing to its own disk image.
	if !strings.Contains(stderr.String(), "writes to its own disk image again") {
		t.Errorf("replicate did not merge its overlay back on Ctrl-C: %s", stderr.String())
	}
	if ovs, _ := filepath.Glob(filepath.Join(vm.Dir(), "*.ntc-*.qcow2")); len(ovs) > 0 {
		t.Errorf("overlays left after replicate stopped: %v", ovs)
	}
	if st := statusOf(t, ctx, office); len(st.Replicating) != 1 || st.Replicating[0].Running || st.Replicating[0].Stopped == nil {
		t.Errorf("status after Ctrl-C: %+v", st.Replicating)
	}
	last := got[len(got)-1]
	cur, err := sets.Current("office-vm")
	if err != nil || cur.Version != last.Version {
		t.Fatalf("the receiver's current version: %v, %v; the last round committed v%d", cur, err, last.Version)
	}
	checkReceived(t, repo, last.Seq, store, "office-vm")

	// The receiver keeps 2 versions (serve --keep 2): it prunes right
	// after it answers the commit, so await it.
	for deadline := time.Now().Add(10 * time.Second); ; {
		all, err := sets.List()
		if err != nil || len(all) != 1 {
			t.Fatalf("the receiver's sets: %+v, %v", all, err)
		}
		if vs := all[0].Versions; len(vs) <= 2 && slices.Contains(vs, last.Version) {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the receiver holds versions %v after %d rounds; serve --keep 2", vs, len(got))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Pruned: the newest 2 checkpoints are left, the receiver's among them.
	cr, err := capture.OpenRepositoryForReading(repo, "office-vm")
	if err != nil {
		t.Fatal(err)
	}
	left, err := cr.Checkpoints()
	cr.Close()
	if err != nil || len(left) > 2 || !slices.Contains(left, last.Seq) {
		t.Errorf("checkpoints left in the repository: %v (%v); want at most 2, with %d", left, err, last.Seq)
	}

	// The guest runs on; once it is gone, replicate says so at once.
	if _, err := vm.WaitTick(ctx, vm.LastTick()+1); err != nil {
		t.Fatalf("the guest stopped ticking: %v", err)
	}
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	c = office.cmd(ctx, args()...)
	c.Stdout, c.Stderr = &out, &errb
	err = c.Run()
	if code := exitCode(err); code != exitError || !strings.Contains(errb.String(), "the guest is gone") ||
		!strings.Contains(errb.String(), "ntc resume") || out.Len() != 0 {
		t.Errorf("replicate of a guest that is gone: exit %d (%v), stdout %q, stderr %q", code, err, out.String(), errb.String())
	}
}

// statusOf runs 'ntc status --json' as node n.
func statusOf(t *testing.T, ctx context.Context, n node) statusJSON {
	t.Helper()
	out, err := n.cmd(ctx, "--json", "status").Output()
	if err != nil {
		t.Fatalf("ntc status: %v", err)
	}
	var st statusJSON
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("ntc status --json: %v: %s", err, out)
	}
	return st
}

// exitCode is a finished command's exit status (-1 if it did not run or
// was killed by a signal).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return ee.ExitCode()
	}
	return -1
}

func TestReplicateUsage(t *testing.T) {
	id, err := transport.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	peer := id.ID().String()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no qmp", []string{"--out", "d", "--to", "h:1", "--peer", "x"}, "--qmp"},
		{"no out", []string{"--qmp", "q", "--to", "h:1", "--peer", "x"}, "--out"},
		{"no peer", []string{"--qmp", "q", "--out", "d", "--to", "h:1"}, "--peer"},
		{"bad every", []string{"--qmp", "q", "--out", "d", "--to", "h:1", "--peer", "x", "--every", "0s"}, "--every"},
		{"bad keep", []string{"--qmp", "q", "--out", "d", "--to", "h:1", "--peer", "x", "--keep", "0"}, "--keep"},
		{"bad peer", []string{"--qmp", "q", "--out", "d", "--to", "h:1", "--peer", "x"}, "--peer"},
		{"bad bwlimit", []string{"--qmp", "q", "--out", "d", "--to", "h:1", "--peer", peer, "--bwlimit", "fast"}, "--bwlimit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := ntc(t, t.Context(), append([]string{"replicate"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d mentioning %s", code, errs, exitUsage, tc.want)
			}
		})
	}
}
