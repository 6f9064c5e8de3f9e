package libvirttest

import (
	"context"
	"maps"
	"testing"
	"time"
)

func TestParseBlockList(t *testing.T) {
	out := " Target   Source\n------------------------------\n vda      /tmp/x/disk.qcow2\n hdc      -\n\n"
	want := map[string]string{"vda": "/tmp/x/disk.qcow2", "hdc": "-"}
	if got := parseBlockList(out); !maps.Equal(got, want) {
		t.Fatalf("parseBlockList = %v, want %v", got, want)
	}
}

// TestDomain boots the test guest as a libvirt domain: it ticks, and
// libvirt reports the disk the harness gave it.
func TestDomain(t *testing.T) {
	Daemon(t)
	d := StartDomain(t, DomainOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := d.WaitTick(ctx, d.LastTick()+2); err != nil {
		t.Fatal(err)
	}
	bl, err := d.BlockList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bl[DiskTarget] != d.Disk {
		t.Fatalf("domblklist %v, want %s on %s", bl, DiskTarget, d.Disk)
	}
}
