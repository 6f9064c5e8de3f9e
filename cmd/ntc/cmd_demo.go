package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

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
	r := rand.New(rand.NewPCG(uint64(size), 1))
	if err := writeDemoImage(imgPath, size, r); err != nil {
		return err
	}
	p := chunk.DefaultCDC()
	full := func(label string) (*chunk.Index, chunk.ScanStats, time.Duration, error) {
		img, err := chunk.OpenFile(imgPath)
		if err != nil {
			return nil, chunk.ScanStats{}, 0, err
		}
		defer img.Close()
		bar := g.newProgress(label, size)
		defer bar.Done()
		t0 := time.Now()
		x, st, err := chunk.Build(ctx, img, p, chunk.Options{Progress: bar.Add})
		return x, st, time.Since(t0), err
	}
	v1, st, d, err := full("indexing")
	if err != nil {
		return err
	}
	s1 := v1.Stats()
	say("2. full index: %d chunks, %s zero (never read from the sparse file, never sent); read %s in %s (%s)",
		s1.Chunks, humanBytes(s1.ZeroBytes), humanBytes(st.BytesRead), d.Round(time.Millisecond), rate(st.BytesRead, d))

	recv, err := startDemoReceiver(ctx, dir)
	if err != nil {
		return err
	}
	defer recv.stop()
	first, err := chunk.OpenFile(imgPath)
	if err != nil {
		return err
	}
	res1, wire1, err := recv.push(ctx, ntcsync.Image{Name: "disk.img", Index: v1, Source: ntcsync.ReaderSource{R: first}})
	first.Close()
	if err != nil {
		return err
	}
	say("3. pushed it to a receiver on loopback over QUIC (version %d): %s on the wire for %s of data",
		res1.Version, humanBytes(int64(wire1)), humanBytes(s1.DataBytes))

	changed, err := rewriteExtents(imgPath, size, r)
	if err != nil {
		return err
	}
	var changedBytes int64
	for _, c := range changed {
		changedBytes += c.Len
	}
	say("4. the guest rewrote %d scattered 64 KiB extents (%s, 1%%)", len(changed), humanBytes(changedBytes))

	v2full, stFull, dFull, err := full("re-indexing")
	if err != nil {
		return err
	}
	say("5. full re-index:        read %s in %s", humanBytes(stFull.BytesRead), dFull.Round(time.Millisecond))

	img, err := chunk.OpenFile(imgPath)
	if err != nil {
		return err
	}
	defer img.Close()
	t0 := time.Now()
	v2, stInc, err := chunk.Reindex(ctx, v1, img, changed, chunk.Options{})
	dInc := time.Since(t0)
	if err != nil {
		return err
	}
	identical := equalEntries(v2, v2full)
	say("6. incremental re-index: read %s in %s (%.1f%% of the image, %.1f%% of the time); identical to the full one: %v",
		humanBytes(stInc.BytesRead), dInc.Round(time.Millisecond),
		100*float64(stInc.BytesRead)/float64(size), 100*float64(dInc)/float64(dFull), identical)
	diff, err := chunk.Compare(v1, v2)
	if err != nil {
		return err
	}
	say("7. a transfer of the new version to a holder of the old one sends %d chunks, %s (%.2fx the changed bytes); %d chunks are reused",
		diff.NewChunks, humanBytes(diff.NewBytes), float64(diff.NewBytes)/float64(changedBytes), diff.ReusedChunks)
	if !identical {
		return fmt.Errorf("the incremental index differs from the full one: please report this bug")
	}
	res2, wire2, err := recv.push(ctx, ntcsync.Image{Name: "disk.img", Index: v2, Source: ntcsync.ReaderSource{R: img}, Base: v1, Changed: changed})
	if err != nil {
		return err
	}
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
			FullMS: ms(dFull), FullRead: stFull.BytesRead, IncrementalMS: ms(dInc), IncrementalRead: stInc.BytesRead,
			Identical: identical, Diff: diff, PushFirstBytes: pushed[0], PushSecondBytes: pushed[1],
		})
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func equalEntries(a, b *chunk.Index) bool {
	if a.Size != b.Size || len(a.Entries) != len(b.Entries) {
		return false
	}
	for i := range a.Entries {
		if a.Entries[i] != b.Entries[i] {
			return false
		}
	}
	return true
}

// writeDemoImage writes a sparse image: a quarter left as holes, the rest in
// 1 MiB regions of random data, repetitive text and zeros.
func writeDemoImage(path string, size int64, r *rand.Rand) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create demo image: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("create demo image: %w", err)
	}
	buf := make([]byte, 1<<20)
	words := []string{"office", "home", "checkpoint", "resume", "chunk", "guest", "disk", "page"}
	for off := int64(0); off < size*3/4; off += int64(len(buf)) {
		switch r.IntN(4) {
		case 0:
			continue // a hole
		case 1: // log-like text
			n := 0
			for n < len(buf) {
				line := fmt.Sprintf("%d %s %s %x\n", r.IntN(1e6), words[r.IntN(len(words))], words[r.IntN(len(words))], r.Uint32())
				n += copy(buf[n:], line)
			}
		default:
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
		}
		if _, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
			f.Close()
			return fmt.Errorf("write demo image: %w", err)
		}
	}
	return f.Close()
}

// rewriteExtents overwrites 1% of the image in random 64 KiB extents.
func rewriteExtents(path string, size int64, r *rand.Rand) ([]chunk.Range, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("change demo image: %w", err)
	}
	const ext = 64 << 10
	buf := make([]byte, ext)
	n := int(size / 100 / ext)
	var out []chunk.Range
	for _, slot := range r.Perm(int(size / ext))[:max(n, 1)] {
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		off := int64(slot) * ext
		if _, err := f.WriteAt(buf, off); err != nil {
			f.Close()
			return nil, fmt.Errorf("change demo image: %w", err)
		}
		out = append(out, chunk.Range{Off: off, Len: ext})
	}
	return out, f.Close()
}

// demoReceiver is a receiver on loopback in this process, and a sender
// with its own identity allowed to push to it.
type demoReceiver struct {
	office, home *transport.Identity
	repo         *ntcsync.Repo
	l            *transport.Listener
	sender       *ntcsync.Sender
	stop         func()
}

func startDemoReceiver(ctx context.Context, dir string) (*demoReceiver, error) {
	office, err := transport.GenerateIdentity()
	if err != nil {
		return nil, err
	}
	home, err := transport.GenerateIdentity()
	if err != nil {
		return nil, err
	}
	return serveDemo(ctx, filepath.Join(dir, "home"), office, home, filepath.Join(dir, "office"))
}

// serveDemo starts a receiver as node home on the repository in dir,
// allowing office, whose sender keeps its state in senderState.
func serveDemo(ctx context.Context, dir string, office, home *transport.Identity, senderState string) (*demoReceiver, error) {
	repo, err := ntcsync.OpenRepo(dir)
	if err != nil {
		return nil, err
	}
	l, err := transport.Listen("127.0.0.1:0", home, transport.AllowIDs(office.ID()), transport.Config{})
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
	d := &demoReceiver{office: office, home: home, repo: repo, l: l,
		sender: &ntcsync.Sender{StateDir: senderState, Node: office.ID().String()}}
	d.stop = func() {
		cancel()
		l.Close()
		<-served
		repo.Close()
	}
	return d, nil
}

// push sends one version of the image and returns the bytes on the wire.
func (d *demoReceiver) push(ctx context.Context, im ntcsync.Image) (*ntcsync.Result, uint64, error) {
	return d.pushVersion(ctx, &ntcsync.Version{Set: "demo", Images: []ntcsync.Image{im}})
}

// pushVersion sends v and returns the bytes on the wire.
func (d *demoReceiver) pushVersion(ctx context.Context, v *ntcsync.Version) (*ntcsync.Result, uint64, error) {
	conn, err := transport.Dial(ctx, d.l.Addr().String(), d.office, d.home.ID(), transport.Config{})
	if err != nil {
		return nil, 0, err
	}
	defer conn.Close()
	res, err := d.sender.Push(ctx, conn, v)
	st := conn.QUIC().ConnectionStats()
	return res, st.BytesSent + st.BytesReceived, err
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

	recv, err := startDemoReceiver(ctx, dir)
	if err != nil {
		return err
	}
	defer recv.stop()
	// The office's node repository: its checkpoints, and what it pushed.
	repo := filepath.Join(dir, "office-repo")
	recv.sender.StateDir = repo
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
		res, err := capture.Checkpoint(ctx, capture.Config{QMP: vm.QMPPath(), Dir: repo, Set: set, Node: recv.office.ID().String()})
		if err != nil {
			return err
		}
		pr, wire, err := recv.pushCheckpoint(ctx, set)
		if err != nil {
			return err
		}
		c := demoCheckpoint{Seq: res.Manifest.Seq, GuestPauseMS: res.Stats.GuestPauseMS, WireBytes: wire, ChunksSent: pr.ChunksSent, Tick: tick}
		out.Checkpoints = append(out.Checkpoints, c)
		what := "everything (first push)"
		if i == 2 {
			what = fmt.Sprintf("only what changed (%s of RAM pages new, %s of disk written)", humanBytes(res.Stats.RAMBytesNew), humanBytes(res.Stats.DiskBytesChanged))
		}
		say("%d. live checkpoint %d at tick %d: guest paused %.1f ms; pushed over QUIC to a receiver on loopback: %s on the wire, %s",
			i+1, c.Seq, tick, c.GuestPauseMS, humanBytes(int64(wire)), what)
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

	lines, err := awaitTicks(ctx, cp, 3)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if m := demoTick.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			out.CopyTicks = append(out.CopyTicks, n)
		}
		if strings.Contains(l, "Linux version") || strings.HasPrefix(l, "ntc: ready") {
			out.Booted = true
		}
	}
	say("6. the copy's console (%s): %s", cp.Plan.SerialLog, strings.Join(lines, " | "))
	if out.Back, err = demoWayBack(ctx, cp, recv, repo, set, len(lines)); err != nil {
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

var demoTick = regexp.MustCompile(`^tick (\d+)$`)

// awaitTicks waits until the copy's serial log shows n tick lines and
// returns its lines. Nothing announces a line QEMU writes to the file, so
// it is read again every 100 ms.
func awaitTicks(ctx context.Context, cp *resume.VM, n int) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		b, err := os.ReadFile(cp.Plan.SerialLog)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		var lines []string
		ticks := 0
		for _, l := range strings.Split(strings.ReplaceAll(string(b), "\r", ""), "\n") {
			if l != "" {
				lines = append(lines, l)
			}
			if demoTick.MatchString(l) {
				ticks++
			}
		}
		if ticks >= n {
			return lines, nil
		}
		select {
		case <-cp.Exited():
			return nil, fmt.Errorf("demo: the copy exited: %v (see %s)", cp.ExitErr(), cp.Plan.Log)
		case <-ctx.Done():
			return nil, fmt.Errorf("demo: the copy printed %d ticks: %w", ticks, ctx.Err())
		case <-t.C:
		}
	}
}

// pushCheckpoint pushes the current checkpoint of set in the sender's
// node repository, and returns the bytes on the wire.
func (d *demoReceiver) pushCheckpoint(ctx context.Context, set string) (*ntcsync.Result, uint64, error) {
	_, prev := d.sender.LastAcked(d.home.ID(), set)
	cv, err := replicate.OpenVersion(ctx, d.sender.StateDir, set, 0, prev)
	if err != nil {
		return nil, 0, err
	}
	defer cv.Close()
	return d.pushVersion(ctx, cv.Sync)
}

// demoWayBack lets the copy at home work on for a few ticks, checkpoints it
// into home's repository (the copy continues the set there: capture.Adopt)
// and pushes that checkpoint back to a receiver on the office's repository
// officeRepo, which holds the version home started from.
func demoWayBack(ctx context.Context, cp *resume.VM, recv *demoReceiver, officeRepo, set string, seen int) (demoBack, error) {
	var b demoBack
	homeRepo := recv.repo.Dir()
	cur, err := recv.repo.Current(set)
	if err != nil {
		return b, err
	}
	if err := capture.Adopt(ctx, cp.Session(), homeRepo, set, int(cur.Version), recv.home.ID().String()); err != nil {
		return b, err
	}
	if _, err := awaitTicks(ctx, cp, seen+2); err != nil {
		return b, err
	}
	res, err := capture.Checkpoint(ctx, capture.Config{QMP: cp.Plan.QMP, Dir: homeRepo, Set: set, Node: recv.home.ID().String()})
	if err != nil {
		return b, err
	}
	b.Seq, b.DiskMode, b.DiskBytesRead = res.Manifest.Seq, res.Stats.DiskMode, res.Stats.DiskBytesRead
	// The office receives into the repository it checkpointed into; home
	// pushes from its own.
	office, err := serveDemo(ctx, officeRepo, recv.home, recv.office, homeRepo)
	if err != nil {
		return b, err
	}
	defer office.stop()
	pr, wire, err := office.pushCheckpoint(ctx, set)
	if err != nil {
		return b, err
	}
	b.WireBytes, b.ChunksSent, b.Base = wire, pr.ChunksSent, !pr.Base.IsZero()
	return b, nil
}
