package testguest_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/internal/testguest/guesttest"
	"github.com/ntc-project/ntc/qemu"
)

// waitCtx bounds one wait on a guest: TCG on a loaded CI machine is slow, so
// generous, but a hung guest still fails the test instead of the run.
func waitCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestBuildCached(t *testing.T) {
	guesttest.SkipIfNoQEMU(t)
	g := guesttest.Build(t)
	for _, p := range []string{g.Kernel, g.Initrd} {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Fatalf("guest file %s: %v", p, err)
		}
	}
	if !strings.HasPrefix(g.KernelPackage, "linux-image-") || !strings.HasSuffix(g.KernelRelease, "-cloud-amd64") {
		t.Errorf("kernel %s (%s): want a Debian cloud kernel", g.KernelPackage, g.KernelRelease)
	}
	// The disk driver must come after what it depends on.
	blk, pci := slices.Index(g.Modules, "virtio_blk"), slices.Index(g.Modules, "virtio_pci")
	if blk < 0 || pci < 0 || slices.Index(g.Modules, "virtio") > min(blk, pci) {
		t.Errorf("modules %v: want virtio before virtio_pci and virtio_blk", g.Modules)
	}
	again := guesttest.Build(t)
	if again.Kernel != g.Kernel || again.Initrd != g.Initrd || !again.Built.Equal(g.Built) {
		t.Fatalf("second Build = %+v; want the cached %+v", again, g)
	}
}

// TestBuildConcurrent builds into an empty cache from several goroutines at
// once (separate lock file descriptors, as separate processes would have):
// one build, the same result for all.
func TestBuildConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads the kernel package again: skipped in -short mode")
	}
	guesttest.SkipIfNoQEMU(t)
	cache := t.TempDir()
	var wg sync.WaitGroup
	guests := make([]*testguest.Guest, 3)
	errs := make([]error, len(guests))
	for i := range guests {
		wg.Go(func() { guests[i], errs[i] = testguest.Build(t.Context(), testguest.Options{CacheDir: cache}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("build %d: %v", i, err)
		}
		if guests[i].Dir != guests[0].Dir || !guests[i].Built.Equal(guests[0].Built) {
			t.Fatalf("build %d = %+v; want %+v", i, guests[i], guests[0])
		}
	}
	entries, err := os.ReadDir(cache)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{".lock", filepath.Base(guests[0].Dir)}; !slices.Equal(names, want) {
		t.Fatalf("cache holds %v; want %v (no leftover build directories)", names, want)
	}
}

func TestBuildFailsClearly(t *testing.T) {
	if testing.Short() {
		t.Skip("asks apt: skipped in -short mode")
	}
	guesttest.SkipIfNoQEMU(t)
	_, err := testguest.Build(t.Context(), testguest.Options{CacheDir: t.TempDir(), KernelPackage: "linux-image-0.0.0-no-such-cloud-amd64"})
	var ce *testguest.CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("Build with a missing package = %v; want a *CommandError", err)
	}
	t.Log(err)
	if msg := err.Error(); !strings.Contains(msg, "apt-get download") || !strings.Contains(msg, "linux-image-0.0.0-no-such-cloud-amd64") {
		t.Fatalf("error %q does not name the command and package", msg)
	}
}

var busyPass2 = regexp.MustCompile(`^ntc: busy pass 2$`)

var readyLine = regexp.MustCompile(`^ntc: ready busy=(\d+) diskbusy=(\d+) disk=(\w+) memavail=(\d+)M$`)

// TestBoot boots the guest with a NIC, sees ticks count up one by one on the
// console, talks to QMP, stops the guest and finds at least the last tick it
// saw on the disk image.
func TestBoot(t *testing.T) {
	vm := guesttest.Start(t, testguest.StartOptions{NIC: true})
	ctx := waitCtx(t)
	start := time.Now()
	ready, err := vm.WaitSerial(ctx, readyLine)
	if err != nil {
		t.Fatal(err)
	}
	if ready[3] != "vda" {
		t.Fatalf("guest found no disk: %q", ready[0])
	}
	if _, err := vm.WaitTick(ctx, 1); err != nil {
		t.Fatal(err)
	}
	t.Logf("first tick %v after QMP was up; guest has %s MiB available", time.Since(start).Round(time.Millisecond), ready[4])

	mark := vm.SerialLines()
	seen, err := vm.WaitTick(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	// The ticks count up by one, whatever else the console prints.
	prev := 0
	for _, line := range vm.Serial() {
		if m := testguest.TickLine.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			if n != prev+1 {
				t.Fatalf("tick %d follows tick %d", n, prev)
			}
			prev = n
		}
		if strings.HasPrefix(line, "ntc: error") {
			t.Fatalf("guest reported %q", line)
		}
	}
	if _, n, err := vm.WaitSerialFrom(ctx, mark, testguest.TickLine); err != nil || n < mark {
		t.Fatalf("WaitSerialFrom(%d) = line %d, %v", mark, n, err)
	}

	if got := qmpStatus(t, vm.QMPPath()); got != "running" {
		t.Fatalf("QMP query-status = %q; want running", got)
	}
	if rss, err := vm.RSS(); err != nil {
		t.Error(err)
	} else {
		t.Logf("QEMU RSS %d MiB", rss>>20)
	}
	argv := strings.Join(vm.Argv(), " ")
	for _, want := range []string{"-machine pc,accel=tcg", "-m 256", "node-name=disk0", "virtio-blk-pci,drive=disk0,id=vda", "virtio-net-pci,netdev=n0,id=nic0", "restrict=on", "ntc.busy=0"} {
		if !strings.Contains(argv, want) {
			t.Errorf("argv lacks %q: %s", want, argv)
		}
	}

	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.WaitTick(ctx, 1<<30); !errors.Is(err, testguest.ErrExited) {
		t.Fatalf("WaitTick after Stop = %v; want ErrExited", err)
	}
	seen = max(seen, vm.LastTick())
	onDisk, err := testguest.ReadDiskTick(ctx, vm.DiskPath())
	if err != nil {
		t.Fatal(err)
	}
	if onDisk < seen {
		t.Fatalf("disk holds tick %d; console had shown tick %d", onDisk, seen)
	}
	t.Logf("last console tick %d, disk tick %d", seen, onDisk)
}

// TestBusy keeps 64 MiB of RAM and 8 MiB of disk churning and checks that
// the guest keeps ticking; it is then killed (no clean shutdown) and the disk
// still holds the ticks it showed.
func TestBusy(t *testing.T) {
	vm := guesttest.Start(t, testguest.StartOptions{BusyMiB: 64, DiskBusyMiB: 8})
	ctx := waitCtx(t)
	if m, err := vm.WaitSerial(ctx, readyLine); err != nil {
		t.Fatal(err)
	} else if m[1] != "64" || m[2] != "8" {
		t.Fatalf("guest reports %q; want busy=64 diskbusy=8", m[0])
	}
	for _, re := range []string{`^ntc: busy pass 3$`, `^ntc: diskbusy pass 3$`} {
		if _, err := vm.WaitSerial(ctx, regexp.MustCompile(re)); err != nil {
			t.Fatal(err)
		}
	}
	for _, line := range vm.Serial() {
		if strings.HasPrefix(line, "ntc: error") {
			t.Fatalf("guest reported %q", line)
		}
	}
	last := vm.LastTick()
	seen, err := vm.WaitTick(ctx, last+2)
	if err != nil {
		t.Fatal(err)
	}
	if rss, err := vm.RSS(); err == nil {
		t.Logf("busy guest: tick %d, QEMU RSS %d MiB", seen, rss>>20)
	}
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	onDisk, err := testguest.ReadDiskTick(ctx, vm.DiskPath())
	if err != nil {
		t.Fatal(err)
	}
	if onDisk < seen {
		t.Fatalf("disk holds tick %d; console had shown tick %d", onDisk, seen)
	}
}

// TestRawDisk boots from a raw copy of another guest's disk, the way a
// resumed machine may get its disk back: the record written before is
// readable, and the new guest overwrites it.
func TestRawDisk(t *testing.T) {
	guesttest.SkipIfNoQEMU(t)
	raw := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(raw, testguest.FormatDiskTick(1000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, 16<<20); err != nil {
		t.Fatal(err)
	}
	ctx := waitCtx(t)
	if n, err := testguest.ReadDiskTick(ctx, raw); err != nil || n != 1000 {
		t.Fatalf("ReadDiskTick(raw) = %d, %v; want 1000", n, err)
	}
	vm := guesttest.Start(t, testguest.StartOptions{DiskPath: raw, MemoryMiB: 192})
	if !slices.Contains(vm.Argv(), "driver=raw,file=file0,node-name=disk0") {
		t.Fatalf("argv %q does not attach the disk as raw", vm.Argv())
	}
	seen, err := vm.WaitTick(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := testguest.ReadDiskTick(ctx, raw); err != nil || n < seen || n >= 1000 {
		t.Fatalf("ReadDiskTick(raw) after boot = %d, %v; want %d or more, below 1000", n, err, seen)
	}
}

func TestStartRejects(t *testing.T) {
	for _, opts := range []testguest.StartOptions{
		{BusyMiB: 200},
		{MemoryMiB: 128, BusyMiB: 64},
		{DiskBusyMiB: 64},
		{BusyMiB: -1},
		{Memory: "swap"},
		{Memory: testguest.MemoryHugePages, MemoryMiB: 1 << 20}, // more huge pages than any host has free
	} {
		if vm, err := testguest.Start(t.Context(), opts); err == nil {
			vm.Close()
			t.Errorf("Start(%+v) succeeded; want an error", opts)
		}
	}
}

func TestStartFailsWithQEMUsWords(t *testing.T) {
	guesttest.SkipIfNoQEMU(t)
	_, err := testguest.Start(waitCtx(t), testguest.StartOptions{Guest: guesttest.Build(t), ExtraArgs: []string{"-device", "no-such-device"}})
	if !errors.Is(err, testguest.ErrExited) || !strings.Contains(err.Error(), "no-such-device") {
		t.Fatalf("Start with a bad device = %v; want ErrExited with QEMU's message", err)
	}
	t.Log(err)
}

// qmpStatus asks QMP for the run state.
func qmpStatus(t *testing.T, path string) string {
	t.Helper()
	s, err := qemu.Dial(t.Context(), path, qemu.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var st struct{ Status string }
	if err := s.Run(t.Context(), "query-status", nil, &st); err != nil {
		t.Fatal(err)
	}
	return st.Status
}
