package capture

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/internal/testguest/guesttest"

	"github.com/ntc-project/ntc/qemu"
)

var errInjected = errors.New("injected failure")

// liveChain returns the guest disk's chain as QEMU reports it.
func liveChain(t *testing.T, vm *testguest.VM) []chainLayer {
	t.Helper()
	s, err := qemu.Dial(t.Context(), vm.QMPPath(), qemu.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	disks, err := queryDisks(t.Context(), s)
	if err != nil || len(disks) != 1 {
		t.Fatalf("disks %+v, %v", disks, err)
	}
	return disks[0].Chain
}

// overlayFiles lists the ntc overlay files next to the guest's disk.
func overlayFiles(t *testing.T, vm *testguest.VM) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(vm.Dir(), "*.ntc-*.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func chainFiles(chain []chainLayer) []string {
	var out []string
	for _, l := range chain {
		out = append(out, l.File)
	}
	slices.Sort(out)
	return out
}

// TestCheckpointErrors drives one guest through the bad inputs and failures
// a checkpoint must survive: the guest left as it was (running, or paused
// if it was), the chain valid, no checkpoint looking complete that is not.
func TestCheckpointErrors(t *testing.T) {
	vm := startGuest(t, testguest.StartOptions{DiskBusyMiB: 1})
	dir := t.TempDir()
	cfg := testConfig(t, vm, dir)
	w, err := OpenRepository(t.Context(), dir, DefaultSet) // create it, for a reader to open
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	repo := readRepo(t, dir)
	noCheckpoints := func(t *testing.T, want int) {
		t.Helper()
		seqs, err := repo.Checkpoints()
		if err != nil || len(seqs) != want {
			t.Errorf("complete checkpoints %v (%v), want %d", seqs, err, want)
		}
	}

	t.Run("QMP held by another client", func(t *testing.T) {
		holder, err := qemu.Dial(t.Context(), vm.QMPPath(), qemu.DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Close()
		c := cfg
		c.Dial.ConnectTimeout = time.Second
		_, err = Checkpoint(t.Context(), c)
		if !errors.Is(err, qemu.ErrQMPBusy) || !strings.Contains(err.Error(), "another client") {
			t.Errorf("error %v, want ErrQMPBusy saying another client holds it", err)
		}
		noCheckpoints(t, 0)
	})
	waitTicking(t, vm, 1)

	t.Run("paused guest", func(t *testing.T) {
		s, err := qemu.Dial(t.Context(), vm.QMPPath(), qemu.DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Run(t.Context(), "stop", nil, nil); err != nil {
			t.Fatal(err)
		}
		s.Close()
		_, err = Checkpoint(t.Context(), cfg)
		if !errors.Is(err, ErrGuestNotRunning) || !strings.Contains(err.Error(), "paused") {
			t.Errorf("error %v, want ErrGuestNotRunning saying it is paused", err)
		}
		if st := guestStatus(t, vm.QMPPath()); st.Running || st.Status != "paused" {
			t.Errorf("guest %+v after the refusal, want it left paused", st)
		}
		noCheckpoints(t, 0)
		if s, err = qemu.Dial(t.Context(), vm.QMPPath(), qemu.DialOptions{}); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Run(t.Context(), "cont", nil, nil); err != nil {
			t.Fatal(err)
		}
	})
	waitTicking(t, vm, 1)

	res := checkpointTB(t, cfg)
	if res.Manifest.Seq != 1 {
		t.Fatalf("first good checkpoint is %d", res.Manifest.Seq)
	}
	chain := liveChain(t, vm)

	// A failure with the guest paused, before the disks were snapshotted
	// (precopy, in the pre-switchover pause): QEMU's migration is
	// cancelled, the guest resumed, the prepared overlays dropped.
	t.Run("failure while paused, before the snapshot", func(t *testing.T) {
		c := cfg
		c.Method = MethodPrecopy
		c.afterStop = func(*qemu.Session) error { return errInjected }
		failCheckpoint(t, vm, c)
		if got := liveChain(t, vm); !reflect.DeepEqual(got, chain) {
			t.Errorf("chain changed: %+v, was %+v", got, chain)
		}
		var want []string
		for _, f := range chainFiles(chain) {
			if strings.Contains(filepath.Base(f), ".ntc-") {
				want = append(want, f)
			}
		}
		if got := overlayFiles(t, vm); !reflect.DeepEqual(got, want) {
			t.Errorf("overlay files %v, want the chain's %v: a dropped overlay was left behind", got, want)
		}
		noCheckpoints(t, 1)
	})

	// A failure after the disks were snapshotted (background snapshot,
	// guest paused): the new overlay stays in the chain, recorded, and the
	// next checkpoint reads it as a change.
	t.Run("failure while paused, after the snapshot", func(t *testing.T) {
		skipUnlessUserfaultfd(t)
		c := cfg
		c.Method = MethodBackground
		c.afterMigrate = func(*qemu.Session) error { return errInjected }
		failCheckpoint(t, vm, c)
		got := liveChain(t, vm)
		if len(got) != len(chain)+1 || !reflect.DeepEqual(got[1:], chain) {
			t.Errorf("chain %+v, want one more overlay on %+v", got, chain)
		}
		st, err := repo.loadState()
		if err != nil || st == nil || len(st.Disks[0].Overlays) != 2 || st.Disks[0].Seq != 1 {
			t.Errorf("state after the failure: %+v, %v", st, err)
		}
		noCheckpoints(t, 1)

		res := checkpointAfterFailure(t, vm, repo, cfg, 2)
		if res.Stats.Committed != 2 {
			t.Errorf("%d overlays merged, want the one of checkpoint 1 and the failed one", res.Stats.Committed)
		}
	})

	// ntc killed in the pause (precopy, pre-switchover): QEMU holds the
	// guest paused until the next checkpoint cancels the abandoned
	// migration and removes the overlays prepared for it.
	t.Run("ntc killed mid-checkpoint", func(t *testing.T) {
		last, err := repo.Latest()
		if err != nil {
			t.Fatal(err)
		}
		before := overlayFiles(t, vm)
		c := cfg
		c.Method = MethodPrecopy
		c.afterStop = func(*qemu.Session) error { return errSimulatedCrash }
		if _, err := Checkpoint(t.Context(), c); !errors.Is(err, errSimulatedCrash) {
			t.Fatalf("error %v, want the simulated crash", err)
		}
		if st := guestStatus(t, vm.QMPPath()); st.Running {
			t.Errorf("guest %+v after ntc died in the pause; QEMU should hold it until the migration goes on", st)
		}
		if got := overlayFiles(t, vm); len(got) != len(before)+1 {
			t.Fatalf("overlay files %v after the crash, want one prepared beside %v", got, before)
		}
		checkpointAfterFailure(t, vm, repo, cfg, last.Seq+1)
	})

	// QEMU killed in the middle: the repository keeps the earlier
	// checkpoints; the broken one has no manifest and is removed by the
	// next run.
	t.Run("QEMU killed mid-checkpoint", func(t *testing.T) {
		last, err := repo.Latest()
		if err != nil {
			t.Fatal(err)
		}
		c := cfg
		c.afterMigrate = func(*qemu.Session) error { vm.Kill(); return nil }
		_, err = Checkpoint(t.Context(), c)
		if err == nil {
			t.Fatal("checkpoint of a killed QEMU succeeded")
		}
		t.Logf("error: %v", err)
		if m, err := repo.Latest(); err != nil || m.Seq != last.Seq {
			t.Fatalf("latest checkpoint %+v, %v, want %d", m, err, last.Seq)
		}
		if _, err := repo.Manifest(last.Seq + 1); err == nil {
			t.Error("the broken checkpoint was committed")
		}
		_, err = Checkpoint(t.Context(), cfg)
		if err == nil {
			t.Fatal("checkpoint without QEMU succeeded")
		}
		if all, _ := repo.Checkpoints(); all[len(all)-1] != last.Seq {
			t.Errorf("checkpoints %v, want them to end with %d", all, last.Seq)
		}
		diskTickOf(t, repo, last) // still readable
		checkStreamRoundTrip(t, repo, last)
	})
}

// TestCheckpointRefusesUnreadableDisk: a disk format ntc cannot read is
// refused before the guest is touched.
func TestCheckpointRefusesUnreadableDisk(t *testing.T) {
	guesttest.SkipIfNoQEMU(t)
	dir, err := os.MkdirTemp("", "ntcv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	disk := filepath.Join(dir, "disk.vmdk")
	if _, err := qemuImg(t.Context(), "create", "-q", "-f", "vmdk", disk, "64M"); err != nil {
		t.Fatal(err)
	}
	// testguest attaches non-qcow2 images as raw; point it at a vmdk and
	// let QEMU see it as vmdk through ExtraArgs instead.
	vm := startGuestVMDK(t, dir, disk)
	_, err = Checkpoint(t.Context(), testConfig(t, vm, t.TempDir()))
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "vmdk") {
		t.Errorf("error %v, want ErrUnsupported naming vmdk", err)
	}
	if st := guestStatus(t, vm.QMPPath()); !st.Running {
		t.Errorf("guest %+v, want running", st)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.ntc-*")); len(m) != 0 {
		t.Errorf("overlays left behind: %v", m)
	}
}

// startGuestVMDK boots the test guest with a second disk, in vmdk format.
func startGuestVMDK(t *testing.T, dir, disk string) *testguest.VM {
	t.Helper()
	vm := guesttest.Start(t, testguest.StartOptions{Dir: dir, ExtraArgs: []string{
		"-blockdev", "driver=file,filename=" + disk + ",node-name=vfile",
		"-blockdev", "driver=vmdk,file=vfile,node-name=vdisk",
		"-device", "virtio-blk-pci,drive=vdisk,id=vdb",
	}})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if _, err := vm.WaitTick(ctx, 1); err != nil {
		t.Fatal(err)
	}
	return vm
}

// checkpointAfterFailure takes the checkpoint that follows a failed one and
// checks that it is complete, incremental and consistent, and that the
// chain is back to base + the active overlay.
func checkpointAfterFailure(t *testing.T, vm *testguest.VM, repo *Repository, cfg Config, seq int) *Result {
	t.Helper()
	before := vm.LastTick()
	res := checkpointTB(t, cfg)
	after := waitTicking(t, vm, 1)
	if res.Manifest.Seq != seq || res.Stats.DiskMode != "incremental" {
		t.Errorf("checkpoint after the failure: seq %d (want %d), %s", res.Manifest.Seq, seq, res.Stats.DiskMode)
	}
	if tick := diskTickOf(t, repo, res.Manifest); tick < before || tick > after {
		t.Errorf("disk holds tick %d, want between %d and %d", tick, before, after)
	}
	if n := len(liveChain(t, vm)); n != 2 {
		t.Errorf("chain of %d layers after the commit, want 2", n)
	}
	if got := overlayFiles(t, vm); len(got) != 1 {
		t.Errorf("overlay files %v, want only the active one", got)
	}
	return res
}

// failCheckpoint runs a checkpoint whose hook injects a failure and checks
// that the guest runs and ticks afterwards.
func failCheckpoint(t *testing.T, vm *testguest.VM, cfg Config) {
	t.Helper()
	if _, err := Checkpoint(t.Context(), cfg); !errors.Is(err, errInjected) {
		t.Fatalf("error %v, want the injected one", err)
	}
	if st := guestStatus(t, vm.QMPPath()); !st.Running {
		t.Fatalf("guest %+v after a failed checkpoint, want running", st)
	}
	waitTicking(t, vm, 2)
}
