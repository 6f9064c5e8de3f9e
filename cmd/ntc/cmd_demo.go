package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/bench"
	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/replicate"
	"github.com/ntc-project/ntc/resume"
	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"
)

type demoOptions struct {
	dir  string
	size string
	keep bool
	vm   bool
}

func newDemoCommand(g *globals) *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Show ntc at work: a disk image (index, change, re-index, push), or with --vm a live VM moved and resumed",
		Long: `Demo --vm (what 'make demo' runs) boots the test guest (a small Linux that
prints "tick N" on its serial console every second and writes "disk tick N" to
its disk) under QEMU, checkpoints it live twice, pushes each checkpoint over
QUIC to a receiver it starts on loopback (the second push sends only what
changed), stops the original and resumes the received copy: its console goes
on counting from the checkpoint, with no reboot. It prints the guest's pause,
the bytes on the wire, the resume time and the copy's ticks. It needs QEMU
(qemu-system-x86, qemu-utils) and builds the guest on first use.

Without --vm, demo makes a disk image (random data, text, zero regions), indexes it, pushes
it to a receiver it starts on loopback, rewrites 1% of it in scattered 64 KiB
extents as a guest would, re-indexes it twice (once reading everything, once
reading only around the changed extents: the indexes are identical), and
pushes the new version with its changed ranges. It prints what each step read
and what crossed the wire.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.vm {
				return runDemoVM(cmd.Context(), g, o)
			}
			return runDemo(cmd.Context(), g, o)
		},
	}
	cmd.Flags().BoolVar(&o.vm, "vm", false, "move a live VM: boot, checkpoint, push, resume (needs QEMU)")
	cmd.Flags().StringVar(&o.dir, "dir", "", "working directory (default: a temporary one, removed afterwards)")
	cmd.Flags().StringVar(&o.size, "size", "512M", "image size (without --vm)")
	cmd.Flags().BoolVar(&o.keep, "keep", false, "keep the working directory")
	return cmd
}

type demoJSON struct {
	ImageBytes      int64      `json:"image_bytes"`
	ChangedBytes    int64      `json:"changed_bytes"`
	FullMS          float64    `json:"full_index_ms"`
	FullRead        int64      `json:"full_index_bytes_read"`
	IncrementalMS   float64    `json:"incremental_index_ms"`
	IncrementalRead int64      `json:"incremental_index_bytes_read"`
	Identical       bool       `json:"identical"`
	Diff            chunk.Diff `json:"diff"`
	// Bytes on the wire (QUIC, both ways) of the first and second push.
	PushFirstBytes  uint64 `json:"push_first_bytes"`
	PushSecondBytes uint64 `json:"push_second_bytes"`
}

func runDemo(ctx context.Context, g *globals, o demoOptions) error {
	size, err := chunk.ParseSize(o.size)
	if err != nil || size < 4<<20 {
		return usagef("--size %q: want at least 4M", o.size)
	}
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "ntc-demo-"); err != nil {
			return err
		}
		if !o.keep {
			defer os.RemoveAll(dir)
		}
	}
	say := func(format string, a ...any) {
		if !g.json {
			fmt.Fprintf(g.stdout, format+"\n", a...)
		}
	}
	imgPath := filepath.Join(dir, "disk.img")
	say("1. writing a %s disk image with data, text and empty regions: %s", humanBytes(size), imgPath)
	if err := bench.WriteMixed(imgPath, size, uint64(size)); err != nil {
		return fmt.Errorf("demo image: %w", err)
	}
	// index indexes the image as 'ntc push' does: in full, or given the
	// index of before and the ranges written since, only around them.
	index := func(label string, prev *chunk.Index, changed []chunk.Range) (*ntcsync.FileImage, time.Duration, error) {
		bar := g.newProgress(label, size)
		defer bar.Done()
		t0 := time.Now()
		f, err := ntcsync.IndexFile(ctx, imgPath, "disk.img", prev, changed, bar.Add)
		return f, time.Since(t0), err
	}
	first, d, err := index("indexing", nil, nil)
	if err != nil {
		return err
	}
	defer first.Close()
	v1 := first.Index
	s1 := v1.Stats()
	say("2. full index: %d chunks, %s zero (never read from the sparse file, never sent); read %s in %s (%s)",
		s1.Chunks, humanBytes(s1.ZeroBytes), humanBytes(first.BytesRead), d.Round(time.Millisecond), rate(first.BytesRead, d))

	nodes, recv, err := startDemoHome(ctx, dir)
	if err != nil {
		return err
	}
	defer recv.stop()
	sender := recv.sender(nodes.office, filepath.Join(dir, "office"))
	res1, err := pushDemoImage(ctx, sender, first.Image)
	if err != nil {
		return err
	}
	wire1 := res1.BytesUp + res1.BytesDown
	say("3. pushed it to a receiver on loopback over QUIC (version %d): %s on the wire for %s of data",
		res1.Version, humanBytes(int64(wire1)), humanBytes(s1.DataBytes))

	changed, _, err := bench.RewriteScattered(imgPath, 0.01, 64<<10, uint64(size)+1)
	if err != nil {
		return fmt.Errorf("change the demo image: %w", err)
	}
	var changedBytes int64
	for _, c := range changed {
		changedBytes += c.Len
	}
	say("4. the guest rewrote %d scattered 64 KiB extents (%s, 1%%)", len(changed), humanBytes(changedBytes))

	full, dFull, err := index("re-indexing", nil, nil)
	if err != nil {
		return err
	}
	full.Close()
	say("5. full re-index:        read %s in %s", humanBytes(full.BytesRead), dFull.Round(time.Millisecond))

	inc, dInc, err := index("re-indexing the changes", v1, changed)
	if err != nil {
		return err
	}
	defer inc.Close()
	v2 := inc.Index
	identical := v2.Equal(full.Index)
	say("6. incremental re-index: read %s in %s (%.1f%% of the image, %.1f%% of the time); identical to the full one: %v",
		humanBytes(inc.BytesRead), dInc.Round(time.Millisecond),
		100*float64(inc.BytesRead)/float64(size), 100*float64(dInc)/float64(dFull), identical)
	diff, err := chunk.Compare(v1, v2)
	if err != nil {
		return err
	}
	say("7. a transfer of the new version to a holder of the old one sends %d chunks, %s (%.2fx the changed bytes); %d chunks are reused",
		diff.NewChunks, humanBytes(diff.NewBytes), float64(diff.NewBytes)/float64(changedBytes), diff.ReusedChunks)
	if !identical {
		return fmt.Errorf("the incremental index differs from the full one: please report this bug")
	}
	// The push sends the new chunks as patches against the receiver's
	// copy (inc.Base, inc.Changed).
	res2, err := pushDemoImage(ctx, sender, inc.Image)
	if err != nil {
		return err
	}
	wire2 := res2.BytesUp + res2.BytesDown
	say("8. pushed version %d with its changed ranges: %s on the wire (%d chunks, %d as patches) for %s changed",
		res2.Version, humanBytes(int64(wire2)), res2.ChunksSent, res2.Patched, humanBytes(changedBytes))
	pushed := [2]uint64{wire1, wire2}
	for _, x := range []struct {
		name string
		idx  *chunk.Index
	}{{"v1.idx", v1}, {"v2.idx", v2}} {
		if err := chunk.WriteIndexFile(filepath.Join(dir, x.name), x.idx); err != nil {
			return err
		}
	}
	if o.keep || o.dir != "" {
		say("   indexes are in %s: try 'ntc diff %s %s'", dir, filepath.Join(dir, "v1.idx"), filepath.Join(dir, "v2.idx"))
	}
	if g.json {
		return writeJSON(g.stdout, demoJSON{
			ImageBytes: size, ChangedBytes: changedBytes,
			FullMS: ms(dFull), FullRead: full.BytesRead, IncrementalMS: ms(dInc), IncrementalRead: inc.BytesRead,
			Identical: identical, Diff: diff, PushFirstBytes: pushed[0], PushSecondBytes: pushed[1],
		})
	}
	return nil
}

// demoNodes are the demo's two nodes, both in this process: the office
// pushes, home receives.
type demoNodes struct{ office, home *transport.Identity }

// startDemoHome makes the two nodes and starts home's receiver on the
// repository dir/home, allowing the office.
func startDemoHome(ctx context.Context, dir string) (demoNodes, *demoReceiver, error) {
	office, err := transport.GenerateIdentity()
	if err != nil {
		return demoNodes{}, nil, err
	}
	home, err := transport.GenerateIdentity()
	if err != nil {
		return demoNodes{}, nil, err
	}
	nodes := demoNodes{office: office, home: home}
	recv, err := serveDemo(ctx, filepath.Join(dir, "home"), home, office)
	return nodes, recv, err
}

// demoReceiver is a node receiving pushes on loopback, served as 'ntc
// serve' serves them (sync.Receiver.ServeListener).
type demoReceiver struct {
	id   *transport.Identity
	repo *ntcsync.Repo
	addr string
	stop func()
}

// serveDemo starts a receiver as node id on the repository in dir,
// allowing from.
func serveDemo(ctx context.Context, dir string, id, from *transport.Identity) (*demoReceiver, error) {
	repo, err := ntcsync.OpenRepo(dir)
	if err != nil {
		return nil, err
	}
	l, err := transport.Listen("127.0.0.1:0", id, transport.AllowIDs(from.ID()), transport.Config{})
	if err != nil {
		repo.Close()
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan struct{})
	go func() {
		defer close(served)
		(&ntcsync.Receiver{Repo: repo}).ServeListener(sctx, l)
	}()
	return &demoReceiver{id: id, repo: repo, addr: l.Addr().String(), stop: func() {
		cancel()
		l.Close()
		<-served
		repo.Close()
	}}, nil
}

// sender returns node from's Sender of pushes to the receiver, its state
// in dir: built as ntc push builds one (dialer.sender), with the library's
// tuning rather than this node's push.* and no session tickets kept (the
// demo's nodes last one run).
func (r *demoReceiver) sender(from *transport.Identity, dir string) *ntcsync.Sender {
	return (&dialer{id: from}).sender(peerAddr(r.addr, r.id.ID()), dir, sendTuning{})
}

// pushCheckpoint pushes the current checkpoint of set in node from's
// repository dir to the receiver, as 'ntc replicate' does.
func (r *demoReceiver) pushCheckpoint(ctx context.Context, from *transport.Identity, dir, set string) (replicate.Pushed, error) {
	p := &replicate.Push{Set: set, Peer: r.id.ID(), Sender: r.sender(from, dir)}
	return p.Push(ctx, 0)
}

// pushDemoImage pushes im as the next version of set demo.
func pushDemoImage(ctx context.Context, s *ntcsync.Sender, im ntcsync.Image) (*ntcsync.Result, error) {
	conn, err := s.Dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return s.Push(ctx, conn, &ntcsync.Version{Set: "demo", Images: []ntcsync.Image{im}})
}

// demoVMJSON is demo --vm's --json summary.
type demoVMJSON struct {
	// Memory backs the guest's RAM: "hugepages" or "private" (4 KiB).
	Memory      string           `json:"guest_memory"`
	Checkpoints []demoCheckpoint `json:"checkpoints"`
	// LastTick is the original's last tick before it was stopped;
	// CheckpointTick the tick on the disk of the resumed checkpoint.
	LastTick       int     `json:"original_last_tick"`
	CheckpointTick int     `json:"checkpoint_tick"`
	CopyTicks      []int   `json:"copy_ticks"`
	Booted         bool    `json:"copy_booted"`
	ResumeMS       float64 `json:"resume_ms"`
	StreamBytes    int64   `json:"stream_bytes"`
	// Back is the way back: the copy's checkpoint at home, pushed to the
	// office's repository.
	Back   demoBack `json:"back"`
	WallMS float64  `json:"wall_ms"`
}

type demoBack struct {
	Seq           int    `json:"seq"`
	DiskMode      string `json:"disk_mode"`
	DiskBytesRead int64  `json:"disk_bytes_read"`
	WireBytes     uint64 `json:"wire_bytes"`
	ChunksSent    int    `json:"chunks_sent"`
	// Base is whether the push was a delta against a version the office
	// holds (the one the copy was resumed from).
	Base bool `json:"delta"`
}

type demoCheckpoint struct {
	Seq          int     `json:"seq"`
	GuestPauseMS float64 `json:"guest_pause_ms"`
	WireBytes    uint64  `json:"wire_bytes"`
	ChunksSent   int     `json:"chunks_sent"`
	Tick         int     `json:"tick"`
}

// runDemoVM moves the live test guest: boot, checkpoint and push twice,
// stop, resume the received copy and watch it count on.
func runDemoVM(ctx context.Context, g *globals, o demoOptions) error {
	t0 := time.Now()
	dir := o.dir
	var err error
	if dir == "" {
		// Short: QMP socket paths must fit in 107 bytes.
		if dir, err = os.MkdirTemp("", "ntcd-"); err != nil {
			return err
		}
		if !o.keep {
			defer os.RemoveAll(dir)
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	say := func(format string, a ...any) {
		if !g.json {
			fmt.Fprintf(g.stdout, format+"\n", a...)
		}
	}
	var out demoVMJSON

	say("1. booting the test guest under QEMU (TCG): it prints \"tick N\" every second and writes \"disk tick N\" to its disk")
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := os.MkdirAll(filepath.Join(dir, "office"), 0o700); err != nil {
		return err
	}
	mem := testguest.PreferHugePages(testguest.DefaultMemoryMiB)
	out.Memory = string(mem)
	if mem == testguest.MemoryHugePages {
		say("   guest RAM on 2 MiB huge pages: a checkpoint pauses it for milliseconds")
	} else {
		say("   guest RAM on 4 KiB pages (no %d MiB of huge pages free): QEMU 7.2 pauses it for ~0.3 s per checkpoint; as root, 'echo 384 > /proc/sys/vm/nr_hugepages' (make deps does) makes that milliseconds",
			testguest.DefaultMemoryMiB)
	}
	guest, err := testguest.Build(bctx, testguest.Options{})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	vm, err := testguest.Start(bctx, testguest.StartOptions{Guest: guest, Dir: filepath.Join(dir, "office"), NIC: true, Memory: mem})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer vm.Close()
	if _, err := vm.WaitTick(bctx, 3); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	say("   running: tick %d (QMP %s)", vm.LastTick(), vm.QMPPath())

	nodes, recv, err := startDemoHome(ctx, dir)
	if err != nil {
		return err
	}
	defer recv.stop()
	// The office's node repository: its checkpoints, and what it pushed.
	repo := filepath.Join(dir, "office-repo")
	const set = "office-vm"
	for i := 1; i <= 2; i++ {
		if i == 2 {
			if _, err := vm.WaitTick(bctx, vm.LastTick()+2); err != nil {
				return fmt.Errorf("demo: %w", err)
			}
		}
		// The last tick the guest printed before the checkpoint's instant
		// (the checkpoint itself takes a few seconds more to store).
		tick := vm.LastTick()
		res, err := capture.Checkpoint(ctx, capture.Config{QMP: vm.QMPPath(), Dir: repo, Set: set, Node: nodes.office.ID().String()})
		if err != nil {
			return err
		}
		pr, err := recv.pushCheckpoint(ctx, nodes.office, repo, set)
		if err != nil {
			return err
		}
		c := demoCheckpoint{Seq: res.Manifest.Seq, GuestPauseMS: res.Stats.GuestPauseMS, WireBytes: pr.BytesSent, ChunksSent: pr.ChunksSent, Tick: tick}
		out.Checkpoints = append(out.Checkpoints, c)
		what := "everything (first push)"
		if i == 2 {
			what = fmt.Sprintf("only what changed (%s of RAM pages new, %s of disk written)", humanBytes(res.Stats.RAMBytesNew), humanBytes(res.Stats.DiskBytesChanged))
		}
		say("%d. live checkpoint %d at tick %d: guest paused %.1f ms; pushed over QUIC to a receiver on loopback: %s on the wire, %s",
			i+1, c.Seq, tick, c.GuestPauseMS, humanBytes(int64(c.WireBytes)), what)
	}
	if err := vm.Stop(bctx); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	out.LastTick = vm.LastTick()
	say("4. stopped the original at tick %d", out.LastTick)

	images := filepath.Dir(recv.repo.ImagePath(set, resume.ManifestImage))
	manifest, err := receivedManifest(recv.repo, set)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if out.CheckpointTick, err = testguest.ReadDiskTick(ctx, filepath.Join(images, "disk-vda")); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	t1 := time.Now()
	// The guest booted its kernel directly: the receiver names its own
	// copy of it (the checkpoint only says which one the source loaded).
	cp, err := resume.Start(ctx, resume.Config{Images: images, Manifest: manifest, WorkDir: filepath.Join(dir, "home-copy"), Kernel: guest.Kernel, Initrd: guest.Initrd})
	if err != nil {
		return err
	}
	defer cp.Kill()
	resumeTime := time.Since(t1)
	out.ResumeMS, out.StreamBytes = ms(resumeTime), cp.Timings.StreamBytes
	say("5. resumed the received checkpoint (disk at tick %d) in %.2f s: %s migration stream rebuilt from the received images, NIC link down",
		out.CheckpointTick, resumeTime.Seconds(), humanBytes(cp.Timings.StreamBytes))

	lines, ticks, err := copyTicks(ctx, cp, 3)
	if err != nil {
		return err
	}
	out.CopyTicks = ticks
	for _, l := range lines {
		if strings.Contains(l, "Linux version") || strings.HasPrefix(l, "ntc: ready") {
			out.Booted = true
		}
	}
	say("6. the copy's console (%s): %s", cp.Plan.SerialLog, strings.Join(lines, " | "))
	if out.Back, err = demoWayBack(ctx, cp, nodes, recv, repo, set, len(ticks)); err != nil {
		return fmt.Errorf("demo: the way back: %w", err)
	}
	first := out.Checkpoints[0].WireBytes
	say("7. the way back: the copy worked at home; home's checkpoint read only what it wrote (%s of disk, incremental against the version it was resumed from) and its push to the office sent %s, %.3f of the way out",
		humanBytes(out.Back.DiskBytesRead), humanBytes(int64(out.Back.WireBytes)), float64(out.Back.WireBytes)/float64(first))
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer scancel()
	if err := cp.Stop(sctx); err != nil {
		return err
	}
	out.WallMS = ms(time.Since(t0))
	if len(out.CopyTicks) == 0 || out.CopyTicks[0] < out.CheckpointTick || out.Booted {
		return fmt.Errorf("demo: the copy did not continue the guest (ticks %v after the checkpoint's %d, booted: %v): please report this bug",
			out.CopyTicks, out.CheckpointTick, out.Booted)
	}
	say("   it went on with tick %d right after the checkpoint's tick %d: no reboot. Demo took %.1f s.", out.CopyTicks[0], out.CheckpointTick, time.Since(t0).Seconds())
	if g.json {
		return writeJSON(g.stdout, out)
	}
	return nil
}

// copyTicks waits until the copy's serial console shows n ticks and
// returns its lines and ticks.
func copyTicks(ctx context.Context, cp *resume.VM, n int) ([]string, []int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	lines, ticks, err := testguest.WaitSerialTicks(ctx, cp.Plan.SerialLog, n, cp.Exited())
	if errors.Is(err, testguest.ErrSerialEnded) {
		return nil, nil, fmt.Errorf("demo: the copy exited: %v (see %s): %w", cp.ExitErr(), cp.Plan.Log, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("demo: the copy's console: %w", err)
	}
	return lines, ticks, nil
}

// demoWayBack lets the copy at home work on for two more ticks than the
// seen ones, checkpoints it into home's repository (the copy continues the
// set there: capture.Adopt) and pushes that checkpoint back to a receiver
// on the office's repository officeRepo, which holds the version home
// started from.
func demoWayBack(ctx context.Context, cp *resume.VM, nodes demoNodes, home *demoReceiver, officeRepo, set string, seen int) (demoBack, error) {
	var b demoBack
	homeRepo := home.repo.Dir()
	cur, err := home.repo.Current(set)
	if err != nil {
		return b, err
	}
	if err := capture.Adopt(ctx, cp.Session(), homeRepo, set, int(cur.Version), nodes.home.ID().String()); err != nil {
		return b, err
	}
	if _, _, err := copyTicks(ctx, cp, seen+2); err != nil {
		return b, err
	}
	res, err := capture.Checkpoint(ctx, capture.Config{QMP: cp.Plan.QMP, Dir: homeRepo, Set: set, Node: nodes.home.ID().String()})
	if err != nil {
		return b, err
	}
	b.Seq, b.DiskMode, b.DiskBytesRead = res.Manifest.Seq, res.Stats.DiskMode, res.Stats.DiskBytesRead
	// The office receives into the repository it checkpointed into; home
	// pushes from its own.
	office, err := serveDemo(ctx, officeRepo, nodes.office, nodes.home)
	if err != nil {
		return b, err
	}
	defer office.stop()
	pr, err := office.pushCheckpoint(ctx, nodes.home, homeRepo, set)
	if err != nil {
		return b, err
	}
	b.WireBytes, b.ChunksSent, b.Base = pr.BytesSent, pr.ChunksSent, pr.Delta
	return b, nil
}
