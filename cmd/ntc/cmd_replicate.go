package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/internal/sdnotify"
	"github.com/ntc-project/ntc/replicate"
	"github.com/ntc-project/ntc/transport"
)

type replicateOptions struct {
	guestOptions
	receiverOptions
	every   time.Duration
	bwlimit string
	keep    int
	metrics string
	// keepOverlays leaves the guest on ntc's overlay when replication
	// stops (a restart then checkpoints incrementally).
	keepOverlays bool
}

func newReplicateCommand(g *globals) *cobra.Command {
	var o replicateOptions
	cmd := &cobra.Command{
		Use:   "replicate --qmp SOCKET --out DIR --to HOST:PORT --peer ID",
		Short: "Keep a receiver's copy of a running QEMU guest a few seconds behind it",
		Long: `Replicate keeps a copy of a running QEMU guest at a receiver ('ntc serve') a
few seconds behind the original, until Ctrl-C. It repeats rounds: take a live
checkpoint into the checkpoint repository DIR (as 'ntc checkpoint --out DIR'),
push it as the receiver's next version (as 'ntc push --checkpoint DIR': only
what the receiver lacks travels, the disks' writes as patches), then wait
until --every has passed since the checkpoint started. A round that takes
longer starts the next at once: the copy lags by about one round's time.

Each round reports the checkpoint, the guest's pause, the bytes on the wire,
the chunks sent and the lag: how far behind the receiver's copy was when it
committed, from the checkpoint's instant (when the guest was paused). On a
terminal that is one line a round;
otherwise only errors are printed; --json prints one JSON object a round
(JSON lines).

When a push fails for a reason that may pass (the link or the receiver is
down), the next rounds come further apart (--every, doubled per failed round,
up to a minute) and each takes a fresh checkpoint: nothing piles up, and the
first push that gets through sends what changed since the receiver's copy.
Replicate ends with an error that says what to do when waiting cannot help:
the receiver refuses this node's ID, the peer has another ID, the guest is
gone.

Old checkpoints are pruned after every round: the newest --keep stay, and so
does the one the receiver holds (the next push patches against it). The
chunks no version of the repository needs are then dropped from its store, and
their space given back once a pack is mostly such chunks. Give the receiver
a --keep too ('ntc serve --keep N'), or it keeps every version.

Ctrl-C stops at once, between rounds or inside one, leaving nothing
half-written: the receiver keeps its last complete version, DIR its complete
checkpoints, and the guest runs on. Exit status 130. Before it exits, the
overlay the guest writes to since the last checkpoint is merged back into the
guest's own disk image, live, so that the VM is as it was found and can be
restarted from its own configuration (the next replicate then reads the disks
in full once); --keep-overlays leaves the guest on the overlay instead, for a
quick restart.

Examples:
  ntc replicate --qmp /run/vm/qmp.sock --out /srv/ntc/vm --to home:7400 --peer HOME-ID
  ntc replicate --qmp vm.sock --out ckpt --to home:7400 --peer HOME-ID --every 10s --bwlimit 20Mbit
  ntc replicate --qmp vm.sock --out ckpt --to home:7400 --peer HOME-ID --json > rounds.jsonl
  at home, any time:  ntc ls --store ~/vms;  ntc resume --store ~/vms --name ckpt

The set is named after the libvirt domain, or vm, unless --name is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.guestOptions.load(g)
			o.receiverOptions.load(g)
			o.every = g.v.GetDuration("replicate.every")
			o.bwlimit = g.v.GetString("replicate.bwlimit")
			o.keep = g.v.GetInt("replicate.keep")
			o.metrics = g.v.GetString("replicate.metrics-listen")
			return runReplicate(cmd.Context(), g, o)
		},
	}
	o.guestOptions.addFlags(g, cmd)
	o.receiverOptions.addFlags(g, cmd)
	f := cmd.Flags()
	f.Duration("every", 5*time.Second, "interval between the starts of two rounds")
	f.String("bwlimit", "", "cap the average send rate: 20Mbit, 2.5MB/s, 500k (bytes)")
	f.Int("keep", 3, "newest checkpoints kept in DIR (besides the receiver's)")
	f.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9475)")
	f.BoolVar(&o.keepOverlays, "keep-overlays", false, "when stopped, leave the guest writing to ntc's overlay (default: merge it back into the guest's own disk)")
	for key, flag := range map[string]string{
		"replicate.every": "every", "replicate.bwlimit": "bwlimit", "replicate.keep": "keep",
		"replicate.metrics-listen": "metrics-listen",
	} {
		g.bind(cmd, key, flag)
	}
	return cmd
}

// replicateJSON is one round in replicate's --json output.
type replicateJSON struct {
	Round        int       `json:"round"`
	Start        time.Time `json:"start"`
	Seq          int       `json:"seq"`
	Version      uint64    `json:"version,omitempty"`
	Committed    bool      `json:"committed"`
	GuestPauseMS float64   `json:"guest_pause_ms"`
	BytesSent    uint64    `json:"bytes_sent"`
	ChunksSent   int       `json:"chunks_sent"`
	Patched      int       `json:"chunks_patched"`
	LagMS        float64   `json:"lag_ms"`
	DurationMS   float64   `json:"duration_ms"`
	CheckpointMS float64   `json:"checkpoint_ms"`
	Acked        int       `json:"acked"`
	Pruned       []int     `json:"pruned,omitempty"`
	Error        string    `json:"error,omitempty"`
	Failures     int       `json:"failures,omitempty"`
	NextMS       float64   `json:"next_ms"`
}

func runReplicate(ctx context.Context, g *globals, o replicateOptions) error {
	ccfg, err := o.config(g)
	if err != nil {
		return err
	}
	switch {
	case o.to == "" || o.peer == "":
		return usagef("replicate needs --to HOST:PORT and --peer ID (the receiver's 'ntc id')")
	case o.every <= 0:
		return usagef("--every %v: want an interval such as 5s", o.every)
	case o.keep < 1:
		return usagef("--keep %d: keep at least 1 checkpoint", o.keep)
	}
	peer, err := transport.ParseID(o.peer)
	if err != nil {
		return usagef("--peer: %v", err)
	}
	rate, err := parseRate(o.bwlimit)
	if err != nil {
		return usagef("--bwlimit: %v", err)
	}
	set := ccfg.Set
	s, err := g.newSender(peerAddr(o.to, peer), o.out)
	if err != nil {
		return err
	}
	s.BytesPerSec = rate // replicate.bwlimit, not push's
	if s.Logger, err = g.logger("push"); err != nil {
		return err
	}
	p := &replicate.Push{Set: set, Peer: peer, Sender: s}
	acked := 0
	if _, err := os.Stat(o.out); err == nil {
		if acked, err = p.Acked(ctx); err != nil {
			return err
		}
	}
	c := &replicate.Capture{Config: ccfg}
	status := isTerminal(g.stdout) && !g.json
	if status {
		held := "nothing of it yet"
		if acked > 0 {
			held = fmt.Sprintf("checkpoint %d", acked)
		}
		fmt.Fprintf(g.stdout, "replicating %s to %s as %s every %s (the receiver holds %s); Ctrl-C stops\n", o.guest(), o.to, set, o.every, held)
	}
	held := acked // the checkpoint the receiver holds
	var metrics *replicateMetrics
	if o.metrics != "" {
		reg := newRegistry()
		metrics = newReplicateMetrics(reg, set)
		addr, err := serveMetrics(ctx, o.metrics, reg)
		if err != nil {
			return err
		}
		if g.verbose {
			fmt.Fprintf(g.stderr, "metrics at http://%s/metrics\n", addr)
		}
	}
	// Under systemd (Type=notify): ready once the loop runs, a status line
	// per round, signs of life for the watchdog, and stopping at the end.
	sd := sdnotify.FromEnv()
	sd.Ready(fmt.Sprintf("replicating %s to %s as %s every %s", o.guest(), o.to, set, o.every))
	wctx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	go sd.Watchdog(wctx, nil)
	st := &replicateStatus{Set: set, Guest: o.guest(), To: o.to, Peer: peer.String(), PID: os.Getpid(),
		Started: time.Now(), EveryMS: float64(o.every.Milliseconds()), HeldSeq: acked}
	st.Updated = st.Started
	if err := writeStatus(g.home(), st); err != nil {
		return err
	}
	err = replicate.Run(ctx, replicate.Config{
		Checkpointer: c, Pusher: p, Pruner: c, Every: o.every, Keep: o.keep, Acked: acked,
		Report: func(r replicate.Round) {
			held = r.Acked
			reportRound(g, r, status)
			sd.Status(roundStatus(r))
			st.record(r, roundJSON(r), time.Now())
			if err := writeStatus(g.home(), st); err != nil && g.verbose {
				fmt.Fprintf(g.stderr, "ntc: %v\n", err)
			}
			if metrics != nil {
				metrics.observe(r)
			}
		},
	})
	sd.Stopping("")
	if ctx.Err() != nil && !o.keepOverlays {
		// Stopped by the user: leave the VM as it was found.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		rel, rerr := capture.Release(rctx, ccfg)
		rcancel()
		switch {
		case rerr != nil:
			fmt.Fprintf(g.stderr, "ntc: merging the overlays back into the disks: %v (the guest runs on ntc's overlay; 'ntc checkpoint --release' retries)\n", rerr)
		case len(rel.Disks) > 0:
			fmt.Fprintf(g.stderr, "ntc: merged %d overlay(s) back into %v: the guest writes to its own disk image again\n", rel.Overlays, rel.Disks)
		}
	}
	stopped := time.Now()
	st.Stopped = &stopped
	if err != nil && ctx.Err() == nil {
		st.StopErr = err.Error()
	}
	writeStatus(g.home(), st)
	if err != nil && ctx.Err() == nil && held > 0 {
		return fmt.Errorf("%w\n(the receiver holds checkpoint %d of %s, as set %s: 'ntc resume --store STORE --name %s' there starts it)", err, held, o.out, set, set)
	}
	return err
}

// reportRound prints a round: a JSON line with --json, a line of status on
// a terminal, and a failed round's error always.
func reportRound(g *globals, r replicate.Round, status bool) {
	if g.json {
		writeJSONLine(g.stdout, roundJSON(r))
	}
	if r.Err != nil {
		holds := "nothing of this guest yet"
		if r.Acked > 0 {
			holds = fmt.Sprintf("checkpoint %d", r.Acked)
		}
		fmt.Fprintf(g.stderr, "ntc: round %d: %v; the receiver holds %s; next round in %s\n",
			r.N, r.Err, holds, r.Next.Round(time.Second))
		return
	}
	if status {
		fmt.Fprintf(g.stdout, "%s  checkpoint %d -> v%d: paused %.0f ms, sent %s (%d chunks), lag %.1f s, round %.1f s\n",
			r.Start.Format("15:04:05"), r.Seq, r.Version, ms(r.GuestPause), humanBytes(int64(r.BytesSent)), r.ChunksSent,
			r.Lag.Seconds(), r.Duration.Seconds())
	}
}

// roundJSON is a round as --json prints it.
func roundJSON(r replicate.Round) replicateJSON {
	out := replicateJSON{
		Round: r.N, Start: r.Start, Seq: r.Seq, Version: r.Version, Committed: r.Committed, GuestPauseMS: ms(r.GuestPause),
		BytesSent: r.BytesSent, ChunksSent: r.ChunksSent, Patched: r.Patched, LagMS: ms(r.Lag),
		DurationMS: ms(r.Duration), CheckpointMS: ms(r.CheckpointTime), Acked: r.Acked, Pruned: r.Pruned, Failures: r.Failures, NextMS: ms(r.Next),
	}
	if r.Err != nil {
		out.Error = r.Err.Error()
	}
	return out
}

// roundStatus is the one line 'systemctl status' shows after a round.
func roundStatus(r replicate.Round) string {
	if r.Err != nil {
		return fmt.Sprintf("round %d failed: %v; next in %s", r.N, r.Err, r.Next.Round(time.Second))
	}
	return fmt.Sprintf("round %d: checkpoint %d -> v%d, lag %.1f s, sent %s", r.N, r.Seq, r.Version, r.Lag.Seconds(), humanBytes(int64(r.BytesSent)))
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
