package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/internal/atomicfile"
	"github.com/ntc-project/ntc/replicate"
	"github.com/ntc-project/ntc/repo"
	ntcsync "github.com/ntc-project/ntc/sync"
)

type syncOptions struct {
	to      string
	handoff bool
	force   bool
}

func newSyncCommand(g *globals) *cobra.Command {
	var o syncOptions
	cmd := &cobra.Command{
		Use:   "sync VM --to PEER [--handoff]",
		Short: "Bring a peer's copy of a VM up to date, or hand the VM over to it",
		Long: `Sync takes a live checkpoint of VM, a guest named in the configuration, into
this node's repository and pushes it to PEER, a peer named there: only what
PEER lacks travels, as a delta against the newest version both hold, whichever
of them made it. It is the one command of the daily round trip:

  office$ ntc sync web --to home --handoff     in the evening
  home$   ntc sync web --to office --handoff   in the morning

With --handoff the VM moves: the guest is paused for good for the checkpoint
(nothing it does after that instant is lost), the version is pushed, PEER is
asked to resume it (its 'ntc serve' must allow this node: --resume-allow), and
once the copy runs there the original QEMU here is stopped: a libvirt domain
by libvirt (virsh destroy), so that a persistent one stays defined, shut off.
PEER resumes the copy as a plain QEMU, or with resume.libvirt in its
configuration as a libvirt domain named after VM. If the push or the
resume fails, the original goes on running here: there is never a moment
without a copy that can run, and never two running. Run it again after a
failure; it starts over from a new checkpoint.

Without --handoff the guest runs on (paused for milliseconds) and PEER's copy
is brought up to date: a way to carry the day's work before the hand-off, or
beside 'ntc replicate'. A checkpoint 'ntc replicate' is taking of the same VM is
waited for: QEMU serves one QMP client at a time.

The configuration names the VMs and peers (configs/ntc-pair.example.yaml):

  repo: /srv/ntc                 this node's repository (also 'ntc serve --store')
  vms:
    web: {qmp: /run/web/qmp.sock}      or {domain: web} for a libvirt guest
  peers:
    home: {addr: home.example:7400, id: HOME-ID}

Progress and a one-line summary on a terminal; --json prints the summary as
JSON.`,
		Example: `  ntc sync web --to home                 bring home's copy up to date
  ntc sync web --to home --handoff       move the running VM home
  ntc sync web --to home --handoff --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.to = g.v.GetString("sync.to")
			return runSync(cmd.Context(), g, o, args[0])
		},
	}
	f := cmd.Flags()
	f.String("to", "", "the peer to sync with, by its name in the configuration (peers.NAME)")
	f.BoolVar(&o.handoff, "handoff", false, "move the VM: pause it for good, push, resume it at the peer, stop it here")
	f.BoolVar(&o.force, "force", false, "make the version current at the peer even if its copy ran on apart from this one")
	f.String("repo", "", "this node's repository (default: the configuration's repo, or $NTC_HOME/repo)")
	g.bind(cmd, "sync.to", "to")
	g.bind(cmd, "repo", "repo")
	return cmd
}

// syncJSON is sync's summary.
type syncJSON struct {
	VM   string `json:"vm"`
	Peer string `json:"peer"`
	// Seq is the checkpoint's number here, Digest its identity everywhere.
	Seq    int         `json:"seq"`
	Digest repo.Digest `json:"digest"`
	Base   repo.Digest `json:"base"`
	// GuestPauseMS is the checkpoint's pause; with --handoff the guest
	// stays paused and DowntimeMS runs from its pause to the copy running
	// at the peer.
	GuestPauseMS float64 `json:"guest_pause_ms"`
	DowntimeMS   float64 `json:"downtime_ms,omitempty"`
	BytesSent    uint64  `json:"bytes_sent"`
	ChunksSent   int     `json:"chunks_sent"`
	Handoff      bool    `json:"handoff"`
	// Resumed says where the copy runs at the peer (with --handoff).
	Resumed    *ntcsync.Resumed `json:"resumed,omitempty"`
	DurationMS float64          `json:"duration_ms"`
}

func runSync(ctx context.Context, g *globals, o syncOptions, vm string) error {
	t0 := time.Now()
	if o.to == "" {
		return usagef("--to PEER is required: a peer named in the configuration (peers.NAME)")
	}
	guest, err := g.vmNamed(ctx, vm)
	if err != nil {
		return err
	}
	p, err := g.peerNamed(o.to)
	if err != nil {
		return err
	}
	guest.out = g.repoDir()
	cfg, err := guest.config(g)
	if err != nil {
		return err
	}
	// As push: its tuning from the configuration, the last session resumed.
	s, err := g.newSender(p, cfg.Dir)
	if err != nil {
		return err
	}
	s.Force = o.force
	cfg.Node, cfg.Final = s.Node, o.handoff
	say := func(format string, a ...any) {
		if !g.json && isTerminal(g.stderr) {
			fmt.Fprintf(g.stderr, format+"\n", a...)
		}
	}

	pending := pendingPath(cfg.Dir, vm)
	// A failure of the hand-off leaves the original running here.
	undo := func(err error) error {
		if !o.handoff {
			return err
		}
		os.Remove(pending)
		if cerr := capture.Continue(context.WithoutCancel(ctx), cfg); cerr != nil {
			how := "QMP 'cont'"
			if cfg.Domain != "" {
				how = "virsh resume " + cfg.Domain
			}
			return fmt.Errorf("%w; and resuming the original failed: %v (resume it with %s)", err, cerr, how)
		}
		return fmt.Errorf("%w; the original runs on here", err)
	}
	if ph, ok := readPending(pending); ok && o.handoff && ph.Peer == p.ID.String() {
		// An earlier run pushed this version and asked for the resume,
		// then stopped (killed?): the original waits here, paused.
		say("finishing the hand-off of checkpoint %d begun at %s", ph.Seq, ph.Paused.Format(time.TimeOnly))
		out := syncJSON{VM: vm, Peer: p.Name, Seq: ph.Seq, Digest: ph.Digest, Handoff: true,
			Base: ph.Base, BytesSent: ph.BytesSent, ChunksSent: ph.ChunksSent}
		err := finishHandoff(ctx, g, s, cfg, p, &out, ph.Paused)
		if err == nil {
			return printSync(g, out, t0)
		}
		if !errors.Is(err, ntcsync.ErrNotCurrent) {
			return undo(err)
		}
		os.Remove(pending) // the peer moved on: start over
	}

	say("checkpointing %s%s", vm, map[bool]string{true: " (paused for the hand-off)", false: ""}[o.handoff])
	res, err := checkpointWaiting(ctx, cfg)
	if err != nil {
		return err
	}
	out := syncJSON{VM: vm, Peer: p.Name, Seq: res.Manifest.Seq, Digest: res.Version.Digest, Handoff: o.handoff,
		GuestPauseMS: res.Stats.GuestPauseMS}

	say("pushing checkpoint %d to %s", out.Seq, p.Name)
	bar := g.newProgress("sending", 0)
	s.Progress, s.Wanted = bar.Add, bar.AddTotal
	pr, _, err := replicate.PushCheckpoint(ctx, s, p.ID, vm, res.Manifest.Seq, s.Dial)
	bar.Done()
	if err != nil {
		return undo(fmt.Errorf("push %s to %s: %w", vm, p.Name, err))
	}
	out.Base, out.BytesSent, out.ChunksSent = pr.Base, pr.BytesUp+pr.BytesDown, pr.ChunksSent

	if o.handoff {
		ph := pendingHandoff{Peer: p.ID.String(), Digest: out.Digest, Seq: out.Seq, Paused: res.Instant,
			Base: out.Base, BytesSent: out.BytesSent, ChunksSent: out.ChunksSent}
		if err := writePending(pending, ph); err != nil {
			return undo(err)
		}
		say("asking %s to resume it", p.Name)
		if err := finishHandoff(ctx, g, s, cfg, p, &out, res.Instant); err != nil {
			return undo(err)
		}
	}
	return printSync(g, out, t0)
}

// finishHandoff asks the peer to resume version out.Digest, then stops the
// original here and records that the peer runs the set.
func finishHandoff(ctx context.Context, g *globals, s *ntcsync.Sender, cfg capture.Config, p peer, out *syncJSON, paused time.Time) error {
	crashPoint("before-resume")
	conn, err := s.Dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	rr, err := s.RequestResume(ctx, conn, cfg.Set, out.Digest)
	if errors.Is(err, ntcsync.ErrResumeRefused) {
		err = fmt.Errorf("%w: on %s, allow this node: ntc serve ... --resume-allow %s (or serve.resume-allow)", err, p.Name, s.Node)
	}
	if err != nil {
		return fmt.Errorf("resume %s at %s: %w", cfg.Set, p.Name, err)
	}
	out.Resumed = rr
	out.DowntimeMS = ms(time.Since(paused))
	crashPoint("before-quit")
	if err := capture.Quit(ctx, cfg); err != nil {
		how := "QMP quit"
		if cfg.Domain != "" {
			how = "virsh destroy " + cfg.Domain
		}
		return fmt.Errorf("%s runs at %s now, but stopping the original here failed: %w; stop it yourself (%s): it is paused", cfg.Set, p.Name, err, how)
	}
	if work, ok := g.resumedHere(cfg); ok {
		// A copy resumed here: its work directory may go when the VM
		// comes back (serve's resumer).
		if err := os.WriteFile(filepath.Join(work, handedOffMark), []byte(out.Digest.String()+"\n"), 0o600); err != nil {
			return err
		}
	}
	nodes, err := repo.Open(cfg.Dir)
	if err == nil {
		err = nodes.SetRunner(ctx, cfg.Set, p.ID.String(), out.Digest)
	}
	if err != nil {
		return fmt.Errorf("%s runs at %s now and the original is stopped, but recording it failed: %w", cfg.Set, p.Name, err)
	}
	return os.Remove(pendingPath(cfg.Dir, cfg.Set))
}

// resumedHere returns the work directory of the copy cfg names, if it is
// one serve's resumer started here (copyWorkDir): a QEMU whose QMP socket
// is there, or a libvirt domain named after the set with its domain XML
// there.
func (g *globals) resumedHere(cfg capture.Config) (string, bool) {
	work := g.copyWorkDir(cfg.Set)
	if cfg.Domain != "" {
		return work, cfg.Domain == cfg.Set && g.v.GetBool("resume.libvirt") && fileExists(filepath.Join(work, libvirtDomainXML))
	}
	return work, cfg.QMP != "" && filepath.Dir(cfg.QMP) == work
}

// libvirtDomainXML is the domain XML in a libvirt copy's work directory
// (resume.StartLibvirt writes it).
const libvirtDomainXML = "domain.xml"

// handedOffMark, in a resumed copy's work directory, says that the copy
// was handed to a peer with its final checkpoint: nothing in the directory
// is needed any more.
const handedOffMark = "handed-off"

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// crashPoint kills this process (SIGKILL, as a crash or kill -9 would) at
// step of a hand-off when NTC_TEST_CRASH_AT names it: how the tests show
// that a hand-off run again after any crash finishes it.
func crashPoint(step string) {
	if os.Getenv("NTC_TEST_CRASH_AT") == step {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
}

// pendingHandoff is a hand-off between its push and the original's stop:
// DIR/sets/SET/handoff.json while the original waits, paused.
type pendingHandoff struct {
	Peer   string      `json:"peer"`
	Digest repo.Digest `json:"digest"`
	Seq    int         `json:"seq"`
	Paused time.Time   `json:"paused"`
	// What the push cost, for the summary of the run that finishes it.
	Base       repo.Digest `json:"base"`
	BytesSent  uint64      `json:"bytes_sent"`
	ChunksSent int         `json:"chunks_sent"`
}

func pendingPath(dir, set string) string { return filepath.Join(dir, "sets", set, "handoff.json") }

func readPending(path string) (pendingHandoff, bool) {
	var ph pendingHandoff
	b, err := os.ReadFile(path)
	return ph, err == nil && json.Unmarshal(b, &ph) == nil && !ph.Digest.IsZero()
}

func writePending(path string, ph pendingHandoff) error {
	b, err := json.Marshal(ph)
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(path, 0o600, b)
}

func printSync(g *globals, out syncJSON, t0 time.Time) error {
	out.DurationMS = ms(time.Since(t0))
	if g.json {
		return writeJSON(g.stdout, out)
	}
	what := "up to date"
	if out.Handoff {
		what = fmt.Sprintf("running there %.2f s after the guest paused here (%s); stopped here", out.DowntimeMS/1000, out.Resumed.Detail)
	} else {
		what += fmt.Sprintf(" (guest paused %.1f ms)", out.GuestPauseMS)
	}
	base := "no version in common"
	if !out.Base.IsZero() {
		base = "against " + out.Base.Short()
	}
	fmt.Fprintf(g.stdout, "%s -> %s: checkpoint %d (%s), %s on the wire %s; %s\n",
		out.VM, out.Peer, out.Seq, out.Digest.Short(), humanBytes(int64(out.BytesSent)), base, what)
	return nil
}

// checkpointWaiting takes the checkpoint, waiting while another process
// (ntc replicate) takes one of the same VM.
func checkpointWaiting(ctx context.Context, cfg capture.Config) (*capture.Result, error) {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		res, err := capture.Checkpoint(ctx, cfg)
		if !errors.Is(err, capture.ErrBusy) {
			return res, err
		}
		select {
		case <-wctx.Done():
			return nil, err
		case <-time.After(200 * time.Millisecond):
		}
	}
}
