package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/internal/libvirttest"
	"github.com/ntc-project/ntc/internal/testguest"
)

// TestSyncHandoffLibvirt carries a libvirt-managed guest to another node
// and has it run there as a libvirt domain: a persistent domain that
// rewrites 1 MiB of its disk a second is replicated to home by three
// 'ntc sync VM --to home' while it works (checkpoint and push each), then
// handed off with 'ntc sync VM --to home --handoff' to a real 'ntc serve'
// configured to resume with libvirt (resume.libvirt, resume.connect,
// resume.persistent, resume.libvirt-dir). Both nodes use this machine's
// libvirtd, so the VM's name (the set, which names the copy's domain)
// differs from the original domain's. The copy shows in virsh list,
// running and persistent, and its console goes on from the original's
// last tick with the next one; the original was stopped the libvirt way:
// still defined, shut off (destroyed), on disks its XML names, and virsh
// start boots it again.
func TestSyncHandoffLibvirt(t *testing.T) {
	libvirttest.Daemon(t)
	libvirttest.RequireUserfaultfd(t)
	d := libvirttest.StartDomain(t, libvirttest.DomainOptions{Memory: testguest.PreferHugePages(testguest.DefaultMemoryMiB),
		DiskBusyMiB: 1, NIC: true, Persistent: true})
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	var rnd [4]byte
	rand.Read(rnd[:])
	set := "ntc-lvho-" + hex.EncodeToString(rnd[:])
	if set == d.Name {
		t.Fatalf("the set and the original domain are both named %s", set)
	}
	office, home := newNode(t), newNode(t)
	officeRepo, homeRepo := t.TempDir(), t.TempDir()
	// Home's libvirt copies get their work directories where libvirt's
	// QEMU user passes through.
	copies := libvirtWorkParent(t)
	t.Cleanup(func() {
		c := context.WithoutCancel(ctx)
		libvirttest.Virsh(c, "destroy", set)
		libvirttest.Virsh(c, "undefine", set)
	})
	homeConf := fmt.Sprintf("repo: %s\nresume:\n  libvirt: true\n  connect: %s\n  persistent: true\n  libvirt-dir: %s\n  kernel: %s\n  initrd: %s\n",
		homeRepo, libvirttest.URI, copies, filepath.Join(d.Dir, "vmlinuz"), filepath.Join(d.Dir, "initrd.img"))
	if err := os.WriteFile(filepath.Join(home.home, "ntc.yaml"), []byte(homeConf), 0o600); err != nil {
		t.Fatal(err)
	}
	homeAddr, _ := serveWith(t, home, homeRepo, []string{"--resume-allow", office.id}, office.id)
	officeConf := fmt.Sprintf("repo: %s\nvms:\n  %s: {domain: %s, connect: %q}\npeers:\n  home: {addr: %q, id: %s}\n",
		officeRepo, set, d.Name, libvirttest.URI, homeAddr, home.id)
	if err := os.WriteFile(filepath.Join(office.home, "ntc.yaml"), []byte(officeConf), 0o600); err != nil {
		t.Fatal(err)
	}
	sync := func(args ...string) syncJSON {
		t.Helper()
		out, err := office.cmd(ctx, append([]string{"--json", "sync", set, "--to", "home"}, args...)...).Output()
		if err != nil {
			t.Fatalf("sync %s --to home %v: %v: %s", set, args, err, stderrOf(err))
		}
		var s syncJSON
		if err := json.Unmarshal(out, &s); err != nil {
			t.Fatalf("sync printed %q: %v", out, err)
		}
		return s
	}

	// Three rounds while the guest works: each a checkpoint of the domain
	// pushed home, the guest running on between them.
	var first syncJSON
	for i := range 3 {
		before := d.LastTick()
		s := sync()
		t.Logf("sync %d: checkpoint %d, guest paused %.1f ms, %d bytes on the wire (base %s), ticks %d..%d",
			i+1, s.Seq, s.GuestPauseMS, s.BytesSent, s.Base.Short(), before, d.LastTick())
		if s.Seq != i+1 || s.Handoff || s.Resumed != nil {
			t.Fatalf("sync %d: %+v", i+1, s)
		}
		if i == 0 {
			first = s
		} else if s.Base.IsZero() || s.BytesSent >= first.BytesSent/2 {
			t.Errorf("sync %d sent %d bytes against %q; the first sent %d: want a delta of at most half", i+1, s.BytesSent, s.Base.Short(), first.BytesSent)
		}
		if _, err := d.WaitTick(ctx, d.LastTick()+2); err != nil {
			t.Fatalf("the guest after sync %d: %v", i+1, err)
		}
	}

	// The hand-off: the copy runs at home as a libvirt domain named after
	// the set, the original is stopped by libvirt.
	h := sync("--handoff")
	select {
	case <-d.Ended():
	case <-ctx.Done():
		t.Fatal("the original's console is still connected after the hand-off")
	}
	last := d.LastTick()
	t.Logf("hand-off: checkpoint %d, %d bytes on the wire (base %s), the copy ran %.0f ms after the guest paused: %s",
		h.Seq, h.BytesSent, h.Base.Short(), h.DowntimeMS, h.Resumed.Detail)
	if !h.Handoff || h.Resumed == nil || h.Seq != 4 || h.Base.IsZero() || !strings.Contains(h.Resumed.Detail, "libvirt domain "+set) {
		t.Fatalf("sync --handoff: %+v", h)
	}
	if running, err := libvirttest.Virsh(ctx, "list", "--name", "--state-running"); err != nil ||
		!strings.Contains("\n"+running, "\n"+set+"\n") || strings.Contains("\n"+running, "\n"+d.Name+"\n") {
		t.Fatalf("virsh list --state-running after the hand-off: %q, %v; want %s and not %s", running, err, set, d.Name)
	}
	if info, err := libvirttest.Virsh(ctx, "dominfo", set); err != nil || !regexp.MustCompile(`Persistent:\s+yes`).MatchString(info) {
		t.Errorf("virsh dominfo %s (resume.persistent): %q, %v", set, info, err)
	}
	// Its ticks run on unbroken: the copy's first is the one after the
	// original's last, then one after another.
	lines := waitSerialFile(t, ctx, filepath.Join(copies, set, "serial.log"), 4)
	var ticks []int
	for _, l := range lines {
		if strings.Contains(l, "Linux version") || strings.HasPrefix(l, "ntc: ready") {
			t.Errorf("the copy booted: %q", l)
		}
		if m := tickRe.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			var n int
			fmt.Sscan(m[1], &n)
			ticks = append(ticks, n)
		}
	}
	for i, n := range ticks {
		if n != last+1+i {
			t.Fatalf("the original's last tick was %d; the copy printed ticks %v: want %d, %d, ...", last, ticks, last+1, last+2)
		}
	}
	t.Logf("the original's last tick %d, the copy's %v", last, ticks)

	// virsh still manages the original: defined, shut off because it was
	// destroyed, with disks that are there, and it starts again.
	if st, err := libvirttest.Virsh(ctx, "domstate", "--reason", d.Name); err != nil || !strings.Contains(st, "shut off (destroyed)") {
		t.Errorf("virsh domstate --reason %s: %q, %v; want shut off (destroyed)", d.Name, st, err)
	}
	if all, err := libvirttest.Virsh(ctx, "list", "--all", "--name"); err != nil || !strings.Contains("\n"+all, "\n"+d.Name+"\n") {
		t.Errorf("virsh list --all: %q, %v; want %s", all, err, d.Name)
	}
	blocks, err := libvirttest.Virsh(ctx, "domblklist", "--inactive", d.Name)
	if err != nil {
		t.Fatal(err)
	}
	var disks []string
	for _, l := range strings.Split(blocks, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == libvirttest.DiskTarget {
			disks = append(disks, f[1])
			if _, err := os.Stat(f[1]); err != nil {
				t.Errorf("the original's disk: %v", err)
			}
		}
	}
	if len(disks) != 1 {
		t.Fatalf("virsh domblklist --inactive %s: %q", d.Name, blocks)
	}
	mark := d.Console().Mark()
	if _, err := libvirttest.Virsh(ctx, "start", d.Name); err != nil {
		t.Fatalf("virsh start of the original after the hand-off: %v", err)
	}
	if err := d.ReconnectConsole(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Console().WaitLine(ctx, mark, regexp.MustCompile(`^ntc: ready`)); err != nil {
		t.Errorf("the original started again by virsh (on %s): %v", disks[0], err)
	}
	if _, err := libvirttest.Virsh(ctx, "destroy", d.Name); err != nil {
		t.Error(err)
	}
}
