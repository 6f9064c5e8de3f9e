package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ntc-project/ntc/bench/link"
)

// Tools the benchmark compares.
const (
	ToolNTC        = "ntc"          // ntc push, indexing the whole new image
	ToolNTCChanged = "ntc+changed"  // ntc push --changed: the writes are known
	ToolRsyncZ     = "rsync -z"     // rsync --no-whole-file -z
	ToolRsync      = "rsync"        // rsync --no-whole-file
	ToolFullZstd   = "full zstd"    // rsync --whole-file with zstd compression
	ToolMigrate    = "qemu migrate" // QEMU's own live migration of the running guest (VM scenarios)
	ToolHandoff    = "ntc handoff"  // ntc sync --handoff with ntc replicate running (VM scenarios)
)

// AllTools is every tool, in report order.
var AllTools = []string{ToolNTC, ToolNTCChanged, ToolRsyncZ, ToolRsync, ToolFullZstd, ToolMigrate, ToolHandoff}

// applies reports whether tool has a meaning in scenario sc: QEMU's
// migration needs a guest; ntc+changed is for images whose writes are
// listed (a checkpoint push always knows them).
func applies(tool string, sc *Scenario) bool {
	switch tool {
	case ToolMigrate, ToolHandoff:
		return sc.VM != nil
	case ToolNTCChanged:
		return sc.VM == nil
	}
	return true
}

// Config says what to run.
type Config struct {
	Bin       string // the ntc binary
	Dir       string // work directory (images, stores)
	Profiles  []link.Profile
	Scenarios []*Scenario
	Tools     []string
	// Logger, if set, is told each case as it starts (info); nil discards.
	Logger *slog.Logger
	// Progress, if set and Logger is not, is told what is running.
	//
	// Deprecated: set Logger. Kept until cmd/ntc's bench command sets
	// Logger instead.
	Progress func(format string, args ...any)
	// PushArgs are added to the measured 'ntc push' (an experiment such as
	// --conns 1; the report is of ntc's defaults without them).
	PushArgs []string
	// TraceDir, if set, receives a packet timeline of every case:
	// trace-SCENARIO-LINK-TOOL.tsv (link.WriteTrace).
	TraceDir string
}

// Case is one tool on one scenario over one link.
type Case struct {
	Scenario string `json:"scenario"`
	Profile  string `json:"link"`
	Tool     string `json:"tool"`
	// WireBytes counts the IP bytes that crossed the link, both ways.
	WireBytes int64 `json:"wire_bytes"`
	// Wall is the sender's (client's) run time.
	Wall time.Duration `json:"wall_ns"`
	// CPU of each side's processes.
	CPUSender   time.Duration `json:"cpu_sender_ns"`
	CPUReceiver time.Duration `json:"cpu_receiver_ns"`
	// Peak resident memory of each side's main process.
	MemSender   int64 `json:"mem_sender_bytes"`
	MemReceiver int64 `json:"mem_receiver_bytes"`
	// Limit is the physical limit: the oracle's bytes at the link rate
	// plus the handshake round trips; LimitBytes the oracle.
	Limit      time.Duration `json:"limit_ns"`
	LimitBytes int64         `json:"limit_bytes"`
	// DedupBytes is the scenario's dedup oracle (Scenario.DedupOracle),
	// when known.
	DedupBytes int64 `json:"dedup_oracle_bytes,omitempty"`
	// IndexMS and RunMS are ntc push's own measures: from its start to the
	// end of indexing, and to the receiver's acknowledgement (Wall adds
	// starting and ending the process).
	IndexMS int64 `json:"ntc_index_ms,omitempty"`
	RunMS   int64 `json:"ntc_run_ms,omitempty"`
	// DataBytes is the chunk data ntc sent (compressed, QUIC and
	// retransmissions not included), LostBytes what QUIC declared lost,
	// Compressed the chunk bytes compressed at each zstd level and
	// Grouped the chunks compressed together with others.
	DataBytes  int64            `json:"ntc_data_bytes,omitempty"`
	LostBytes  int64            `json:"ntc_lost_bytes,omitempty"`
	Compressed map[string]int64 `json:"ntc_compressed,omitempty"`
	Grouped    int              `json:"ntc_grouped,omitempty"`
	// ReceiverLog holds the lines of the receiver's log that time its part:
	// the rounds of chunks, and the commit (store synced, committed, images
	// written).
	ReceiverLog []string `json:"ntc_receiver_log,omitempty"`
	// Note says what else a reader must know about this case (how QEMU's
	// migration ended, for one).
	Note string `json:"note,omitempty"`
	Err  string `json:"error,omitempty"`
}

// handshakeRTTs is what any tool needs before data flows: connection and
// protocol handshakes (QUIC 1-RTT + offer/want; TCP + rsync's greeting).
const handshakeRTTs = 2

// Run runs every tool on every scenario over every link.
func Run(ctx context.Context, cfg Config) ([]Case, error) {
	var out []Case
	for _, sc := range cfg.Scenarios {
		for _, p := range cfg.Profiles {
			l, err := link.Up(ctx, p)
			if err != nil {
				return out, fmt.Errorf("link %s: %w", p.Name, err)
			}
			for _, tool := range cfg.Tools {
				if !applies(tool, sc) {
					continue
				}
				switch {
				case cfg.Logger != nil:
					cfg.Logger.Info("case", "scenario", sc.Name, "link", p.Name, "tool", tool)
				case cfg.Progress != nil:
					cfg.Progress("%s over %s: %s", sc.Name, p.Name, tool)
				}
				c, err := runCase(ctx, cfg, l, sc, tool)
				if err != nil {
					if ctx.Err() != nil {
						l.Close()
						return out, ctx.Err()
					}
					c.Err = err.Error()
				}
				out = append(out, c)
			}
			if err := l.Close(); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

func limitOf(sc *Scenario, p link.Profile) time.Duration {
	d := time.Duration(handshakeRTTs) * p.RTT
	if p.Rate > 0 {
		d += time.Duration(float64(sc.Oracle) * 8 / float64(p.Rate) * float64(time.Second))
	}
	return d
}

func runCase(ctx context.Context, cfg Config, l *link.Link, sc *Scenario, tool string) (c Case, err error) {
	p := l.Profile()
	c = Case{Scenario: sc.Name, Profile: p.Name, Tool: tool, Limit: limitOf(sc, p), LimitBytes: sc.Oracle, DedupBytes: sc.DedupOracle}
	dir, err := os.MkdirTemp(cfg.Dir, "case-")
	if err != nil {
		return c, err
	}
	defer os.RemoveAll(dir)
	before := l.Stats()
	if cfg.TraceDir != "" {
		l.StartTrace()
		defer func() {
			if werr := writeTrace(cfg.TraceDir, c, l.StopTrace()); werr != nil && err == nil {
				err = werr
			}
		}()
	}
	switch tool {
	case ToolNTC, ToolNTCChanged:
		err = runNTC(ctx, cfg, l, sc, dir, tool == ToolNTCChanged, &c)
	case ToolRsyncZ, ToolRsync, ToolFullZstd:
		err = runRsync(ctx, l, sc, dir, tool, &c)
	case ToolMigrate:
		err = runMigrate(ctx, l, sc, dir, &c)
	case ToolHandoff:
		err = runHandoff(ctx, cfg.Bin, l, sc, dir, &c)
	default:
		err = fmt.Errorf("unknown tool %q", tool)
	}
	after := l.Stats()
	c.WireBytes = after.AB.Bytes - before.AB.Bytes + after.BA.Bytes - before.BA.Bytes
	return c, err
}

// runNTC seeds a receiver's store with the old version over loopback, then
// serves it inside B and pushes the new version from A across the link. An
// image scenario pushes the image file (with --changed, listing the
// writes); a VM scenario pushes its checkpoints: 'ntc push --checkpoint
// REPO --seq N', as a user would after 'ntc checkpoint'.
func runNTC(ctx context.Context, cfg Config, l *link.Link, sc *Scenario, dir string, changed bool, c *Case) error {
	var seedArgs, args []string
	next := func() error { return nil } // turns the old version into the new
	if st := sc.VM; st != nil {
		ck := func(seq int) []string {
			return []string{"--checkpoint", st.Repo, "--seq", strconv.Itoa(seq), "--name", sc.Name}
		}
		seedArgs, args = ck(st.Seq1), ck(st.Seq2)
	} else {
		img := filepath.Join(dir, imageName)
		if err := copyFile(sc.Old, img); err != nil {
			return err
		}
		next = func() error { return copyFile(sc.New, img) }
		seedArgs, args = []string{img}, []string{img}
		if changed {
			if sc.Changed == nil {
				return errors.New("the scenario does not know its changed ranges")
			}
			args = append(args, "--changed", Ranges(sc.Changed))
		}
	}
	office, err := NewNode(ctx, cfg.Bin, filepath.Join(dir, "office"))
	if err != nil {
		return err
	}
	home, err := NewNode(ctx, cfg.Bin, filepath.Join(dir, "home"))
	if err != nil {
		return err
	}
	store := filepath.Join(dir, "store")
	seed, err := home.Serve(ctx, "127.0.0.1:0", store, office.ID)
	if err != nil {
		return err
	}
	_, err = office.Push(ctx, seed.Addr, home.ID, seedArgs...)
	seed.Stop()
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	if err := next(); err != nil {
		return err
	}
	b := l.B()
	srv, err := home.Serve(ctx, b.Addr.String()+":7400", store, office.ID, b.Wrap()...)
	if err != nil {
		return err
	}
	settle()
	l.RestartTrace()
	res, err := office.PushVia(ctx, l.A().Wrap(), srv.Addr, home.ID, append(args, cfg.PushArgs...)...)
	rss, cpu := srv.StopUsage()
	for _, line := range strings.Split(srv.Log(), "\n") {
		if strings.Contains(line, `msg="round received"`) || strings.Contains(line, "msg=committed ") {
			c.ReceiverLog = append(c.ReceiverLog, line)
		}
	}
	if err != nil {
		return err
	}
	c.Wall, c.CPUSender, c.MemSender = res.Wall, res.CPU, res.MaxRSS
	c.CPUReceiver, c.MemReceiver = cpu, rss
	c.IndexMS, c.RunMS = res.IndexMS, res.DurationMS
	c.DataBytes, c.LostBytes, c.Compressed, c.Grouped = res.DataBytes, res.BytesLost, res.Compressed, res.Grouped
	return nil
}

// runRsync puts the old versions of the scenario's files where an rsync
// daemon inside B serves them, and runs the rsync client inside A on the
// new versions.
func runRsync(ctx context.Context, l *link.Link, sc *Scenario, dir, tool string, c *Case) error {
	dest := filepath.Join(dir, "dest")
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	// The source is the directory src/: -r sends what is in it.
	opts := []string{"-r", "--no-whole-file", "--ignore-times"}
	switch tool {
	case ToolRsyncZ:
		opts = append(opts, "-z")
	case ToolFullZstd:
		opts = []string{"-r", "--whole-file", "-z", "--compress-choice=zstd"}
	}
	for _, f := range sc.Files {
		// rsync only reads its source: a link will do.
		if err := linkOrCopy(f.New, filepath.Join(src, f.Name)); err != nil {
			return err
		}
		if tool != ToolFullZstd {
			if err := copyFile(f.Old, filepath.Join(dest, f.Name)); err != nil {
				return err
			}
		}
	}
	b := l.B()
	d, err := StartRsync(ctx, dir, dest, b.Addr.String(), 873, b.Wrap()...)
	if err != nil {
		return err
	}
	var res *RsyncResult
	settle()
	l.RestartTrace()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err = RunRsync(ctx, src+"/", b.Addr.String(), 873, opts, l.A().Wrap()...)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond) // the daemon is starting
	}
	rss, cpu := d.StopUsage()
	if err != nil {
		return err
	}
	c.Wall, c.CPUSender, c.MemSender = res.Wall, res.CPU, res.MaxRSS
	c.CPUReceiver, c.MemReceiver = cpu, rss
	return nil
}

// linkOrCopy hard-links src as dst, or copies it where that fails.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copyFile(src, dst)
}

// writeTrace writes the packets of case c to dir.
func writeTrace(dir string, c Case, pkts []link.Packet) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	name := strings.NewReplacer(" ", "", "+", "-").Replace(fmt.Sprintf("trace-%s-%s-%s.tsv", c.Scenario, c.Profile, c.Tool))
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	if err := link.WriteTrace(bw, pkts); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// settle writes the machine's dirty pages out (sync(2)) before a measured
// run, so that a tool that makes its writes durable (ntc fsyncs what it
// received before acknowledging) does not wait for the setup's copies of
// the old version too, while one that does not (rsync) leaves them to the
// kernel.
func settle() { syscall.Sync() }
