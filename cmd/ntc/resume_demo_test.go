package main

import (
	"encoding/json"
	"testing"

	"github.com/ntc-project/ntc/internal/testguest/guesttest"
)

// TestDemoVM runs 'ntc demo --vm': the live test guest checkpointed twice,
// pushed, resumed, and counting on from the checkpoint.
func TestDemoVM(t *testing.T) {
	guesttest.SkipIfNoQEMU(t)
	code, out, errs := ntc(t, t.Context(), "--json", "demo", "--vm")
	if code != 0 {
		t.Fatalf("demo --vm: exit %d: %s", code, errs)
	}
	var res demoVMJSON
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("demo --vm --json printed %q: %v", out, err)
	}
	t.Logf("%+v", res)
	if len(res.Checkpoints) != 2 || res.Booted || len(res.CopyTicks) < 3 || res.ResumeMS <= 0 {
		t.Fatalf("demo --vm: %+v", res)
	}
	if c := res.CopyTicks[0]; c < res.CheckpointTick || c > res.CheckpointTick+1 {
		t.Errorf("the copy's first tick is %d, the checkpoint's %d", c, res.CheckpointTick)
	}
	if first, second := res.Checkpoints[0].WireBytes, res.Checkpoints[1].WireBytes; second*5 > first {
		t.Errorf("the second push moved %d bytes, the first %d: more than a fifth", second, first)
	}
	// The way back: an incremental checkpoint of the copy, a delta against
	// what the office holds, a tenth of the way out at most.
	if b := res.Back; b.DiskMode != "incremental" || !b.Base || b.WireBytes*10 > res.Checkpoints[0].WireBytes {
		t.Errorf("the way back: %+v; the way out moved %d bytes", b, res.Checkpoints[0].WireBytes)
	}
}
