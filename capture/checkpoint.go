package capture

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/ntc-project/ntc/capture/migstream"
	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"

	"github.com/ntc-project/ntc/qemu"
)

// Config says what to checkpoint and where.
type Config struct {
	// QMP is the path of the QEMU's QMP unix socket.
	QMP string
	// Domain names a libvirt domain to checkpoint instead (not both), at
	// libvirt connection URI Connect (default qemu:///system): see DialDomain.
	Domain, Connect string
	// Dir is the node repository (package repo; created if needed) and
	// Set the set whose next version the checkpoint becomes (empty:
	// DefaultSet).
	Dir, Set string
	// Node names this node in the versions it makes (its transport ID,
	// or a host name).
	Node string
	// OverlayDir is where new disk overlays are created; empty: next to
	// each disk's active layer. The running guest writes to the newest
	// overlay, so it must outlive the repository: keep it beside the disk.
	OverlayDir string
	// Params cut disks and device state; zero: chunk.DefaultCDC().
	Params chunk.Params
	// Workers bound hashing and storing; 0: GOMAXPROCS.
	Workers int
	// RAMBuffer bounds the RAM pages held in memory while the store
	// catches up with the stream; 0: DefaultRAMBuffer.
	RAMBuffer int64
	// Method is how RAM is captured; zero: MethodAuto.
	Method Method
	// Downtime is the final pause the precopy method aims at (QEMU's
	// downtime-limit); 0: 20 ms. ConvergeStep: if the migration has not
	// converged after this long (0: 2 s), the allowed pause doubles, up to
	// 2 s; ConvergeTimeout (0: 2 min) gives up.
	Downtime, ConvergeStep, ConvergeTimeout time.Duration
	// Dial tunes the QMP connection.
	Dial qemu.DialOptions
	// PauseTimeout bounds how long the guest may stay paused before ntc
	// gives up, cancels the snapshot and resumes it; 0: 30 s.
	PauseTimeout time.Duration
	// NoCommit keeps the overlays of earlier checkpoints instead of merging
	// them into the disk's base image after this one.
	NoCommit bool
	// Final takes the guest's last checkpoint here, for a hand-off: the
	// guest is paused before anything is captured and stays paused after
	// (RAM is sent by a migration of the paused guest), so that nothing it
	// does after the checkpoint's instant is lost. If the checkpoint fails
	// the guest is resumed; if what follows fails (the push), Continue
	// resumes it.
	Final bool
	// Logger, if set, gets the checkpoint's steps (debug), what it did
	// besides checkpointing (info: a leftover removed, a fallback taken) and
	// what went wrong without failing it (warn).
	Logger *slog.Logger

	// Test hooks: afterStop runs once the guest is paused, afterMigrate
	// once migrate was accepted; an error fails the checkpoint there.
	afterStop, afterMigrate func(*qemu.Session) error
}

// Result is a complete checkpoint.
type Result struct {
	Manifest *Manifest
	// Version is the checkpoint as the node repository holds it.
	Version *repo.Version
	Stats   Stats
	// Instant is when the guest was paused for the checkpoint (QEMU's STOP
	// event): the moment its disks and RAM are of.
	Instant time.Time
}

// Method is how a checkpoint captures RAM and device state.
type Method string

const (
	// MethodPrecopy runs a live (precopy) migration with
	// pause-before-switchover: RAM is sent while the guest runs; QEMU
	// pauses the guest for the last dirty pages and the device state, and
	// the disks are snapshotted in that pause. The pause is QEMU's
	// downtime plus two QMP round trips. Under TCG, QEMU before 9.0 can
	// miss guest writes in a precopy migration (see precopyLosesWrites):
	// the checkpoint's RAM is then not the guest's and may not restore.
	MethodPrecopy Method = "precopy"
	// MethodBackground runs a background snapshot (QEMU 6.0+): ntc pauses
	// the guest, snapshots the disks and starts the snapshot; QEMU
	// write-protects RAM and resumes the guest itself. On QEMU 7.2 the
	// pause includes the snapshot's setup, which touches and
	// write-protects every page of guest RAM (see MethodAuto).
	MethodBackground Method = "background-snapshot"
	// MethodAuto (the default) takes a background snapshot when guest RAM
	// is on huge pages, where QEMU 7.2's setup inside the pause touches
	// and write-protects one page per 2 MiB (the 256 MiB test guest paused
	// 11-14 ms at the median), and precopy otherwise (27-44 ms, against
	// 43 ms for a background snapshot of 4 KiB pages of shared memory and
	// 300-400 ms of private memory; BenchmarkCheckpoint). Under TCG on
	// QEMU before 9.0, whose precopy can miss guest writes, it always
	// takes a background snapshot (precopy only if userfaultfd is
	// unavailable, with a warning in the log).
	MethodAuto Method = "auto"
)

// maxDowntime caps the final pause the precopy method allows when the
// guest does not converge.
const maxDowntime = 2 * time.Second

// fdName is the name under which ntc hands QEMU its end of the stream
// socket (getfd).
const fdName = "ntc-checkpoint"

// Checkpoint takes one checkpoint of the running QEMU at cfg.QMP into the
// repository cfg.Dir: it captures RAM and device state with a migration
// into ntc (cfg.Method) and snapshots the disks in the same guest pause,
// indexes the RAM pages from the stream as they come, indexes the disks as
// of that instant (only the extents written since the previous checkpoint,
// when the repository knows the chain), writes the manifest last, and then
// merges the overlays no longer needed. On any error
// the guest is left running, the disk chains stay valid and no manifest is
// written for the failed checkpoint.
func Checkpoint(ctx context.Context, cfg Config) (*Result, error) {
	start := time.Now()
	if err := cfg.checkTarget(); err != nil {
		return nil, err
	}
	if cfg.Params == (chunk.Params{}) {
		cfg.Params = chunk.DefaultCDC()
	}
	if err := cfg.Params.Validate(); err != nil {
		return nil, err
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.PauseTimeout <= 0 {
		cfg.PauseTimeout = 30 * time.Second
	}
	switch cfg.Method {
	case "":
		cfg.Method = MethodAuto
	case MethodAuto, MethodPrecopy, MethodBackground:
	default:
		return nil, fmt.Errorf("checkpoint: unknown method %q (want %s, %s or %s)", cfg.Method, MethodAuto, MethodPrecopy, MethodBackground)
	}
	if cfg.Downtime <= 0 {
		cfg.Downtime = 20 * time.Millisecond
	}
	if cfg.ConvergeStep <= 0 {
		cfg.ConvergeStep = 2 * time.Second
	}
	if cfg.ConvergeTimeout <= 0 {
		cfg.ConvergeTimeout = 2 * time.Minute
	}
	if cfg.OverlayDir != "" {
		// QEMU resolves paths from its own working directory.
		abs, err := filepath.Abs(cfg.OverlayDir)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: overlay directory: %w", err)
		}
		cfg.OverlayDir = abs
	}
	if cfg.Set == "" {
		cfg.Set = DefaultSet
	}
	// QEMU first: a checkpoint of a guest that is not there creates no
	// repository.
	sess, err := cfg.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	r, err := OpenRepository(ctx, cfg.Dir, cfg.Set)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	head, err := r.nodes.Head(cfg.Set)
	if err != nil {
		return nil, err
	}
	var prev *Manifest
	if head != nil {
		if prev, err = r.manifestOf(head); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrHeadUnreadable, err)
		}
	}
	seq, err := r.nextSeq()
	if err != nil {
		return nil, err
	}
	c := &checkpointer{cfg: cfg, repo: r, sess: sess, head: head, prev: prev, seq: seq, start: start}
	res, err := c.run(ctx)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %d of %s: %w", c.seq, cfg.target(), err)
	}
	return res, nil
}

// checkpointer is one checkpoint in progress.
type checkpointer struct {
	cfg   Config
	repo  *Repository
	sess  *qemu.Session
	head  *repo.Version // the set's current version: the checkpoint's parent
	prev  *Manifest     // head's manifest
	seq   int
	start time.Time
	// indexes are the checkpoint's indexes by manifest name, changes the
	// extents each incremental disk's writes covered, by changes name.
	indexes map[string]*chunk.Index
	changes map[string][]chunk.Range
	// instant is when the guest paused (QEMU's STOP event).
	instant time.Time

	state *state
	plans []*diskPlan

	// Set once the snapshot transaction succeeded: the chain changed and
	// state.json must say so, whatever happens next.
	snapshotted bool
	paused      bool     // the guest was paused for the checkpoint and has not resumed
	steps       []stepAt // ntc's own steps around the pause
	fdHeld      bool     // QEMU holds the stream socket under fdName, unused
	prepared    bool     // the new overlays exist as unattached nodes
	stream      *streamReader
	stats       Stats

	storeMu   sync.Mutex
	storeSeen map[chunk.ID]bool

	// handoffPaused: the guest was paused for a hand-off already (Final).
	handoffPaused bool
}

// diskPlan is what a checkpoint does with one disk.
type diskPlan struct {
	live      liveDisk
	ds        diskState // the disk's state once the snapshot is taken
	frozenTop chainLayer
	newOv     overlay
	// changed lists the frozen overlays holding the writes since the
	// previous checkpoint; nil for a full read.
	changed   []overlay
	prevIndex *chunk.Index
	stale     []string // overlay files of earlier commits, to remove

	index *chunk.Index
	read  int64
	delta int64
	// extents are the ranges written since the previous checkpoint (an
	// incremental read only).
	extents []chunk.Range
}

// log is the checkpoint's log: Config.Logger, or nowhere.
func (c *checkpointer) log() *slog.Logger {
	if c.cfg.Logger != nil {
		return c.cfg.Logger
	}
	return discard
}

var discard = slog.New(slog.DiscardHandler)

func (c *checkpointer) run(ctx context.Context) (res *Result, err error) {
	s := c.sess
	mi, err := queryMigrate(ctx, s)
	if err != nil {
		return nil, err
	}
	if migrationActive(mi.Status) {
		if mi, err = c.cancelAbandoned(ctx, mi); err != nil {
			return nil, err
		}
	}
	if migrationActive(mi.Status) {
		return nil, fmt.Errorf("%w (status %s): %w", ErrMigrating, mi.Status, ErrBusy)
	}
	st, err := queryStatus(ctx, s)
	if err != nil {
		return nil, err
	}
	if !st.Running {
		if !c.cfg.Final || !pausedForHandoff(c.cfg.Dir, c.cfg.Set, s.Peer()) {
			return nil, notRunningError(st)
		}
		c.handoffPaused = true // by an earlier hand-off of this QEMU: take it as it is
	}
	machine, err := describeMachine(ctx, s)
	if err != nil {
		return nil, err
	}
	disks, err := queryDisks(ctx, s)
	if err != nil {
		return nil, err
	}
	if err := c.plan(ctx, disks); err != nil {
		return nil, err
	}
	if c.cfg.Final {
		c.cfg.Method = MethodPrecopy // of a paused guest: nothing to converge
	}
	auto := c.cfg.Method == MethodAuto
	if auto {
		c.cfg.Method = chooseMethod(ctx, s)
		c.log().Debug("method chosen", "method", c.cfg.Method)
	}
	caps, err := setupMigration(ctx, s, c.cfg.Method, c.cfg.Downtime)
	if auto && c.cfg.Method == MethodBackground && errors.Is(err, ErrUnsupported) && s.Err() == nil {
		c.log().Info("taking a precopy checkpoint instead", "err", err)
		c.cfg.Method = MethodPrecopy
		caps, err = setupMigration(ctx, s, c.cfg.Method, c.cfg.Downtime)
	}
	if c.cfg.Method == MethodPrecopy && !c.cfg.Final && precopyLosesWrites(ctx, s) {
		c.log().Warn("QEMU under TCG can miss guest writes in a precopy migration (fixed in QEMU 9.0): "+
			"this checkpoint's RAM may not be the guest's at the instant and may not restore; take background snapshots instead", "qemu", s.Version())
	}
	if caps != nil {
		defer func() {
			if rerr := caps.restore(context.WithoutCancel(ctx), s); rerr != nil && err == nil && s.Err() == nil {
				c.log().Warn("could not restore QEMU's migration settings", "err", rerr)
			}
		}()
	}
	if err != nil {
		return nil, err
	}

	c.indexes, c.changes = map[string]*chunk.Index{}, map[string][]chunk.Range{}

	// From here on every exit resumes a guest ntc paused and records a
	// changed chain.
	defer func() {
		if errors.Is(err, errSimulatedCrash) {
			return // a test playing dead: no cleanup
		}
		if c.paused {
			if rerr := c.recover(ctx); rerr != nil {
				err = fmt.Errorf("%w; and resuming the guest failed: %v", err, rerr)
			}
		}
		if c.prepared && !c.snapshotted {
			c.dropOverlays(ctx, c.plans)
			c.prepared = false
			if serr := c.saveState(false); serr != nil {
				c.log().Warn("could not record the dropped overlays", "err", serr)
			}
		}
		if c.snapshotted && !(err == nil && res != nil) {
			if serr := c.saveState(false); serr != nil {
				err = fmt.Errorf("%w; and recording the new disk overlays failed: %v", err, serr)
			}
		}
	}()
	if err := c.prepareOverlays(ctx); err != nil {
		return nil, err
	}
	stream, err := c.capture(ctx)
	if err != nil {
		return nil, err
	}
	return c.finish(ctx, machine, stream)
}

// errSimulatedCrash, returned by a test hook, makes a checkpoint stop
// where it is without cleaning up, as if ntc had been killed.
var errSimulatedCrash = errors.New("simulated crash")

// cancelAbandoned cancels a migration that an earlier ntc checkpoint of
// this QEMU started and did not finish (it was killed): state.json still
// lists the overlays it prepared. In the precopy method QEMU holds the guest
// paused until the migration goes on or is cancelled; once cancelled, QEMU
// resumes it. It returns the migration status afterwards.
func (c *checkpointer) cancelAbandoned(ctx context.Context, mi migrateInfo) (migrateInfo, error) {
	st, err := c.repo.loadState()
	if err != nil || st == nil || !st.QEMU.Same(c.sess.Peer()) || len(st.Pending) == 0 {
		return mi, err
	}
	c.log().Info("cancelling the migration an interrupted checkpoint left behind", "status", mi.Status)
	if err := c.sess.Run(ctx, "migrate_cancel", nil, nil); err != nil {
		return mi, fmt.Errorf("cancel the migration an interrupted checkpoint left: %w", err)
	}
	if err := waitMigrationIdle(ctx, c.sess, 10*time.Second); err != nil {
		return mi, err
	}
	// QEMU resumes a guest its migration paused right after the cancel.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if st, err := queryStatus(ctx, c.sess); err != nil || st.Running {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return queryMigrate(ctx, c.sess)
}

// plan decides, per disk, between an incremental and a full read, and names
// the new overlays. Nothing changes in QEMU yet.
func (c *checkpointer) plan(ctx context.Context, disks []liveDisk) error {
	st, err := c.repo.loadState()
	if err != nil {
		return err
	}
	peer := c.sess.Peer()
	sameQEMU := st != nil && st.QEMU.Same(peer)
	c.state = &state{QEMU: peer}
	if !sameQEMU {
		st = nil // another QEMU's chains: read everything, touch none of its files
	}
	if st != nil {
		c.dropPending(ctx, st.Pending, disks)
	}
	for _, d := range disks {
		if len(d.Chain) == 0 || d.Chain[0].File == "" {
			return fmt.Errorf("disk %s: QEMU reports no image file: %w", d.Device, ErrUnsupported)
		}
		for _, l := range d.Chain {
			if err := checkLayer(l.File, l.Format, false); err != nil {
				return fmt.Errorf("disk %s: %w", d.Device, err)
			}
		}
		p := &diskPlan{live: d, frozenTop: d.Chain[0]}
		rec := st.disk(d.Name)
		kept, ok := rec.matchChain(d.Chain)
		if ok && c.prev != nil && rec.Seq == c.prev.Seq {
			if pd := c.prev.disk(d.Name); pd != nil {
				if x, err := c.repo.Index(c.prev.Seq, pd.Index); err == nil {
					p.prevIndex = x
				} else {
					c.log().Warn("previous index unreadable: reading the disk in full", "disk", d.Name, "err", err)
				}
			}
		}
		if p.prevIndex != nil {
			p.ds = diskState{Name: d.Name, Device: d.Device, Seq: rec.Seq, Base: rec.Base, Overlays: kept, KeepBase: rec.KeepBase}
			for _, ov := range kept {
				if ov.Created >= rec.Seq {
					p.changed = append(p.changed, ov)
				}
			}
			for _, ov := range rec.Overlays {
				if !containsOverlay(kept, ov.File) {
					p.stale = append(p.stale, ov.File)
				}
			}
		} else {
			top := d.Chain[0]
			p.ds = diskState{Name: d.Name, Device: d.Device, Base: layer{File: top.File, Node: d.Node, Format: top.Format}}
			if rec != nil && len(rec.Overlays) > 0 && rec.Overlays[len(rec.Overlays)-1].File == top.File {
				// The chain is ours but cannot be used incrementally
				// (no matching checkpoint): keep its base and overlays
				// so that they are still committed.
				if kept, ok := rec.matchChainAny(d.Chain); ok {
					p.ds.Base, p.ds.Overlays, p.ds.KeepBase = rec.Base, kept, rec.KeepBase
				}
			}
		}
		dir := c.cfg.OverlayDir
		if dir == "" {
			dir = filepath.Dir(top(d).File)
		}
		ov, err := newOverlayName(dir, p.ds.Base.File, c.seq)
		if err != nil {
			return fmt.Errorf("disk %s: %w", d.Device, err)
		}
		p.newOv = overlay{layer: ov, Created: c.seq}
		c.plans = append(c.plans, p)
	}
	return nil
}

func top(d liveDisk) chainLayer { return d.Chain[0] }

// dropPending closes and removes overlays an earlier run prepared for a
// snapshot that never happened (it died in between), unless a chain uses
// them.
func (c *checkpointer) dropPending(ctx context.Context, pending []layer, disks []liveDisk) {
	for _, ov := range pending {
		inUse := false
		for _, d := range disks {
			for _, l := range d.Chain {
				inUse = inUse || l.File == ov.File
			}
		}
		if !inUse {
			dropOverlay(ctx, c.sess, ov)
			c.log().Info("removed an overlay left over from an interrupted checkpoint", "file", ov.File)
		}
	}
}

func containsOverlay(ovs []overlay, file string) bool {
	for _, o := range ovs {
		if o.File == file {
			return true
		}
	}
	return false
}

// matchChainAny is matchChain without the requirement that changes since
// the recorded checkpoint are still in the chain: for a full read that
// keeps ntc's overlays committable.
func (d *diskState) matchChainAny(live []chainLayer) ([]overlay, bool) {
	cp := *d
	cp.Seq = 1 << 30 // any overlay may have gone
	return cp.matchChain(live)
}

// newOverlayName names a new overlay file in dir, after the disk's base
// image, and checks that dir is writable.
func newOverlayName(dir, base string, seq int) (layer, error) {
	var rnd [4]byte
	rand.Read(rnd[:])
	tag := hex.EncodeToString(rnd[:])
	l := layer{
		File:   filepath.Join(dir, fmt.Sprintf("%s.ntc-%06d-%s.qcow2", filepath.Base(base), seq, tag)),
		Node:   fmt.Sprintf("ntc%d-%s", seq, tag),
		Format: "qcow2",
	}
	probe, err := os.CreateTemp(dir, ".ntc-probe-*")
	if err != nil {
		return l, fmt.Errorf("cannot create the disk overlay next to the disk in %s: %w: %w", dir, ErrOverlayDir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	return l, nil
}

// capture takes the instant (the guest paused, the disks snapshotted, the
// RAM and device state being sent) with the configured method and parses
// the stream into page indexes, returning when QEMU has sent it all. Disk
// indexing starts as soon as the guest runs again.
func (c *checkpointer) capture(ctx context.Context) (*capturedStream, error) {
	s := c.sess
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The stream travels over a socket pair: QEMU gets one end by getfd.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create the stream socket: %w", err)
	}
	qemuEnd := os.NewFile(uintptr(fds[0]), "qemu-stream")
	ourFile := os.NewFile(uintptr(fds[1]), "ntc-stream")
	conn, err := net.FileConn(ourFile)
	ourFile.Close()
	if err != nil {
		qemuEnd.Close()
		return nil, fmt.Errorf("create the stream socket: %w", err)
	}
	defer conn.Close()
	err = s.RunWithFile(ctx, "getfd", map[string]any{"fdname": fdName}, qemuEnd)
	qemuEnd.Close()
	if err != nil {
		return nil, fmt.Errorf("hand QEMU the stream socket: %w", err)
	}
	c.fdHeld = true
	defer func() {
		if c.fdHeld {
			s.Run(context.WithoutCancel(ctx), "closefd", map[string]any{"fdname": fdName}, nil)
		}
	}()

	// Parse the stream as it comes, on its own goroutine.
	rd := &streamReader{conn: conn, drain: c.cfg.Method == MethodBackground}
	sink := newRAMSink(ctx, c.repo.Store(), c.cfg.Workers, c.cfg.RAMBuffer)
	type parsed struct {
		s   *migstream.Stream
		err error
	}
	parseDone := make(chan parsed, 1)
	go func() {
		st, err := migstream.Parse(ctx, rd, sink)
		if ferr := sink.finish(); err == nil {
			err = ferr
		}
		if err != nil && rd.migrating.Load() {
			rd.discardRest()
		}
		conn.Close()
		parseDone <- parsed{st, err}
	}()
	waitParse := func() parsed {
		select {
		case p := <-parseDone:
			return p
		case <-ctx.Done():
			rd.interrupt()
			return <-parseDone
		}
	}
	fail := func(err error) (*capturedStream, error) {
		cancel()
		waitParse()
		return nil, err
	}
	c.stream = rd

	mark := s.EventMark()
	var resumed qemu.Event
	switch {
	case c.cfg.Final:
		resumed, err = c.instantFinal(ctx, mark)
	case c.cfg.Method == MethodPrecopy:
		resumed, err = c.instantPrecopy(ctx, mark)
	default:
		resumed, err = c.instantBackground(ctx, mark)
	}
	if err != nil {
		return fail(err)
	}
	c.paused = false
	c.instant = resumed.Time
	if stop, ok := lastEventBefore(s, mark, "STOP", resumed); ok && resumed.Time.After(stop.Time) {
		c.instant = stop.Time
		c.stats.GuestPauseMS = ms(resumed.Time.Sub(stop.Time))
		c.stats.PauseSteps = pauseSteps(s, mark, stop, resumed, c.steps)
	}
	c.log().Debug("guest resumed", "pause_ms", c.stats.GuestPauseMS, "steps", formatSteps(c.stats.PauseSteps))
	if c.snapshotted {
		if err := c.saveState(false); err != nil {
			return fail(fmt.Errorf("record the new disk overlays: %w", err))
		}
	}

	// Index the disks as of the instant while RAM streams in.
	var dg errgroup.Group
	dctx, dcancel := context.WithCancel(ctx)
	defer dcancel()
	dg.Go(func() error { return c.indexDisks(dctx) })
	failDisks := func(err error) (*capturedStream, error) {
		dcancel()
		dg.Wait()
		return fail(err)
	}

	// Wait for the end of the stream.
	ev, _, err := s.WaitEvent(ctx, mark, func(e qemu.Event) bool {
		return e.Name == "MIGRATION" && migrationOver(e.String("status"))
	})
	if err != nil {
		return failDisks(fmt.Errorf("wait for the migration stream: %w", err))
	}
	if st := ev.String("status"); st != "completed" {
		return failDisks(c.migrationError(ctx, st))
	}
	p := waitParse()
	if p.err != nil {
		return failDisks(fmt.Errorf("read the migration stream: %w", p.err))
	}
	if err := dg.Wait(); err != nil {
		return nil, err
	}
	c.stats.StreamBytes = rd.n.Load()
	c.stats.RAMPagesResent = p.s.Stats.Resent
	return &capturedStream{s: p.s, blocks: sink.blocks, newPages: sink.newIDs()}, nil
}

// PauseStep is a moment of a checkpoint's guest pause: a QMP event
// ("MIGRATION setup") or a step of ntc's ("disks snapshotted"), in ms
// since QEMU's STOP event.
type PauseStep struct {
	Step string  `json:"step"`
	MS   float64 `json:"ms"`
}

// stepAt is one of ntc's steps around the pause and when it ended.
type stepAt struct {
	name string
	at   time.Time
}

func (c *checkpointer) step(name string) {
	c.steps = append(c.steps, stepAt{name, time.Now()})
}

// pauseSteps merges QEMU's events from STOP through resumed (after mark)
// with ntc's steps into one list relative to stop, in time order. QEMU
// stamps events with the host's clock, as ntc's steps are.
func pauseSteps(s *qemu.Session, mark int, stop, resumed qemu.Event, ours []stepAt) []PauseStep {
	rel := func(t time.Time) float64 { return ms(t.Sub(stop.Time)) }
	var out []PauseStep
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.WaitEvent(ctx, mark, func(e qemu.Event) bool {
		name := e.Name
		if st := e.String("status"); st != "" {
			name += " " + st
		}
		if !e.Time.Before(stop.Time) {
			out = append(out, PauseStep{Step: name, MS: rel(e.Time)})
		}
		return e.Name == resumed.Name && e.Time.Equal(resumed.Time)
	})
	for _, st := range ours {
		out = append(out, PauseStep{Step: st.name, MS: rel(st.at)})
	}
	slices.SortStableFunc(out, func(a, b PauseStep) int { return cmp.Compare(a.MS, b.MS) })
	return out
}

func formatSteps(steps []PauseStep) string {
	var b strings.Builder
	for i, st := range steps {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %+.1f", st.Step, st.MS)
	}
	return b.String()
}

// lastEventBefore finds the last event called name after mark and before
// the event end.
func lastEventBefore(s *qemu.Session, mark int, name string, end qemu.Event) (qemu.Event, bool) {
	var found qemu.Event
	ok := false
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.WaitEvent(ctx, mark, func(e qemu.Event) bool {
		if e.Name == end.Name && e.Time.Equal(end.Time) {
			return true
		}
		if e.Name == name {
			found, ok = e, true
		}
		return false
	})
	return found, ok
}

// prepareOverlays creates and opens every disk's new overlay while the
// guest runs. On error, those already prepared are dropped.
func (c *checkpointer) prepareOverlays(ctx context.Context) error {
	if len(c.plans) == 0 {
		return nil
	}
	c.prepared = true // recorded as pending before they exist
	if err := c.saveState(false); err != nil {
		c.prepared = false
		return fmt.Errorf("record the new overlays: %w", err)
	}
	for i, p := range c.plans {
		if err := prepareOverlay(ctx, c.sess, p.newOv.layer, p.frozenTop, p.live.Size); err != nil {
			c.dropOverlays(ctx, c.plans[:i])
			c.prepared = false
			c.saveState(false)
			return fmt.Errorf("disk %s: %w", p.live.Device, err)
		}
	}
	return nil
}

func (c *checkpointer) dropOverlays(ctx context.Context, plans []*diskPlan) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, p := range plans {
		dropOverlay(ctx, c.sess, p.newOv.layer)
	}
}

// snapshotDisks makes every disk's prepared overlay its active layer, in
// one transaction. The guest must be paused.
func (c *checkpointer) snapshotDisks(ctx context.Context) error {
	if len(c.plans) == 0 {
		return nil
	}
	actions := make([]map[string]any, 0, len(c.plans))
	for _, p := range c.plans {
		actions = append(actions, snapshotAction(p.live.Node, p.newOv.Node))
	}
	if err := c.sess.Run(ctx, "transaction", map[string]any{"actions": actions}, nil); err != nil {
		return fmt.Errorf("snapshot the disks: %w", err)
	}
	c.snapshotted = true
	for _, p := range c.plans {
		p.ds.Overlays = append(p.ds.Overlays, p.newOv)
	}
	return nil
}

// instantBackground is the background-snapshot method: stop, snapshot the
// disks, start the snapshot and wait until QEMU resumes the guest itself
// once RAM is write-protected. Never cont: a cont before that would let RAM
// run ahead of the disks. It returns the RESUME event.
func (c *checkpointer) instantBackground(ctx context.Context, mark int) (qemu.Event, error) {
	s := c.sess
	c.log().Debug("pausing the guest")
	c.paused = true // until RESUME: a lost reply may hide a pause
	c.step("stop sent")
	if err := s.Run(ctx, "stop", nil, nil); err != nil {
		return qemu.Event{}, fmt.Errorf("pause the guest: %w", err)
	}
	c.step("stop done")
	if err := c.snapshotAndMigrate(ctx); err != nil {
		return qemu.Event{}, err
	}
	pctx, pcancel := context.WithTimeout(ctx, c.cfg.PauseTimeout)
	defer pcancel()
	ev, _, err := s.WaitEvent(pctx, mark, func(e qemu.Event) bool {
		return e.Name == "RESUME" || (e.Name == "MIGRATION" && migrationOver(e.String("status")))
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return qemu.Event{}, fmt.Errorf("the guest did not resume within %s of the snapshot start; cancelled it", c.cfg.PauseTimeout)
		}
		return qemu.Event{}, fmt.Errorf("wait for the guest to resume: %w", err)
	}
	if ev.Name != "RESUME" {
		return qemu.Event{}, c.migrationError(ctx, ev.String("status"))
	}
	return ev, nil
}

// snapshotAndMigrate, the guest paused, snapshots the disks and starts the
// migration into ntc (a background snapshot, or a migration of the paused
// guest).
func (c *checkpointer) snapshotAndMigrate(ctx context.Context) error {
	s := c.sess
	if c.cfg.afterStop != nil {
		if err := c.cfg.afterStop(s); err != nil {
			return err
		}
	}
	if err := c.snapshotDisks(ctx); err != nil {
		return err
	}
	c.step("disks snapshotted")
	c.stream.migrating.Store(true)
	if err := s.Run(ctx, "migrate", map[string]any{"uri": "fd:" + fdName}, nil); err != nil {
		return fmt.Errorf("start the migration into ntc: %w", err)
	}
	c.step("migrate accepted")
	c.fdHeld = false // QEMU owns it now
	if c.cfg.afterMigrate != nil {
		return c.cfg.afterMigrate(s)
	}
	return nil
}

// instantFinal pauses the guest for good (Config.Final): stop, snapshot the
// disks, then a migration of the paused guest sends RAM and the device
// state and leaves it paused. It returns the STOP event: the instant.
func (c *checkpointer) instantFinal(ctx context.Context, mark int) (qemu.Event, error) {
	s := c.sess
	c.paused = true
	stop := qemu.Event{Name: "STOP", Time: time.Now()}
	if c.handoffPaused {
		c.log().Debug("the guest is paused for a hand-off already")
	} else {
		c.log().Debug("pausing the guest for the hand-off")
		if err := markPaused(c.cfg.Dir, c.cfg.Set, s.Peer()); err != nil {
			return qemu.Event{}, err
		}
		if err := s.Run(ctx, "stop", nil, nil); err != nil {
			return qemu.Event{}, fmt.Errorf("pause the guest: %w", err)
		}
		pctx, pcancel := context.WithTimeout(ctx, c.cfg.PauseTimeout)
		defer pcancel()
		var err error
		if stop, _, err = s.WaitEvent(pctx, mark, func(e qemu.Event) bool { return e.Name == "STOP" }); err != nil {
			return qemu.Event{}, fmt.Errorf("wait for the guest to pause: %w", err)
		}
	}
	c.step("stop done")
	if err := c.snapshotAndMigrate(ctx); err != nil {
		return qemu.Event{}, err
	}
	for {
		ev, _, err := s.WaitEvent(ctx, mark, func(e qemu.Event) bool {
			return e.Name == "MIGRATION" && (e.String("status") == "pre-switchover" || migrationOver(e.String("status")))
		})
		if err != nil {
			return qemu.Event{}, fmt.Errorf("wait for the migration: %w", err)
		}
		switch st := ev.String("status"); st {
		case "pre-switchover":
			mark = s.EventMark()
			if err := s.Run(ctx, "migrate-continue", map[string]any{"state": "pre-switchover"}, nil); err != nil {
				return qemu.Event{}, fmt.Errorf("finish the migration: %w", err)
			}
			continue
		case "completed":
			return stop, nil
		default:
			return qemu.Event{}, c.migrationError(ctx, st)
		}
	}
}

// Continue resumes a guest that a Final checkpoint left paused, when the
// hand-off it was for did not happen.
func Continue(ctx context.Context, cfg Config) error {
	return endHandoff(ctx, cfg, func(s *qemu.Session) error { return cont(ctx, s) })
}

// endHandoff does what ends a hand-off's pause to the guest's QEMU, then
// forgets the pause.
func endHandoff(ctx context.Context, cfg Config, do func(*qemu.Session) error) error {
	if err := cfg.checkTarget(); err != nil {
		return err
	}
	s, err := cfg.dial(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := do(s); err != nil {
		return err
	}
	return clearPaused(cfg.Dir, cmp.Or(cfg.Set, DefaultSet))
}

// instantPrecopy is the precopy method: a live migration sends RAM while
// the guest runs; with pause-before-switchover QEMU stops the guest when
// little is left and waits. Then the disks are snapshotted, QEMU sends the
// rest and the device state, and ntc resumes the guest. If the guest dirties
// memory too fast to converge, the allowed final pause is doubled every
// ConvergeStep. It returns the RESUME event.
func (c *checkpointer) instantPrecopy(ctx context.Context, mark int) (qemu.Event, error) {
	s := c.sess
	c.stream.migrating.Store(true)
	if err := s.Run(ctx, "migrate", map[string]any{"uri": "fd:" + fdName}, nil); err != nil {
		return qemu.Event{}, fmt.Errorf("start the migration: %w", err)
	}
	c.fdHeld = false
	if c.cfg.afterMigrate != nil {
		if err := c.cfg.afterMigrate(s); err != nil {
			return qemu.Event{}, err
		}
	}
	downtime := c.cfg.Downtime
	deadline := time.Now().Add(c.cfg.ConvergeTimeout)
	var ev qemu.Event
	for {
		wctx, wcancel := context.WithTimeout(ctx, c.cfg.ConvergeStep)
		var err error
		ev, _, err = s.WaitEvent(wctx, mark, func(e qemu.Event) bool {
			return e.Name == "MIGRATION" && (e.String("status") == "pre-switchover" || migrationOver(e.String("status")))
		})
		wcancel()
		if err == nil {
			break
		}
		if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return qemu.Event{}, fmt.Errorf("wait for the migration to converge: %w", err)
		}
		if time.Now().After(deadline) {
			return qemu.Event{}, fmt.Errorf("the guest dirties its memory faster than ntc stores it: no switchover within %s: %w", c.cfg.ConvergeTimeout, ErrNotConverging)
		}
		downtime = min(2*downtime, maxDowntime)
		c.log().Info("migration not converging: allowing a longer final pause", "downtime", downtime)
		if err := s.Run(ctx, "migrate-set-parameters", map[string]any{"downtime-limit": downtime.Milliseconds()}, nil); err != nil {
			return qemu.Event{}, err
		}
	}
	if st := ev.String("status"); st != "pre-switchover" {
		return qemu.Event{}, c.migrationError(ctx, st)
	}
	// QEMU has paused the guest.
	c.paused = true
	t0 := time.Now()
	c.step("pre-switchover seen")

	if c.cfg.afterStop != nil {
		if err := c.cfg.afterStop(s); err != nil {
			return qemu.Event{}, err
		}
	}
	if err := c.snapshotDisks(ctx); err != nil {
		return qemu.Event{}, err
	}
	t1 := time.Now()
	c.step("disks snapshotted")
	if err := s.Run(ctx, "migrate-continue", map[string]any{"state": "pre-switchover"}, nil); err != nil {
		return qemu.Event{}, fmt.Errorf("finish the migration: %w", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, c.cfg.PauseTimeout)
	defer pcancel()
	ev, _, err := s.WaitEvent(pctx, mark, func(e qemu.Event) bool {
		return e.Name == "MIGRATION" && migrationOver(e.String("status"))
	})
	if err != nil {
		return qemu.Event{}, fmt.Errorf("wait for the migration to finish: %w", err)
	}
	if st := ev.String("status"); st != "completed" {
		return qemu.Event{}, c.migrationError(ctx, st)
	}
	t2 := time.Now()
	c.step("completed seen")
	rmark := s.EventMark()
	if err := cont(ctx, s); err != nil {
		return qemu.Event{}, fmt.Errorf("resume the guest: %w", err)
	}
	c.log().Debug("in the pause", "disk_snapshot", t1.Sub(t0).Round(time.Microsecond),
		"last_pages_and_devices", t2.Sub(t1).Round(time.Microsecond), "cont", time.Since(t2).Round(time.Microsecond))
	ev, _, err = s.WaitEvent(pctx, rmark, func(e qemu.Event) bool { return e.Name == "RESUME" })
	if err != nil {
		return qemu.Event{}, fmt.Errorf("wait for the guest to resume: %w", err)
	}
	return ev, nil
}

type capturedStream struct {
	s        *migstream.Stream
	blocks   []*ramBlock
	newPages map[chunk.ID]struct{} // contents this checkpoint added to the store
}

func migrationOver(status string) bool {
	return status == "completed" || status == "failed" || status == "cancelled"
}

// migrationError explains a failed background snapshot.
func (c *checkpointer) migrationError(ctx context.Context, status string) error {
	msg := fmt.Sprintf("QEMU's background snapshot %s", status)
	if mi, err := queryMigrate(ctx, c.sess); err == nil && mi.ErrorDesc != "" {
		msg += ": " + mi.ErrorDesc
	}
	return errors.New(msg)
}

// recover resumes a guest that ntc paused: it cancels a snapshot still
// running and sends cont. It reconnects if the session broke.
func (c *checkpointer) recover(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	s := c.sess
	if s.Err() != nil {
		ns, err := c.cfg.dial(ctx)
		if err != nil {
			return fmt.Errorf("reconnect to QEMU to resume the guest: %w", err)
		}
		defer ns.Close()
		s = ns
	}
	if mi, err := queryMigrate(ctx, s); err == nil && migrationActive(mi.Status) {
		if err := s.Run(ctx, "migrate_cancel", nil, nil); err != nil {
			return fmt.Errorf("cancel the background snapshot: %w", err)
		}
		if err := waitMigrationIdle(ctx, s, 10*time.Second); err != nil {
			return err
		}
	}
	st, err := queryStatus(ctx, s)
	if err != nil {
		return err
	}
	if !st.Running {
		if err := cont(ctx, s); err != nil {
			return fmt.Errorf("resume the guest (status %s): %w", st.Status, err)
		}
		c.log().Info("resumed the guest after the failed checkpoint")
	}
	c.paused = false
	if c.cfg.Final {
		return clearPaused(c.cfg.Dir, c.cfg.Set)
	}
	return nil
}

// cont resumes the guest. Right after a migration's "completed" event QEMU
// 7.2 is still in finish-migrate for a moment and refuses cont ("Migration
// is not finalized yet"); cont is retried until it has moved on, every
// millisecond or two: the guest is paused meanwhile (a backoff to 50 ms
// added 10-40 ms to the precopy method's pause).
func cont(ctx context.Context, s *qemu.Session) error {
	for delay := 200 * time.Microsecond; ; delay = min(2*delay, 2*time.Millisecond) {
		err := s.Run(ctx, "cont", nil, nil)
		var ce *qemu.CommandError
		if err == nil || !errors.As(err, &ce) || !strings.Contains(ce.Desc, "not finalized") {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-time.After(delay):
		}
	}
}

// saveState records the chains. done: this checkpoint is complete, so the
// chains now continue it.
func (c *checkpointer) saveState(done bool) error {
	st := &state{QEMU: c.state.QEMU}
	for _, p := range c.plans {
		ds := p.ds
		if done {
			ds.Seq = c.seq
		}
		st.Disks = append(st.Disks, ds)
		if c.prepared && !c.snapshotted {
			st.Pending = append(st.Pending, p.newOv.layer)
		}
	}
	c.state = st
	return c.repo.saveState(st)
}

// indexDisks indexes every disk as of the checkpoint, from its frozen
// chain, and stores the new chunks.
func (c *checkpointer) indexDisks(ctx context.Context) error {
	for _, p := range c.plans {
		if err := c.indexDisk(ctx, p); err != nil {
			return fmt.Errorf("index disk %s: %w", p.live.Device, err)
		}
	}
	return nil
}

func (c *checkpointer) indexDisk(ctx context.Context, p *diskPlan) error {
	img, err := OpenChain(ctx, p.frozenTop.File, p.frozenTop.Format)
	if err != nil {
		return err
	}
	defer img.Close()
	opts := chunk.Options{Workers: c.cfg.Workers, Chunk: c.storeChunk(ctx)}
	var changed []chunk.Range
	if p.prevIndex != nil {
		for _, ov := range p.changed {
			ext, err := LayerExtents(ctx, ov.File)
			if err != nil {
				return err
			}
			changed = append(changed, ext...)
		}
		changed = chunk.NormalizeRanges(changed, img.Size())
		p.extents = changed
		for _, r := range changed {
			p.delta += r.Len
		}
		c.log().Debug("reading what changed", "disk", p.live.Name, "bytes", p.delta, "since", c.prev.Seq)
	} else {
		p.delta = img.Size()
		c.log().Debug("reading the disk in full", "disk", p.live.Name, "bytes", img.Size())
	}
	var st chunk.ScanStats
	p.index, st, err = chunk.Update(ctx, img, c.cfg.Params, p.prevIndex, changed, opts)
	if err != nil {
		return err
	}
	p.read = st.BytesRead
	return nil
}

// storeChunk returns a chunk.Options.Chunk callback that stores chunks the
// store lacks, counting them once.
func (c *checkpointer) storeChunk(ctx context.Context) func(chunk.Entry, []byte) error {
	store := c.repo.Store()
	return func(e chunk.Entry, data []byte) error {
		c.storeMu.Lock()
		if c.storeSeen == nil {
			c.storeSeen = map[chunk.ID]bool{}
		}
		seen := c.storeSeen[e.ID]
		c.storeSeen[e.ID] = true
		c.storeMu.Unlock()
		if seen {
			return nil
		}
		has, err := store.Has(ctx, e.ID)
		if err != nil || has {
			return err
		}
		if err := putHashed(ctx, store, e.ID, data); err != nil {
			return err
		}
		c.storeMu.Lock()
		c.stats.DiskChunksNew++
		c.stats.DiskBytesNew += int64(len(data))
		c.storeMu.Unlock()
		return nil
	}
}

// finish writes the indexes, then the manifest, then merges old overlays.
func (c *checkpointer) finish(ctx context.Context, machine Machine, cs *capturedStream) (*Result, error) {
	m := &Manifest{
		Version: ManifestVersion, Seq: c.seq, Created: created(),
		QEMUVersion: c.sess.Version(), QEMUPackage: c.sess.Package(), Machine: machine,
	}
	if c.prev != nil {
		m.Parent = c.prev.Seq
	}
	full, incr := 0, 0
	for _, p := range c.plans {
		mode := "full"
		if p.prevIndex != nil {
			mode = "incremental"
			incr++
		} else {
			full++
		}
		node := machine.driveOf(p.live.Device)
		if node == "" {
			node = p.ds.Base.Node
		}
		d := Disk{
			Name: p.live.Name, Node: node, Device: p.live.Device, File: p.ds.Base.File, Format: p.ds.Base.Format,
			Size: p.index.Size, Index: p.live.Name + ".idx", Mode: mode, BytesChanged: p.delta, BytesRead: p.read,
		}
		c.indexes[d.Index] = p.index
		if p.prevIndex != nil {
			d.Changes = p.live.Name + changesSuffix
			c.changes[d.Changes] = p.extents
		}
		m.Disks = append(m.Disks, d)
		c.stats.DiskBytesRead += p.read
		c.stats.DiskBytesChanged += p.delta
	}
	switch {
	case full > 0 && incr > 0:
		c.stats.DiskMode = "mixed"
	case incr > 0:
		c.stats.DiskMode = "incremental"
	default:
		c.stats.DiskMode = "full"
	}

	used := map[string]bool{}
	for _, b := range cs.blocks {
		x := b.idx.Index()
		name := imageName(used, "ram-", b.name)
		r := RAM{Name: b.name, Index: name + ".idx", Size: b.length}
		c.indexes[r.Index] = x
		st := x.Stats()
		for _, e := range x.Entries {
			if _, ok := cs.newPages[e.ID]; ok && !e.Zero {
				delete(cs.newPages, e.ID) // count each content once
				c.stats.RAMPagesNew++
				c.stats.RAMBytesNew += e.Length
			}
		}
		c.stats.RAMBytes += b.length
		c.stats.RAMPages += st.DataBytes / chunk.BlockSize
		c.stats.RAMZeroPages += st.ZeroBytes / chunk.BlockSize
		m.RAM = append(m.RAM, r)
	}

	dev, err := c.writeBlob(ctx, deviceIndex, cs.s.Devices)
	if err != nil {
		return nil, fmt.Errorf("index the device state: %w", err)
	}
	m.DeviceState = dev
	c.stats.DeviceBytes = dev.Size
	meta, err := encodeStreamMeta(cs.s)
	if err != nil {
		return nil, err
	}
	sm, err := c.writeBlob(ctx, streamIndex, meta)
	if err != nil {
		return nil, fmt.Errorf("index the stream description: %w", err)
	}
	m.Stream = StreamInfo{Format: StreamFormat, Index: sm.Index, Size: sm.Size, PageSize: cs.s.PageSize(), Bytes: c.stats.StreamBytes}
	if cs.s.Config != nil {
		m.Stream.Machine = cs.s.Config.Machine
	}
	m.GuestPauseMS = c.stats.GuestPauseMS
	m.Method = c.cfg.Method

	if err := c.repo.sync(ctx); err != nil {
		return nil, err
	}
	c.stats.DurationMS = ms(time.Since(c.start))
	m.Stats = c.stats
	var parent repo.Digest
	if c.head != nil {
		parent = c.head.Digest
	}
	v, err := c.repo.commit(ctx, m, c.indexes, c.changes, parent, c.cfg.Node)
	if err != nil {
		return nil, err
	}
	if c.cfg.Node != "" {
		// This node runs the set's machine.
		if err := c.repo.nodes.SetRunner(ctx, c.cfg.Set, c.cfg.Node, v.Digest); err != nil {
			c.log().Warn("could not record that this node runs the set", "set", c.cfg.Set, "err", err)
		}
	}
	c.log().Debug("checkpoint complete", "seq", c.seq)
	if err := c.saveState(true); err != nil {
		// The checkpoint is complete; the next one reads the disks in full.
		c.log().Warn("could not record the disk chains: the next checkpoint reads the disks in full", "err", err)
	}
	if !c.cfg.NoCommit {
		c.commitOld(ctx)
	}
	c.stats.DurationMS = ms(time.Since(c.start))
	return &Result{Manifest: m, Version: v, Stats: c.stats, Instant: c.instant}, nil
}

// writeBlob indexes an in-memory blob with the CDC parameters, stores its
// chunks and writes its index into the checkpoint.
func (c *checkpointer) writeBlob(ctx context.Context, name string, b []byte) (ImageRef, error) {
	x, _, err := chunk.Build(ctx, chunk.Bytes(b), c.cfg.Params, chunk.Options{Workers: c.cfg.Workers, Chunk: c.storeChunkPlain(ctx)})
	if err != nil {
		return ImageRef{}, err
	}
	c.indexes[name] = x
	return ImageRef{Index: name, Size: int64(len(b))}, nil
}

// storeChunkPlain stores chunks without counting them as disk chunks.
func (c *checkpointer) storeChunkPlain(ctx context.Context) func(chunk.Entry, []byte) error {
	store := c.repo.Store()
	return func(e chunk.Entry, data []byte) error { return putHashed(ctx, store, e.ID, data) }
}

// commitOld merges every frozen overlay into its disk's base, live, and
// removes the overlay files. Failures leave the chain as it was (longer)
// and are reported in the stats; the checkpoint stays complete.
func (c *checkpointer) commitOld(ctx context.Context) {
	var errs []error
	for _, p := range c.plans {
		for _, f := range p.stale {
			if err := os.Remove(f); err == nil {
				c.log().Info("removed an overlay merged by an earlier commit", "disk", p.live.Name, "file", f)
			}
		}
		ovs, into, keep := p.ds.Overlays, p.ds.Base, []overlay(nil)
		if p.ds.KeepBase && len(ovs) > 0 {
			// The base is the received image: merge into the copy's own
			// first overlay.
			into, keep, ovs = ovs[0].layer, ovs[:1], ovs[1:]
		}
		if len(ovs) < 2 {
			continue
		}
		frozen, active := ovs[:len(ovs)-1], ovs[len(ovs)-1]
		job := fmt.Sprintf("ntc-commit-%d-%s", c.seq, active.Node)
		topNode := frozen[len(frozen)-1].Node
		cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		err := commit(cctx, c.sess, active.Node, topNode, into.Node, job)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.live.Name, err))
			continue
		}
		p.ds.Overlays = append(keep, active)
		if err := c.saveState(true); err != nil {
			errs = append(errs, err)
		}
		if c.cfg.Domain == "" {
			// The merged overlays' nodes are out of the chain but still
			// open (their files too, removed below): close them.
			for _, ov := range frozen {
				if err := closeNode(ctx, c.sess, ov.Node); err != nil {
					c.log().Warn("could not close a merged overlay node", "disk", p.live.Name, "node", ov.Node, "err", err)
				}
			}
		}
		for _, ov := range frozen {
			if err := os.Remove(ov.File); err != nil {
				errs = append(errs, fmt.Errorf("remove merged overlay: %w", err))
			}
		}
		c.stats.Committed += len(frozen)
		c.log().Debug("merged overlays", "disk", p.live.Name, "overlays", len(frozen), "into", into.File)
	}
	if err := errors.Join(errs...); err != nil {
		c.stats.CommitError = err.Error()
		c.log().Warn("merging old overlays failed (the chain stays longer)", "err", err)
	}
}

func (m *Manifest) disk(name string) *Disk {
	for i := range m.Disks {
		if m.Disks[i].Name == name {
			return &m.Disks[i]
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// streamReader reads the migration stream from ntc's end of the socket
// pair and counts it. interrupt makes a blocked Read fail. With drain set
// (the background-snapshot method) a failed parse does not close the
// socket: discardRest reads the stream to its end first. QEMU 7.2 leaves
// guest RAM write-protected when a background snapshot's stream breaks
// after it started tracking writes, and its main loop then blocks for good
// on the first write to guest memory; a stream read to the end finishes
// the snapshot normally.
type streamReader struct {
	conn      net.Conn
	drain     bool
	migrating atomic.Bool // QEMU may be writing
	n         atomic.Int64

	mu       sync.Mutex
	draining bool
}

// drainTimeout bounds how long a failed checkpoint keeps reading a
// background snapshot to let QEMU finish it.
const drainTimeout = 10 * time.Minute

func (r *streamReader) Read(p []byte) (int, error) {
	n, err := r.conn.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// interrupt ends a parse that blocks in Read, unless the rest of the
// stream is being discarded.
func (r *streamReader) interrupt() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.draining {
		return
	}
	if r.drain {
		r.conn.SetReadDeadline(time.Now())
	} else {
		r.conn.Close()
	}
}

// discardRest reads and drops the stream up to its end, when drain is set.
func (r *streamReader) discardRest() {
	r.mu.Lock()
	if !r.drain {
		r.mu.Unlock()
		return
	}
	r.draining = true
	r.conn.SetReadDeadline(time.Now().Add(drainTimeout))
	r.mu.Unlock()
	io.Copy(io.Discard, r)
}
