package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/procstat"
	"github.com/ntc-project/ntc/replicate"
	"github.com/ntc-project/ntc/repo"
	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"
)

// receiverOptions say where pushes go and how: the flags push and
// replicate share, bound to push.* in the configuration (--streams and
// --conns are read by pushTuning).
type receiverOptions struct {
	to   string
	peer string
}

func (o *receiverOptions) addFlags(g *globals, cmd *cobra.Command) {
	f := cmd.Flags()
	f.String("to", "", "receiver address HOST:PORT")
	f.String("peer", "", "the receiver's node ID (from 'ntc id' there)")
	f.Int("streams", 4, "parallel data streams")
	f.Int("conns", defaultConns, "at most this many connections carry data when 8 MiB or more travel: one per 10 ms of round trip (each has its own congestion window, which lossy long links need); serve's --max-conns-per-peer caps it")
	for _, name := range []string{"to", "peer", "streams", "conns"} {
		g.bind(cmd, "push."+name, name)
	}
}

// load reads the flags (or the configuration) once the command runs.
func (o *receiverOptions) load(g *globals) {
	o.to = g.v.GetString("push.to")
	o.peer = g.v.GetString("push.peer")
}

type pushOptions struct {
	receiverOptions
	// checkpoint is a capture repository to push a checkpoint of, seq
	// which one (0: the newest).
	checkpoint string
	seq        int
	name       string
	changed    string
	force      bool
}

func newPushCommand(g *globals) *cobra.Command {
	var o pushOptions
	cmd := &cobra.Command{
		Use:   "push {IMAGE... | --checkpoint DIR [--seq N]} --to HOST:PORT --peer ID",
		Short: "Send images or a VM checkpoint to a receiver, only what it lacks",
		Long: `Push indexes the images and sends them as the next version of a set to a
receiver ('ntc serve'). The version is first recorded in this node's repository
(~/.local/state/ntc/push) as a child of the set's previous version there (an
unchanged image makes no new version). Only the chunks the receiver does not
hold travel, and the version is described as a delta against the newest
version both sides hold, found by digest, so an unchanged image costs a few
bytes whatever its size.

If the receiver's current version is not an ancestor of the one pushed (the
copies ran apart since their common version), the receiver stores it without
making it current and push fails saying so; --force makes it current.

With --checkpoint DIR, push sends a checkpoint of set --name (default vm)
of the node repository DIR ('ntc checkpoint --out DIR'): the set's current
one, or --seq N, as the version it is there: every disk, every RAM block,
the device state and the stream description as images (disk-vda, ram-pc.ram,
device, stream) and the checkpoint's manifest as its metadata. The common
base is found among every version DIR holds of the set, those it received
included: a copy that comes back sends only what changed while it was away.
Nothing is read again: the checkpoint's indexes and chunks are sent as they
are, and a disk's writes since the checkpoint the receiver holds travel as
patches. A checkpoint may be taken while a push runs.

An interrupted push (Ctrl-C, a dropped link, either side killed) leaves the
receiver's previous version intact; push again and only what did not arrive
is sent.

Examples:
  ntc push disk.img --to home.example:7400 --peer HOME-ID
  ntc push disk.img nvram.bin --name office-vm --to home:7400 --peer HOME-ID --bwlimit 20Mbit
  ntc push disk.img --changed 1G+64K --to home:7400 --peer HOME-ID   re-read only the change
  ntc push --checkpoint /srv/ntc --name web --to home:7400 --peer HOME-ID     the current checkpoint
  ntc push --checkpoint /srv/ntc --name web --seq 12 --to home:7400 --peer HOME-ID

Images are pushed as a set named after the first image unless --name is
given.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && !cmd.Flags().Changed("checkpoint") {
				return usagef("push takes at least one IMAGE, or --checkpoint DIR")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.load(g)
			return runPush(cmd.Context(), g, o, args)
		},
	}
	o.addFlags(g, cmd)
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "set name (default: the first image's file name; with --checkpoint, vm)")
	f.StringVar(&o.checkpoint, "checkpoint", "", "push a checkpoint from this node repository ('ntc checkpoint --out DIR') instead of images")
	f.IntVar(&o.seq, "seq", 0, "with --checkpoint: the checkpoint to push (default: the newest)")
	f.String("bwlimit", "", "cap the average send rate: 20Mbit, 2.5MB/s, 500k (bytes)")
	f.StringVar(&o.changed, "changed", "", "ranges of the (single) image changed since the last push: re-read only those")
	f.BoolVar(&o.force, "force", false, "make the version current on the receiver even if its current version is not an ancestor")
	g.bind(cmd, "push.bwlimit", "bwlimit")
	return cmd
}

// pushJSON is push's --json summary.
type pushJSON struct {
	*ntcsync.Result
	BytesSent  uint64  `json:"bytes_sent"`
	IndexMS    int64   `json:"index_ms"`
	BytesRead  int64   `json:"bytes_read"`
	DurationMS int64   `json:"duration_ms"`
	RateMbit   float64 `json:"rate_mbit"`
	PeakRSS    int64   `json:"peak_rss"`
	// Checkpoint is the checkpoint pushed with --checkpoint.
	Checkpoint int `json:"checkpoint,omitempty"`
}

func runPush(ctx context.Context, g *globals, o pushOptions, paths []string) error {
	if o.to == "" || o.peer == "" {
		return usagef("push needs --to HOST:PORT and --peer ID (the receiver's 'ntc id')")
	}
	peer, err := transport.ParseID(o.peer)
	if err != nil {
		return usagef("--peer: %v", err)
	}
	if o.checkpoint != "" && len(paths) > 0 {
		return usagef("push either IMAGE... or --checkpoint DIR, not both")
	}
	if o.checkpoint == "" && o.seq != 0 {
		return usagef("--seq picks a checkpoint: give --checkpoint DIR too")
	}
	if o.changed != "" && len(paths) != 1 {
		return usagef("--changed describes one image: push one IMAGE with it")
	}
	set := o.name
	if set == "" && o.checkpoint != "" {
		set = capture.DefaultSet
	} else if set == "" {
		set = safeName(filepath.Base(paths[0]))
	}
	if err := ntcsync.CheckName(set); err != nil {
		return usagef("--name: %v", err)
	}
	// Images are recorded as versions in push's own repository (their
	// chunks stay in the files); a checkpoint is a version of the node
	// repository it was taken into already.
	state := filepath.Join(g.home(), "push")
	if o.checkpoint != "" {
		state = o.checkpoint
	}
	s, err := g.newSender(peerAddr(o.to, peer), state)
	if err != nil {
		return err
	}
	s.Force = o.force
	start := time.Now()
	// Connect while indexing: the handshake's round trips overlap the work.
	type dialed struct {
		conn *transport.Conn
		err  error
	}
	dctx, dcancel := context.WithCancel(ctx)
	defer dcancel()
	dch := make(chan dialed, 1)
	go func() {
		c, err := s.Dial(dctx)
		dch <- dialed{c, err}
	}()
	defer func() {
		dcancel()
		if d := <-dch; d.conn != nil {
			d.conn.Close()
		}
	}()
	connect := func(context.Context) (*transport.Conn, error) {
		d := <-dch
		dch <- d // for the deferred close
		return d.conn, d.err
	}
	if o.checkpoint != "" {
		bar := g.newProgress("sending", 0)
		s.Progress, s.Wanted = bar.Add, bar.AddTotal
		res, ckpt, err := replicate.PushCheckpoint(ctx, s, peer, set, o.seq, connect)
		bar.Done()
		return printPush(g, o, set, res, err, pushJSON{Checkpoint: ckpt}, start)
	}
	v := &ntcsync.Version{Set: set}
	_, prev := s.LastAcked(peer, set)
	var read int64
	var changed []chunk.Range
	if o.changed != "" {
		if changed, err = chunk.ParseRanges(o.changed); err != nil {
			return usageError{err}
		}
	}
	for _, path := range paths {
		name := safeName(filepath.Base(path))
		var size int64
		if fi, err := os.Stat(path); err == nil {
			size = fi.Size()
		}
		bar := g.newProgress("indexing "+name, size)
		fimg, err := ntcsync.IndexFile(ctx, path, name, prev[name], changed, bar.Add)
		bar.Done()
		if err != nil {
			return err
		}
		defer fimg.Close()
		read += fimg.BytesRead
		v.Images = append(v.Images, fimg.Image)
	}
	indexed := time.Since(start)
	conn, err := connect(ctx)
	if err != nil {
		return err
	}
	bar := g.newProgress("sending", 0)
	s.Progress, s.Wanted = bar.Add, bar.AddTotal
	res, err := s.Push(ctx, conn, v)
	bar.Done()
	return printPush(g, o, set, res, err, pushJSON{IndexMS: indexed.Milliseconds(), BytesRead: read}, start)
}

// printPush prints what push did (out holds what the caller measured
// besides res) and returns push's error: a push that diverged still
// prints its result with --json.
func printPush(g *globals, o pushOptions, set string, res *ntcsync.Result, err error, out pushJSON, start time.Time) error {
	if err != nil && !(errors.Is(err, repo.ErrDiverged) && g.json && res != nil) {
		return fmt.Errorf("push %s to %s: %w", set, o.to, err)
	}
	total := time.Since(start)
	out.Result, out.BytesSent = res, res.BytesUp+res.BytesDown
	out.DurationMS, out.PeakRSS = total.Milliseconds(), procstat.PeakRSS(0)
	if d := time.Duration(res.DurationMS) * time.Millisecond; d > 0 {
		out.RateMbit = float64(res.BytesUp) * 8 / d.Seconds() / 1e6
	}
	if g.json {
		if werr := writeJSON(g.stdout, out); werr != nil {
			return werr
		}
		if err != nil {
			return fmt.Errorf("push %s to %s: %w", set, o.to, err)
		}
		return nil
	}
	fmt.Fprintf(g.stdout, "pushed %s v%d (%s) to %s in %s\n", set, res.Version, res.Digest.Short(), o.to, total.Round(time.Millisecond))
	if out.Checkpoint != 0 {
		fmt.Fprintf(g.stdout, "  checkpoint %d of %s\n", out.Checkpoint, o.checkpoint)
	}
	base := "no version in common"
	if !res.Base.IsZero() {
		base = "common version " + res.Base.Short()
	}
	fmt.Fprintf(g.stdout, "  %s in %d images; %s changed since the %s\n",
		humanBytes(res.ImageBytes), res.Images, humanBytes(res.ChangedBytes), base)
	fmt.Fprintf(g.stdout, "  sent %d chunks (%s, %s compressed); %s on the wire in all\n",
		res.ChunksSent, humanBytes(res.ChunkBytes), humanBytes(res.DataBytes), humanBytes(int64(out.BytesSent)))
	if res.Healed > 0 {
		fmt.Fprintf(g.stdout, "  %d chunks sent again: the receiver's stored copy was damaged (see its log)\n", res.Healed)
	}
	return nil
}

// safeName turns a file name into a set or image name.
func safeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '+'
		if !ok {
			b[i] = '_'
		}
	}
	if len(b) > 0 && b[0] == '.' {
		b[0] = '_'
	}
	if len(b) > 128 {
		b = b[:128]
	}
	return string(b)
}

// parseRate reads a rate: a number with an optional k, M, G prefix (powers
// of 1000) and a unit of bit, bps (bits per second) or B, B/s (bytes). A
// bare number is bytes per second. "" is no limit.
func parseRate(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	raw := strings.TrimSuffix(s, "/s")
	u := strings.ToLower(raw)
	bits := false
	for _, suf := range []string{"bit", "bps", "b"} {
		if strings.HasSuffix(u, suf) {
			bits = suf != "b" || strings.HasSuffix(raw, "b")
			u = strings.TrimSuffix(u, suf)
			break
		}
	}
	mult := 1.0
	if n := len(u); n > 0 {
		switch u[n-1] {
		case 'k':
			mult = 1e3
		case 'm':
			mult = 1e6
		case 'g':
			mult = 1e9
		}
		if mult != 1 {
			u = u[:n-1]
		}
	}
	v, err := strconv.ParseFloat(u, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q: want a rate like 20Mbit, 2.5MB/s or 500k", s)
	}
	v *= mult
	if bits {
		v /= 8
	}
	return int64(v), nil
}
