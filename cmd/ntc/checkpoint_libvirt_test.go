package main

import (
	"encoding/json"
	"testing"

	"github.com/ntc-project/ntc/internal/libvirttest"
	"github.com/ntc-project/ntc/internal/testguest"
)

// TestCheckpointLibvirtDomain checkpoints a libvirt-managed guest from the
// command line, twice, as a user would: 'ntc checkpoint --domain NAME'. The
// guest ticks on, the second checkpoint is incremental, and libvirt still
// manages the domain (virsh dumpxml answers, the disk it lists exists).
func TestCheckpointLibvirtDomain(t *testing.T) {
	libvirttest.Daemon(t)
	libvirttest.RequireUserfaultfd(t)
	d := libvirttest.StartDomain(t, libvirttest.DomainOptions{Memory: testguest.PreferHugePages(testguest.DefaultMemoryMiB), DiskBusyMiB: 1})
	ctx := t.Context()
	if _, err := d.WaitTick(ctx, 2); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	n := newNode(t)
	for seq := 1; seq <= 2; seq++ {
		before := d.LastTick()
		c := n.cmd(ctx, "--json", "checkpoint", "--domain", d.Name, "--connect", libvirttest.URI, "--out", out)
		b, err := c.Output()
		if err != nil {
			t.Fatalf("ntc checkpoint --domain: %v: %s", err, b)
		}
		var res checkpointJSON
		if err := json.Unmarshal(b, &res); err != nil {
			t.Fatalf("checkpoint printed %s: %v", b, err)
		}
		t.Logf("checkpoint %d of libvirt domain %s: paused %.1f ms, %s", res.Seq, d.Name, res.GuestPauseMS, res.DiskMode)
		if res.Seq != seq || res.GuestPauseMS <= 0 || (seq == 2 && res.DiskMode != "incremental") {
			t.Errorf("checkpoint %d: %+v", seq, res)
		}
		if _, err := d.WaitTick(ctx, before+2); err != nil {
			t.Fatalf("the guest stopped ticking after checkpoint %d: %v", seq, err)
		}
	}
	blocks, err := d.BlockList(ctx)
	if err != nil || len(blocks) == 0 {
		t.Fatalf("virsh domblklist after the checkpoints: %v, %v", blocks, err)
	}
}
