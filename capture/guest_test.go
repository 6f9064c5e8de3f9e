package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/capture/migstream"
	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/internal/testguest/guesttest"

	"github.com/ntc-project/ntc/qemu"
)

// These tests checkpoint the test guest (internal/testguest) under QEMU TCG.
// They need QEMU and qemu-img; the background-snapshot method also needs
// userfaultfd write-protect (root).

// uffdAvailable reports whether QEMU may use userfaultfd write-protect.
func uffdAvailable() bool {
	if os.Geteuid() == 0 {
		return true
	}
	b, _ := os.ReadFile("/proc/sys/vm/unprivileged_userfaultfd")
	return string(bytes.TrimSpace(b)) == "1"
}

func skipUnlessUserfaultfd(tb testing.TB) {
	tb.Helper()
	if !uffdAvailable() {
		tb.Skip("QEMU's background snapshot needs userfaultfd write-protect: run as root or set vm.unprivileged_userfaultfd=1")
	}
}

// startGuest boots the test guest and waits for its first ticks.
func startGuest(tb testing.TB, opts testguest.StartOptions) *testguest.VM {
	tb.Helper()
	guesttest.SkipIfNoQEMU(tb)
	if opts.Dir == "" {
		// Short: the QMP socket path must fit in 107 bytes.
		dir, err := os.MkdirTemp("", "ntcc-")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { os.RemoveAll(dir) })
		opts.Dir = dir
	}
	vm := guesttest.Start(tb, opts)
	ctx, cancel := context.WithTimeout(tb.Context(), 2*time.Minute)
	defer cancel()
	if _, err := vm.WaitTick(ctx, 2); err != nil {
		tb.Fatal(err)
	}
	return vm
}

func testConfig(tb testing.TB, vm *testguest.VM, dir string) Config {
	return Config{QMP: vm.QMPPath(), Dir: dir, Logger: testLogger(tb)}
}

// testLogger logs a checkpoint's steps into the test's output.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func checkpointTB(tb testing.TB, cfg Config) *Result {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 5*time.Minute)
	defer cancel()
	res, err := Checkpoint(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

// waitTicking fails tb unless the guest prints n more ticks.
func waitTicking(tb testing.TB, vm ticker, n int) int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), time.Minute)
	defer cancel()
	last := vm.LastTick()
	got, err := vm.WaitTick(ctx, last+n)
	if err != nil {
		tb.Fatalf("guest stopped ticking after tick %d: %v", last, err)
	}
	return got
}

// guestStatus returns the guest's run state through a fresh QMP session.
func guestStatus(tb testing.TB, path string) runState {
	tb.Helper()
	s, err := qemu.Dial(tb.Context(), path, qemu.DialOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	st, err := queryStatus(tb.Context(), s)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// readRepo opens the repository in dir for reading, as it is now (a
// reader sees the chunks stored when it opened), until the test ends.
func readRepo(tb testing.TB, dir string) *Repository {
	tb.Helper()
	r, err := OpenRepositoryForReading(dir, DefaultSet)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := r.Close(); err != nil {
			tb.Error(err)
		}
	})
	return r
}

func diskTickOf(tb testing.TB, repo *Repository, m *Manifest) int {
	tb.Helper()
	img, err := readRepo(tb, repo.Dir()).Image(tb.Context(), m.Seq, m.Disks[0].Index)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := testguest.ReadDiskTickAt(img)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// testDiskMiB is the size of the guest disk in TestCheckpointGuest: small,
// so that comparing it whole stays quick under the race detector.
const testDiskMiB = 16

// TestCheckpointGuest takes two checkpoints of a guest that writes its disk
// and RAM, with each method, and checks them against what QEMU and
// qemu-img say.
func TestCheckpointGuest(t *testing.T) {
	for _, m := range []Method{MethodPrecopy, MethodBackground} {
		t.Run(string(m), func(t *testing.T) { testCheckpointGuest(t, m) })
	}
}

func testCheckpointGuest(t *testing.T, method Method) {
	if method == MethodBackground {
		skipUnlessUserfaultfd(t)
	}
	vm := startGuest(t, testguest.StartOptions{DiskBusyMiB: 1, BusyMiB: 8, DiskSizeMiB: testDiskMiB})
	dir := t.TempDir()
	cfg := testConfig(t, vm, dir)
	cfg.Method = method

	before := vm.LastTick()
	res1 := checkpointTB(t, cfg)
	// The first checkpoint stores everything and takes seconds: the guest
	// ticks meanwhile.
	if during := vm.LastTick(); res1.Stats.DurationMS > 3000 && during <= before {
		t.Errorf("no tick during a %.0f ms checkpoint (last tick %d before and after)", res1.Stats.DurationMS, before)
	}
	after := waitTicking(t, vm, 2)
	m1 := res1.Manifest
	t.Logf("checkpoint 1: %+v", res1.Stats)
	repo := readRepo(t, dir)
	if tick := diskTickOf(t, repo, m1); tick < before || tick > after {
		t.Errorf("checkpoint 1 disk holds tick %d, want between %d (seen before) and %d (seen after)", tick, before, after)
	}
	if m1.Seq != 1 || m1.Parent != 0 || res1.Stats.DiskMode != "full" || m1.Method != method {
		t.Errorf("checkpoint 1: seq %d parent %d mode %s", m1.Seq, m1.Parent, res1.Stats.DiskMode)
	}
	checkManifest(t, vm, m1)

	// Checkpoint 2 reads only the frozen overlay's extents.
	waitTicking(t, vm, 2)
	before = vm.LastTick()
	res2 := checkpointTB(t, cfg)
	after = waitTicking(t, vm, 2)
	m2, st := res2.Manifest, res2.Stats
	t.Logf("checkpoint 2: %+v", st)
	if tick := diskTickOf(t, repo, m2); tick < before || tick > after {
		t.Errorf("checkpoint 2 disk holds tick %d, want between %d and %d", tick, before, after)
	}
	if m2.Seq != 2 || m2.Parent != 1 || st.DiskMode != "incremental" {
		t.Fatalf("checkpoint 2: seq %d parent %d mode %s", m2.Seq, m2.Parent, st.DiskMode)
	}
	// The guest rewrites 1 MiB plus the tick sector: whole 64 KiB clusters.
	if st.DiskBytesChanged < 64<<10 || st.DiskBytesChanged > 4<<20 {
		t.Errorf("disk_bytes_changed %d, want the guest's writes (≈1 MiB)", st.DiskBytesChanged)
	}
	if limit := 2*st.DiskBytesChanged + 64<<10; st.DiskBytesRead > limit {
		t.Errorf("disk_bytes_read %d, want at most 2×changed + a cluster = %d", st.DiskBytesRead, limit)
	}
	if st.Committed != 1 || st.CommitError != "" {
		t.Errorf("committed %d overlays (error %q), want 1", st.Committed, st.CommitError)
	}

	// After the commit, the base image holds exactly the disk as of
	// checkpoint 2 (the guest writes to the newest overlay).
	raw := filepath.Join(t.TempDir(), "disk.raw")
	if _, err := qemuImg(t.Context(), "convert", "-f", "qcow2", "-O", "raw", vm.DiskPath(), raw); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	img, err := readRepo(t, dir).Image(t.Context(), 2, m2.Disks[0].Index)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, img.Size())
	if _, err := img.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("disk of checkpoint 2 from the store differs from qemu-img convert of the chain (%d vs %d bytes)", len(got), len(want))
	}
	full, _, err := chunk.Build(t.Context(), chunk.Bytes(want), chunk.DefaultCDC(), chunk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	incr, err := repo.Index(2, m2.Disks[0].Index)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(full, incr) {
		t.Error("incremental disk index of checkpoint 2 differs from a full index of the same content")
	}
	checkChanges(t, repo, m1, m2)

	// The chain is base + one overlay, recorded in state.json.
	rst, err := repo.loadState()
	if err != nil || rst == nil || len(rst.Disks) != 1 {
		t.Fatalf("state: %+v, %v", rst, err)
	}
	if d := rst.Disks[0]; d.Seq != 2 || len(d.Overlays) != 1 || d.Base.File != vm.DiskPath() || d.Overlays[0].Created != 2 {
		t.Errorf("state after checkpoint 2: %+v", d)
	}

	// RAM and device state join back into a stream the parser reads as
	// the original.
	checkStreamRoundTrip(t, repo, m2)
	waitTicking(t, vm, 1)
}

func checkManifest(t *testing.T, vm *testguest.VM, m *Manifest) {
	t.Helper()
	mc := m.Machine
	if mc.Type != "pc-i440fx-7.2" || mc.Arch != "x86_64" || mc.RAM.Size != 256<<20 || mc.CPU.Count != 1 || mc.CPU.Model != "qemu64" {
		t.Errorf("machine %q (%s), %d bytes, %d %s CPUs", mc.Type, mc.Arch, mc.RAM.Size, mc.CPU.Count, mc.CPU.Model)
	}
	if len(mc.Devices) != 1 || mc.Devices[0].Driver != "virtio-blk-pci" || mc.Devices[0].Props["drive"] != testguest.DiskNode ||
		mc.Kernel == nil || mc.Kernel.Kernel.SHA256 == "" || len(mc.Serials) != 1 || len(mc.Unsupported) != 0 {
		t.Errorf("description %+v", mc)
	}
	// A description, not a command line: no path of the source in it.
	if b, _ := json.Marshal(mc); strings.Contains(string(b), vm.Dir()) || strings.Contains(string(b), "/") {
		t.Errorf("the machine description names a path: %s", b)
	}
	if m.QEMUVersion == "" || m.Stream.Machine != m.Machine.Type {
		t.Errorf("qemu %q, stream machine %q", m.QEMUVersion, m.Stream.Machine)
	}
	if len(m.Disks) != 1 {
		t.Fatalf("disks %+v", m.Disks)
	}
	d := m.Disks[0]
	if d.Name != "disk-vda" || d.Node != testguest.DiskNode || d.Device != testguest.DiskDevice || d.Index != "disk-vda.idx" || d.Size != testDiskMiB<<20 || d.File != vm.DiskPath() {
		t.Errorf("disk %+v", d)
	}
	found := false
	for _, r := range m.RAM {
		if r.Name == "pc.ram" {
			found = r.Index == "ram-pc.ram.idx" && r.Size == 256<<20
		}
	}
	if !found {
		t.Errorf("no 256 MiB pc.ram in %+v", m.RAM)
	}
	if m.GuestPauseMS <= 0 || m.Stats.RAMBytes < 256<<20 || m.Stats.RAMPagesNew == 0 {
		t.Errorf("stats %+v", m.Stats)
	}
}

// checkStreamRoundTrip joins checkpoint m's stream from the repository,
// parses it again, and compares pages, layout and device state.
func checkStreamRoundTrip(t *testing.T, repo *Repository, m *Manifest) {
	t.Helper()
	ctx := t.Context()
	repo = readRepo(t, repo.Dir())
	s, src, err := repo.Stream(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(migstream.Join(ctx, pw, s, src)) }()
	sink := newRAMSink(ctx, repo.Store(), 0, 0)
	got, err := migstream.Parse(ctx, pr, sink)
	if ferr := sink.finish(); err == nil {
		err = ferr
	}
	if err != nil {
		t.Fatal(err)
	}
	if n := len(sink.newIDs()); n != 0 {
		t.Errorf("the joined stream holds %d pages the store lacked", n)
	}
	if !reflect.DeepEqual(got.Blocks, s.Blocks) || !reflect.DeepEqual(got.Config, s.Config) || got.RAM != s.RAM || got.Footers != s.Footers {
		t.Error("the joined stream's header or block list differs from the stored one")
	}
	// A page sent more than once (precopy resends what the guest
	// dirtied) is joined with its final content, so a PAGE record that
	// carried zeros when it was first sent may now carry data: only the
	// order of the records is kept, not that flag.
	if m.Stats.RAMPagesResent == 0 && !reflect.DeepEqual(got.Layout, s.Layout) {
		t.Error("the joined stream's record layout differs from the stored one")
	}
	if !reflect.DeepEqual(layoutRecords(got.Layout), layoutRecords(s.Layout)) {
		t.Error("the joined stream's records are not in the stored order")
	}
	if !bytes.Equal(got.Devices, s.Devices) || !bytes.Equal(got.Description, s.Description) {
		t.Error("the joined stream's device state differs from the stored one")
	}
	for i, b := range sink.blocks {
		want, err := repo.Index(m.Seq, m.RAM[i].Index)
		if err != nil {
			t.Fatal(err)
		}
		if m.RAM[i].Name != b.name || !reflect.DeepEqual(b.idx.Index(), want) {
			t.Errorf("RAM block %q: the joined stream's pages differ from the stored index", b.name)
		}
	}
}

// layoutRecords expands a layout into its records (section, block, page,
// named), without the ForcePage flag.
func layoutRecords(l migstream.Layout) [][4]int64 {
	var out [][4]int64
	for i, sec := range l.Sections {
		for _, r := range sec.Runs {
			for k := range r.Count {
				named := int64(0)
				if r.Named && k == 0 {
					named = 1
				}
				out = append(out, [4]int64{int64(i), int64(r.Block), r.Page + k, named})
			}
		}
	}
	return out
}

// checkChanges checks the extents checkpoint m2 recorded as written since
// m1: they add up to what its stats say, every chunk of m2's disk index
// that m1's lacks overlaps them, and ChangedSince finds m1 from m2.
func checkChanges(t *testing.T, repo *Repository, m1, m2 *Manifest) {
	t.Helper()
	d := &m2.Disks[0]
	rs, ok, err := repo.Changes(m2.Seq, d)
	if err != nil || !ok {
		t.Fatalf("changes of checkpoint %d: %v, %v", m2.Seq, ok, err)
	}
	var n int64
	for _, r := range rs {
		n += r.Len
	}
	if n != d.BytesChanged || n == 0 {
		t.Errorf("recorded changes add up to %d bytes, the manifest says %d", n, d.BytesChanged)
	}
	x1, err := repo.Index(m1.Seq, m1.Disks[0].Index)
	if err != nil {
		t.Fatal(err)
	}
	x2, err := repo.Index(m2.Seq, d.Index)
	if err != nil {
		t.Fatal(err)
	}
	old := map[chunk.Entry]bool{}
	for _, e := range x1.Entries {
		old[e] = true
	}
	// New entries come in runs around the changes: a change re-cuts the
	// chunks (and the zero runs) next to it, so a run of new entries must
	// overlap or touch a recorded change; a run that does neither was
	// read where nothing changed.
	for i := 0; i < len(x2.Entries); i++ {
		if old[x2.Entries[i]] {
			continue
		}
		j := i
		for j+1 < len(x2.Entries) && !old[x2.Entries[j+1]] {
			j++
		}
		from, to := x2.Entries[i].Offset, x2.Entries[j].End()
		hit := false
		for _, r := range rs {
			hit = hit || (r.Off <= to && from <= r.End())
		}
		if !hit {
			t.Errorf("entries %+v to %+v are new in checkpoint %d but neither overlap nor touch a recorded change", x2.Entries[i], x2.Entries[j], m2.Seq)
		}
		i = j
	}
	base, changed, ok, err := repo.ChangedSince(m2, d.Name, func(x *chunk.Index) bool { return reflect.DeepEqual(x, x1) })
	if err != nil || !ok || !reflect.DeepEqual(base, x1) || !reflect.DeepEqual(changed, rs) {
		t.Errorf("ChangedSince(checkpoint %d) = %v, %v, %v; want checkpoint %d's index and the recorded changes", m2.Seq, ok, err, changed, m1.Seq)
	}
	if _, _, ok, err := repo.ChangedSince(m1, d.Name, func(*chunk.Index) bool { return true }); ok || err != nil {
		t.Errorf("ChangedSince(the first checkpoint) = %v, %v; want not found", ok, err)
	}
}

// TestMethodAuto checks the default method's choice: precopy for guest RAM
// on 4 KiB pages, a background snapshot for RAM on huge pages (where the
// host has them free), the guest ticking on.
func TestMethodAuto(t *testing.T) {
	for _, tc := range []struct {
		mem  testguest.Memory
		want Method
	}{
		{testguest.MemoryShared, MethodPrecopy},
		{testguest.MemoryHugePages, MethodBackground},
	} {
		t.Run(string(tc.mem), func(t *testing.T) {
			if tc.mem == testguest.MemoryHugePages {
				skipUnlessUserfaultfd(t)
				if free := testguest.HugePagesFree(); free < testguest.DefaultMemoryMiB {
					t.Skipf("%d MiB of huge pages free, the guest needs %d (as root: echo %d > /proc/sys/vm/nr_hugepages)",
						free, testguest.DefaultMemoryMiB, testguest.DefaultMemoryMiB/2)
				}
			}
			vm := startGuest(t, testguest.StartOptions{Memory: tc.mem})
			want := tc.want
			if s, err := qemu.Dial(t.Context(), vm.QMPPath(), qemu.DialOptions{}); err != nil {
				t.Fatal(err)
			} else {
				// Precopy can lose writes here (TCG before QEMU 9.0):
				// a background snapshot, if userfaultfd allows it.
				if precopyLosesWrites(t.Context(), s) && uffdAvailable() {
					want = MethodBackground
				}
				s.Close()
			}
			res := checkpointTB(t, testConfig(t, vm, t.TempDir()))
			if res.Manifest.Method != want {
				t.Errorf("method %q, want %q", res.Manifest.Method, want)
			}
			waitTicking(t, vm, 1)
		})
	}
}

func TestRAMOnHugePages(t *testing.T) {
	const header = "              Block Name    PSize              Offset               Used              Total                HVA  RO\n"
	// QEMU 8.0 and later.
	row := func(name, psize string, used int64, ro string) string {
		return fmt.Sprintf("%24s %8s  0x%016x 0x%016x 0x%016x 0x%016x %3s\n", name, psize, 0, used, used, 0x7f0000000000, ro)
	}
	// QEMU 7.2: no host address or ro/rw column.
	const header72 = "              Block Name    PSize              Offset               Used              Total\n"
	row72 := func(name, psize string, used int64) string {
		return fmt.Sprintf("%24s %8s  0x%016x 0x%016x 0x%016x\n", name, psize, 0, used, used)
	}
	for _, tc := range []struct {
		name     string
		table    string
		huge, ok bool
	}{
		{"huge", header + row("pc.ram", "2 MiB", 256<<20, "rw") + row("pc.bios", "4 KiB", 256<<10, "ro") + row("/rom@etc/acpi/tables", "4 KiB", 128<<10, "rw"), true, true},
		{"small", header + row("pc.ram", "4 KiB", 256<<20, "rw"), false, true},
		{"vram on small pages", header + row("pc.ram", "2 MiB", 256<<20, "rw") + row("vga.vram", "4 KiB", 16<<20, "rw"), false, true},
		{"7.2 huge", header72 + row72("pc.ram", "2 MiB", 256<<20) + row72("pc.bios", "4 KiB", 256<<10) + row72("/rom@etc/acpi/tables", "4 KiB", 128<<10), true, true},
		{"7.2 small", header72 + row72("pc.ram", "4 KiB", 256<<20) + row72("pc.bios", "4 KiB", 256<<10), false, true},
		{"read-only on small pages", header + row("pc.ram", "2 MiB", 256<<20, "rw") + row("flash", "4 KiB", 4<<20, "ro"), true, true},
		{"empty", "", false, false},
		{"garbage", header + "a b c d e f g h\n", false, false},
	} {
		if huge, ok := ramOnHugePages(tc.table); huge != tc.huge || ok != tc.ok {
			t.Errorf("%s: ramOnHugePages = %v, %v; want %v, %v", tc.name, huge, ok, tc.huge, tc.ok)
		}
	}
}
