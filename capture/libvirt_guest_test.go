package capture

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ntc-project/ntc/internal/libvirttest"
	"github.com/ntc-project/ntc/internal/testguest"

	"github.com/ntc-project/ntc/qemu"
)

// ticker is a running test guest: a QEMU of testguest's or a libvirt
// domain of libvirttest's (see waitTicking).
type ticker interface {
	LastTick() int
	WaitTick(ctx context.Context, n int) (int, error)
}

// chains returns the disk chain of vda as libvirt's live XML says and as
// QEMU says (query-block through libvirt), top first.
func chains(tb testing.TB, d *libvirttest.Domain) (libvirtChain, qemuChain []string) {
	tb.Helper()
	ctx := tb.Context()
	def, err := d.XML(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	disks, err := parseDomainDisks([]byte(def))
	if err != nil {
		tb.Fatal(err)
	}
	for _, dd := range disks {
		if dd.Target.Dev == libvirttest.DiskTarget {
			libvirtChain = dd.chain()
		}
	}
	s, err := DialDomain(ctx, libvirttest.URI, d.Name, qemu.DialOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	live, err := queryDisks(ctx, s)
	if err != nil {
		tb.Fatal(err)
	}
	if len(live) != 1 {
		tb.Fatalf("QEMU has %d writable disks, want 1", len(live))
	}
	for _, l := range live[0].Chain {
		qemuChain = append(qemuChain, l.File)
	}
	return libvirtChain, qemuChain
}

// checkTruth fails tb unless libvirt's XML and domblklist name the chain
// QEMU runs on, and returns it.
func checkTruth(tb testing.TB, d *libvirttest.Domain) []string {
	tb.Helper()
	lv, q := chains(tb, d)
	if !slices.Equal(lv, q) {
		tb.Fatalf("libvirt's XML has vda on %q, QEMU runs it on %q", lv, q)
	}
	bl, err := d.BlockList(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	if bl[libvirttest.DiskTarget] != q[0] {
		tb.Fatalf("virsh domblklist says vda is %s, QEMU writes to %s", bl[libvirttest.DiskTarget], q[0])
	}
	return q
}

// TestLibvirtCheckpoint checkpoints a libvirt-managed guest three times
// while it writes its disk: its ticks go on, each checkpoint holds the disk
// of its instant, and libvirt's view of the disk stays true, so that
// libvirt still manages the domain afterwards: a disk-only snapshot of its
// own, save and restore (after which ntc checkpoints the new QEMU), and
// destroy.
func TestLibvirtCheckpoint(t *testing.T) {
	libvirttest.Daemon(t)
	libvirttest.RequireUserfaultfd(t)
	d := libvirttest.StartDomain(t, libvirttest.DomainOptions{Memory: testguest.PreferHugePages(testguest.DefaultMemoryMiB), DiskBusyMiB: 1})
	ctx := t.Context()
	dir := t.TempDir()
	cfg := Config{Domain: d.Name, Connect: libvirttest.URI, Dir: dir, Logger: testLogger(t)}

	for seq := 1; seq <= 3; seq++ {
		before := d.LastTick()
		res := checkpointTB(t, cfg)
		after := waitTicking(t, d, 2)
		m, st := res.Manifest, res.Stats
		t.Logf("checkpoint %d: pause %.1f ms (%s), %s, read %d of %d changed bytes, committed %d",
			seq, st.GuestPauseMS, formatSteps(st.PauseSteps), st.DiskMode, st.DiskBytesRead, st.DiskBytesChanged, st.Committed)
		if m.Seq != seq || st.GuestPauseMS <= 0 || m.Method != MethodBackground {
			t.Fatalf("checkpoint %d: seq %d, pause %.1f ms, method %s (want a background snapshot under TCG)", seq, m.Seq, st.GuestPauseMS, m.Method)
		}
		if tick := diskTickOf(t, readRepo(t, dir), m); tick < before || tick > after {
			t.Errorf("checkpoint %d disk holds tick %d, want between %d (seen before) and %d (seen after)", seq, tick, before, after)
		}
		if seq > 1 && (st.DiskMode != "incremental" || st.Committed != 1 || st.CommitError != "") {
			t.Errorf("checkpoint %d: %s read, %d overlays merged (error %q): want incremental and 1", seq, st.DiskMode, st.Committed, st.CommitError)
		}
		chain := checkTruth(t, d)
		if len(chain) != 2 || chain[1] != d.Disk || !strings.Contains(filepath.Base(chain[0]), ".ntc-00000"+string(rune('0'+seq))+"-") {
			t.Errorf("after checkpoint %d vda runs on %q, want this checkpoint's overlay on %s", seq, chain, d.Disk)
		}
	}
	if old, _ := filepath.Glob(filepath.Join(d.Dir, "*.ntc-00000[12]-*")); len(old) > 0 {
		t.Errorf("merged overlays left behind: %q", old)
	}

	// libvirt's own disk-only snapshot goes on top of ntc's overlay.
	user := filepath.Join(d.Dir, "user.qcow2")
	if _, err := d.Virsh(ctx, "snapshot-create-as", d.Name, "--disk-only", "--atomic", "--no-metadata",
		"--diskspec", libvirttest.DiskTarget+",snapshot=external,file="+user); err != nil {
		t.Fatal(err)
	}
	if chain := checkTruth(t, d); len(chain) != 3 || chain[0] != user {
		t.Fatalf("after virsh snapshot-create-as vda runs on %q, want %s on top", chain, user)
	}
	waitTicking(t, d, 2)

	// Save and restore: libvirt starts a new QEMU on the chain its XML
	// names; the guest goes on where it was.
	saved := filepath.Join(d.Dir, "saved")
	if _, err := d.Virsh(ctx, "save", d.Name, saved); err != nil {
		t.Fatal(err)
	}
	atSave := d.LastTick()
	if _, err := d.Virsh(ctx, "restore", saved); err != nil {
		t.Fatal(err)
	}
	if err := d.ReconnectConsole(ctx); err != nil {
		t.Fatal(err)
	}
	if got := waitTicking(t, d, 2); got < atSave+2 {
		t.Fatalf("restored guest at tick %d, saved at %d", got, atSave)
	}
	checkTruth(t, d)

	// A new QEMU: ntc reads the disk in full and checkpoints it again.
	before := d.LastTick()
	res := checkpointTB(t, cfg)
	after := waitTicking(t, d, 2)
	if res.Manifest.Seq != 4 || res.Stats.DiskMode != "full" {
		t.Errorf("checkpoint after restore: seq %d, %s read; want 4, full", res.Manifest.Seq, res.Stats.DiskMode)
	}
	if tick := diskTickOf(t, readRepo(t, dir), res.Manifest); tick < before || tick > after {
		t.Errorf("checkpoint 4 disk holds tick %d, want between %d and %d", tick, before, after)
	}
	if chain := checkTruth(t, d); len(chain) != 4 || chain[1] != user {
		t.Errorf("after checkpoint 4 vda runs on %q, want a new overlay on %s", chain, user)
	}

	if _, err := d.Virsh(ctx, "destroy", d.Name); err != nil {
		t.Fatal(err)
	}
	if out, err := d.Virsh(ctx, "list", "--all", "--name"); err != nil || slices.Contains(strings.Fields(out), d.Name) {
		t.Errorf("transient domain still listed after destroy (%v): %s", err, out)
	}
}

// TestDialDomainMissing: a domain libvirt does not know gets ErrNoDomain
// (the command line's hint says how to list the domains), and a QMP-style Config naming both a
// socket and a domain is refused before anything is touched.
func TestDialDomainMissing(t *testing.T) {
	libvirttest.Daemon(t)
	_, err := DialDomain(t.Context(), libvirttest.URI, "ntc-no-such-domain", qemu.DialOptions{})
	if !errors.Is(err, ErrNoDomain) || !strings.Contains(err.Error(), "ntc-no-such-domain") {
		t.Fatalf("DialDomain of a missing domain: %v, want ErrNoDomain naming it", err)
	}
	if _, err := Checkpoint(t.Context(), Config{QMP: "/nonexistent.sock", Domain: "x", Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("Checkpoint of a socket and a domain: %v", err)
	}
}

// TestLibvirtCheckpointPrecopy: the precopy method (MethodAuto's choice
// under KVM) through libvirt: QEMU pauses the guest itself before the
// switchover, libvirt snapshots the disks in that pause and ntc resumes
// the guest through libvirt. (Under TCG on QEMU 7.2 its RAM may miss guest
// writes, see MethodPrecopy; the mechanics are what is tested here.)
func TestLibvirtCheckpointPrecopy(t *testing.T) {
	libvirttest.Daemon(t)
	d := libvirttest.StartDomain(t, libvirttest.DomainOptions{DiskBusyMiB: 1})
	cfg := Config{Domain: d.Name, Dir: t.TempDir(), Method: MethodPrecopy, Logger: testLogger(t)}
	for seq := 1; seq <= 2; seq++ {
		before := d.LastTick()
		res := checkpointTB(t, cfg)
		after := waitTicking(t, d, 2)
		if res.Manifest.Seq != seq || res.Manifest.Method != MethodPrecopy || res.Stats.GuestPauseMS <= 0 {
			t.Fatalf("checkpoint %d: seq %d, method %s, pause %.1f ms", seq, res.Manifest.Seq, res.Manifest.Method, res.Stats.GuestPauseMS)
		}
		if tick := diskTickOf(t, readRepo(t, cfg.Dir), res.Manifest); tick < before || tick > after {
			t.Errorf("checkpoint %d disk holds tick %d, want between %d and %d", seq, tick, before, after)
		}
		if chain := checkTruth(t, d); len(chain) != 2 || chain[1] != d.Disk {
			t.Errorf("after checkpoint %d vda runs on %q, want one overlay on %s", seq, chain, d.Disk)
		}
	}
	if st, err := d.Virsh(t.Context(), "domstate", d.Name); err != nil || !strings.Contains(st, "running") {
		t.Errorf("libvirt says the domain is %q (%v), want running", strings.TrimSpace(st), err)
	}
}
