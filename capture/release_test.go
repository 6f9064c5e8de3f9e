package capture

import (
	"os"
	"testing"

	"github.com/ntc-project/ntc/internal/testguest"
)

// TestRelease: after two checkpoints the guest writes to ntc's overlay;
// Release merges it back live, so the guest writes to its own image again
// (the overlay file is gone, the image holds the guest's latest disk tick),
// the guest ticks on, and the next checkpoint reads the disk in full.
func TestRelease(t *testing.T) {
	vm := startGuest(t, testguest.StartOptions{DiskBusyMiB: 1})
	dir := t.TempDir()
	cfg := testConfig(t, vm, dir)
	checkpointTB(t, cfg)
	waitTicking(t, vm, 1)
	checkpointTB(t, cfg)
	overlays := overlayFiles(t, vm)
	if len(overlays) == 0 {
		t.Fatal("no ntc overlay next to the disk after two checkpoints")
	}

	rel, err := Release(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rel.Disks) != 1 || rel.Overlays < 1 {
		t.Fatalf("released %+v, want the one disk", rel)
	}
	for _, f := range overlays {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("overlay %s is still there", f)
		}
	}
	if chain := liveChain(t, vm); len(chain) != 1 || chain[0].File != vm.DiskPath() {
		t.Fatalf("the guest's disk chain after release: %+v; want its own image %s alone", chain, vm.DiskPath())
	}
	// The guest writes to its own image: its disk tick goes on there.
	tick := waitTicking(t, vm, 2)
	if got, err := testguest.ReadDiskTick(t.Context(), vm.DiskPath()); err != nil || got < tick-2 {
		t.Errorf("the guest's own image says tick %d (%v); it printed %d", got, err, tick)
	}
	res := checkpointTB(t, cfg)
	if res.Stats.DiskMode != "full" {
		t.Errorf("the checkpoint after release read the disk %s, want in full", res.Stats.DiskMode)
	}
	waitTicking(t, vm, 1)
}
