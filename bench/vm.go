package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/ntc-project/ntc/bench/debimg"
	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/capture/migstream"
	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/internal/zero"
)

// VM scenarios: the test guest (internal/testguest) checkpointed twice by
// 'ntc checkpoint', a stretch of work apart.
const (
	ScenarioVMIdle = "vm-idle" // the guest only ticks (a sector a second)
	ScenarioVMBusy = "vm-busy" // it also rewrites VMBusyMiB of RAM and VMDiskBusyMiB of disk
)

// Sizes of the VM scenarios' guest.
const (
	VMMemoryMiB   = 256
	VMBusyMiB     = 32
	VMDiskBusyMiB = 4
)

// VMOptions say how the VM scenarios run the guest.
type VMOptions struct {
	// Work is how long the guest works between the two checkpoints,
	// counted in the guest's ticks (one a second); default one minute.
	Work time.Duration
	// Progress, if set, is told what is happening.
	Progress func(format string, args ...any)
}

// VMState is what a VM scenario needs besides its files: the checkpoint
// repositories the ntc sender starts from, and how to start the guest again
// from the new checkpoint for QEMU's own migration.
type VMState struct {
	// Repo is the checkpoint repository holding both checkpoints, Seq1
	// and Seq2.
	Repo       string
	Seq1, Seq2 int
	// Stream2 is the new checkpoint's migration stream as a file, Disk2
	// its disk as a raw image: a restored guest starts from them.
	Stream2, Disk2 string
	// Start are the options the guest was started with (a restored one
	// must match: RAM size, busy work, devices).
	Start testguest.StartOptions
	// Pause1 and Pause2 are the checkpoints' guest pauses.
	Pause1, Pause2 time.Duration
	// RAMBytes is the RAM the guest had (all blocks), RAMNonZero the
	// pages of data in the new checkpoint.
	RAMBytes, RAMNonZero int64
}

// checkpointJSON is the part of 'ntc checkpoint --json' the benchmark reads.
type checkpointJSON struct {
	Seq          int     `json:"seq"`
	GuestPauseMS float64 `json:"guest_pause_ms"`
	RAMBytes     int64   `json:"ram_bytes"`
	RAMPages     int64   `json:"ram_pages"`
}

// PrepareVM boots the test guest, checkpoints it with 'ntc checkpoint'
// (bin), lets it work, checkpoints it again, stops it and writes the two
// checkpoints as files (the migration stream and the raw disk of each) under
// dir: the scenario rsync and a full copy are measured on.
func PrepareVM(ctx context.Context, name, dir, bin string, opts VMOptions) (*Scenario, error) {
	if opts.Work <= 0 {
		opts.Work = time.Minute
	}
	progress := func(format string, args ...any) {
		if opts.Progress != nil {
			opts.Progress(name+": "+format, args...)
		}
	}
	start := testguest.StartOptions{MemoryMiB: VMMemoryMiB}
	switch name {
	case ScenarioVMIdle:
	case ScenarioVMBusy:
		start.BusyMiB, start.DiskBusyMiB = VMBusyMiB, VMDiskBusyMiB
	default:
		return nil, fmt.Errorf("unknown VM scenario %q", name)
	}
	dir = filepath.Join(dir, name)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	vmDir := filepath.Join(dir, "vm")
	if err := os.MkdirAll(vmDir, 0o755); err != nil {
		return nil, err
	}
	start.Dir = vmDir
	progress("booting the test guest (%d MiB RAM, busy %d MiB RAM, %d MiB disk)", start.MemoryMiB, start.BusyMiB, start.DiskBusyMiB)
	vm, err := testguest.Start(ctx, start)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer vm.Close()
	// Three ticks: the guest is up and its busy loops have started.
	if _, err := vm.WaitTick(ctx, 3); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	repo := filepath.Join(dir, "repo")
	ck := func() (*checkpointJSON, error) {
		c := exec.CommandContext(ctx, bin, "--json", "checkpoint", "--qmp", vm.QMPPath(), "--out", repo, "--name", name,
			"--overlay-dir", vmDir)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			return nil, fmt.Errorf("%s: ntc checkpoint: %w: %s", name, err, stderr.Bytes())
		}
		var r checkpointJSON
		if err := json.Unmarshal(out, &r); err != nil {
			return nil, fmt.Errorf("%s: ntc checkpoint printed %q: %w", name, out, err)
		}
		return &r, nil
	}
	c1, err := ck()
	if err != nil {
		return nil, err
	}
	st := &VMState{Repo: repo, Seq1: c1.Seq, Start: start,
		Pause1: time.Duration(c1.GuestPauseMS * float64(time.Millisecond))}
	ticks := int(opts.Work / time.Second)
	progress("checkpoint %d taken (guest paused %.1f ms); the guest works for %d ticks", c1.Seq, c1.GuestPauseMS, ticks)
	if _, err := vm.WaitTick(ctx, vm.LastTick()+ticks); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c2, err := ck()
	if err != nil {
		return nil, err
	}
	st.Seq2, st.Pause2 = c2.Seq, time.Duration(c2.GuestPauseMS*float64(time.Millisecond))
	st.RAMBytes, st.RAMNonZero = c2.RAMBytes, c2.RAMPages*4096
	progress("checkpoint %d taken (guest paused %.1f ms); writing both as files", c2.Seq, c2.GuestPauseMS)
	if err := vm.Stop(ctx); err != nil {
		return nil, err
	}

	r, err := capture.OpenRepositoryForReading(repo, name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	m1, err := r.Manifest(st.Seq1)
	if err != nil {
		return nil, err
	}
	m2, err := r.Manifest(st.Seq2)
	if err != nil {
		return nil, err
	}
	sc := &Scenario{Name: name, VM: st}
	oldDir, newDir := filepath.Join(dir, "old"), filepath.Join(dir, "new")
	for _, x := range []struct {
		m   *capture.Manifest
		dir string
	}{{m1, oldDir}, {m2, newDir}} {
		if err := exportCheckpoint(ctx, r, x.m, x.dir); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	for _, f := range checkpointFiles(m2) {
		sc.Files = append(sc.Files, FilePair{Name: f, Old: filepath.Join(oldDir, f), New: filepath.Join(newDir, f)})
	}
	st.Stream2, st.Disk2 = filepath.Join(newDir, streamFile), filepath.Join(newDir, diskFile(m2.Disks[0]))
	if sc.Oracle, sc.ChangedBytes, err = CheckpointOracle(ctx, r, m1, m2); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	progress("%d bytes in changed 4 KiB blocks and pages, %d after zstd", sc.ChangedBytes, sc.Oracle)
	return sc, nil
}

// streamFile is the name of a checkpoint's migration stream as a file.
const streamFile = "vm.stream"

func diskFile(d capture.Disk) string { return d.Name + ".raw" }

// checkpointFiles names the files exportCheckpoint writes for m.
func checkpointFiles(m *capture.Manifest) []string {
	out := []string{streamFile}
	for _, d := range m.Disks {
		out = append(out, diskFile(d))
	}
	return out
}

// exportCheckpoint writes checkpoint m as the files a user without ntc
// would keep: the migration stream QEMU writes for `migrate
// "exec:cat > vm.stream"` of the paused guest (every page once, in block
// order: migstream's canonical layout) and each disk as a raw image
// (sparse).
func exportCheckpoint(ctx context.Context, r *capture.Repository, m *capture.Manifest, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	s, src, err := r.Stream(ctx, m)
	if err != nil {
		return err
	}
	s.Layout = migstream.CanonicalLayout(s.Blocks, s.PageSize())
	f, err := os.Create(filepath.Join(dir, streamFile))
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := migstream.Join(ctx, bw, s, src); err != nil {
		f.Close()
		return fmt.Errorf("write checkpoint %d's stream: %w", m.Seq, err)
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	for _, d := range m.Disks {
		img, err := r.Image(ctx, m.Seq, d.Index)
		if err != nil {
			return err
		}
		if err := writeSparse(ctx, filepath.Join(dir, diskFile(d)), img, d.Size); err != nil {
			return fmt.Errorf("write checkpoint %d's disk %s: %w", m.Seq, d.Name, err)
		}
	}
	return nil
}

// writeSparse writes size bytes of r to path, leaving all-zero MiBs as holes.
func writeSparse(ctx context.Context, path string, r io.ReaderAt, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			f.Close()
			return err
		}
		b := buf[:min(int64(len(buf)), size-off)]
		if _, err := r.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
			f.Close()
			return err
		}
		if zero.Is(b) {
			continue
		}
		if _, err := f.WriteAt(b, off); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// CheckpointOracle returns the zstd-compressed size and the raw size of
// the 4 KiB blocks of m2 that differ from m1 at the same place: in each
// disk, each RAM block (by name; a block m1 lacks counts whole) and the
// device state.
func CheckpointOracle(ctx context.Context, r *capture.Repository, m1, m2 *capture.Manifest) (oracle, changed int64, err error) {
	// The images to compare: index names in m1 ("" if m1 lacks it) and
	// m2, and the size.
	type pair struct {
		old, new string
		size     int64
	}
	var pairs []pair
	for _, d := range m2.Disks {
		p := pair{new: d.Index, size: d.Size}
		for _, o := range m1.Disks {
			if o.Name == d.Name {
				p.old = o.Index
			}
		}
		pairs = append(pairs, p)
	}
	for _, b := range m2.RAM {
		p := pair{new: b.Index, size: b.Size}
		for _, o := range m1.RAM {
			if o.Name == b.Name {
				p.old = o.Index
			}
		}
		pairs = append(pairs, p)
	}
	pairs = append(pairs, pair{old: m1.DeviceState.Index, new: m2.DeviceState.Index, size: m2.DeviceState.Size})
	for _, p := range pairs {
		var old io.ReaderAt
		if p.old != "" {
			if old, err = r.Image(ctx, m1.Seq, p.old); err != nil {
				return 0, 0, err
			}
		}
		img, err := r.Image(ctx, m2.Seq, p.new)
		if err != nil {
			return 0, 0, err
		}
		ranges, err := changedBlocks(ctx, old, img, p.size)
		if err != nil {
			return 0, 0, err
		}
		z, err := debimg.CompressedSize(ctx, img, ranges)
		if err != nil {
			return 0, 0, err
		}
		oracle += z
		for _, rg := range ranges {
			changed += rg.Len
		}
	}
	return oracle, changed, nil
}

// changedBlocks compares the first size bytes of two images 4 KiB block by
// block (old nil reads as zeros, and old may be shorter) and returns the
// blocks of new that differ.
func changedBlocks(ctx context.Context, old, new io.ReaderAt, size int64) ([]debimg.Range, error) {
	const bs = debimg.BlockSize
	ob, nb := make([]byte, 1<<20), make([]byte, 1<<20)
	var out []debimg.Range
	for off := int64(0); off < size; off += int64(len(nb)) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(int64(len(nb)), size-off)
		if _, err := new.ReadAt(nb[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		clear(ob[:n])
		if old != nil {
			if _, err := old.ReadAt(ob[:n], off); err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
		}
		for b := int64(0); b < n; b += bs {
			e := min(b+bs, n)
			if bytes.Equal(ob[b:e], nb[b:e]) {
				continue
			}
			if k := len(out) - 1; k >= 0 && out[k].End() == off+b {
				out[k].Len += e - b
			} else {
				out = append(out, debimg.Range{Off: off + b, Len: e - b})
			}
		}
	}
	return out, nil
}
