package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/internal/clonefile"
	"github.com/ntc-project/ntc/internal/libvirttest"
	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/resume"
	ntcsync "github.com/ntc-project/ntc/sync"

	"github.com/ntc-project/ntc/qemu"
)

// TestResumeLibvirtDomain hands a libvirt-managed guest over to another
// node as a libvirt domain: 'ntc checkpoint --domain', 'ntc push
// --checkpoint', the original destroyed, then 'ntc resume --libvirt' at
// the receiver. The copy is a domain named after the set (virsh list
// shows it, running), its console goes on from the checkpoint's tick
// without booting, its NIC link is down in libvirt's view, and the
// receiver's images are untouched. A checkpoint that does not fit fails
// cleanly, the same checkpoint resumes as a plain QEMU too, the set
// resumes again with its link up (--network on) as a persistent domain,
// and that copy's own checkpoint is an incremental child of the version it
// was resumed from.
func TestResumeLibvirtDomain(t *testing.T) {
	libvirttest.Daemon(t)
	libvirttest.RequireUserfaultfd(t)
	d := libvirttest.StartDomain(t, libvirttest.DomainOptions{Memory: testguest.PreferHugePages(testguest.DefaultMemoryMiB), DiskBusyMiB: 1, NIC: true})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if _, err := d.WaitTick(ctx, 2); err != nil {
		t.Fatal(err)
	}
	h := checkpointAndPush(t, ctx, d, "ntc-copy-")
	set, store, home, before, after := h.set, h.store, h.home, h.before, h.after
	srcUUID, err := libvirttest.Virsh(ctx, "domuuid", d.Name)
	if err != nil {
		t.Fatal(err)
	}
	srcUUID = strings.TrimSpace(srcUUID)
	// Handed off: the original stops.
	if _, err := d.Virsh(ctx, "destroy", d.Name); err != nil {
		t.Fatal(err)
	}
	images, diskTick := h.images, h.diskTick
	if diskTick < before || diskTick > after+1 {
		t.Fatalf("the received disk says tick %d; the guest printed tick %d before the checkpoint and %d after", diskTick, before, after)
	}
	sums := treeSums(t, images)

	parent := libvirtWorkParent(t)
	work := filepath.Join(parent, "copy")
	t.Cleanup(func() {
		libvirttest.Virsh(context.WithoutCancel(ctx), "destroy", set)
	})
	// The office node checkpointed the set, so it is recorded as running
	// it; the original was destroyed by hand here: --force.
	res := resumeLibvirtJSON(t, ctx, home, "--force", "--connect", libvirttest.URI, "--store", store, "--name", set,
		"--workdir", work, "--kernel", filepath.Join(d.Dir, "vmlinuz"), "--initrd", filepath.Join(d.Dir, "initrd.img"))
	t.Logf("resumed as domain %s in %v (a %d-byte stream; prepared in %v, of which the disk copy (%s) %v; restored in %v)",
		res.Name, res.Timings.Total, res.Timings.StreamBytes, res.Timings.Prepare, res.Disks[0].Copy, res.Timings.DiskCopy, res.Timings.Restore)
	if c := res.Disks[0].Copy; c != clonefile.Reflink && c != clonefile.Sparse {
		t.Errorf("the disk was copied by %q", c)
	}
	if res.Name != set || len(res.Disks) != 1 || len(res.LinksDown) != 1 || res.SerialLog == "" {
		t.Fatalf("resume --libvirt --json: %+v", res)
	}
	if bl, err := libvirttest.Virsh(ctx, "domblklist", set); err != nil || !strings.Contains(bl, res.Disks[0].File) {
		t.Errorf("virsh domblklist %s: %q, %v", set, bl, err)
	}
	// The copy is the set's guest here (capture.Adopt): this node runs it.
	if r, err := ntcsync.OpenRepoForReading(store); err != nil {
		t.Error(err)
	} else {
		rn, err := r.Nodes().Runner(set)
		r.Close()
		if err != nil || rn == nil || rn.Node != home.id {
			t.Errorf("the runner of %s after resume --libvirt: %+v, %v; want this node %s", set, rn, err, home.id)
		}
	}
	if res.UUID != srcUUID {
		t.Errorf("the copy's UUID %s, the original's %s: a copy of a domain that is gone keeps its UUID", res.UUID, srcUUID)
	}

	list, err := libvirttest.Virsh(ctx, "list", "--name", "--state-running")
	if err != nil || !strings.Contains("\n"+list, "\n"+set+"\n") {
		t.Fatalf("virsh list --state-running does not show %s: %q, %v", set, list, err)
	}
	// The console goes on from the checkpoint: no boot, the first tick
	// follows the one on the received disk.
	first := -1
	for _, l := range waitSerialFile(t, ctx, res.SerialLog, 3) {
		if strings.Contains(l, "Linux version") || strings.HasPrefix(l, "ntc: ready") {
			t.Errorf("the copy booted: %q", l)
		}
		if m := tickRe.FindStringSubmatch(strings.TrimRight(l, "\r")); m != nil && first < 0 {
			first, _ = strconv.Atoi(m[1])
		}
	}
	if first != diskTick+1 && first != diskTick {
		t.Errorf("the copy's first tick is %d; the checkpoint's disk says %d (the original printed %d before, %d after)", first, diskTick, before, after)
	}
	t.Logf("the original printed ticks %d..%d around the checkpoint, whose disk says %d; the copy went on with tick %d", before, after, diskTick, first)

	// The link is down, as libvirt sees it and as the guest sees it.
	link, err := libvirttest.Virsh(ctx, "domif-getlink", set, res.LinksDown[0])
	if err != nil || !strings.Contains(link, "down") {
		t.Errorf("virsh domif-getlink %s %s: %q, %v", set, res.LinksDown[0], link, err)
	}
	s, err := capture.DialDomain(ctx, libvirttest.URI, set, qemu.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	up, err := sessionNICLinkUp(ctx, s, "net0")
	s.Close()
	if err != nil || up {
		t.Errorf("the copy's NIC (net0): link up %v, %v; want down", up, err)
	}
	// Its disk is the work directory's, and takes the guest's writes.
	blocks, err := libvirttest.Virsh(ctx, "domblklist", set)
	if err != nil || !strings.Contains(blocks, res.Disks[0].File) {
		t.Errorf("virsh domblklist %s: %q, %v; want %s", set, blocks, err, res.Disks[0].File)
	}
	now := first
	for _, l := range waitSerialFile(t, ctx, res.SerialLog, 6) {
		if m := tickRe.FindStringSubmatch(strings.TrimRight(l, "\r")); m != nil {
			now, _ = strconv.Atoi(m[1])
		}
	}
	if n, err := testguest.ReadDiskTick(ctx, res.Disks[0].File); err != nil || n <= diskTick {
		t.Errorf("the copy's disk says tick %d (%v); the received one %d, the console is at %d", n, err, diskTick, now)
	}
	if got := treeSums(t, images); got != sums {
		t.Errorf("the receiver's images changed during the resume:\n%s\nnow:\n%s", sums, got)
	}
	// A checkpoint that does not fit the machine (the RAM size changed):
	// libvirt's QEMU refuses the stream, and no domain or disk is left.
	r, err := ntcsync.OpenRepoForReading(store)
	if err != nil {
		t.Fatal(err)
	}
	m, err := receivedManifest(r, set)
	r.Close()
	if err != nil || m == nil {
		t.Fatalf("the received manifest: %v, %v", m, err)
	}
	m.Machine.RAM.Size *= 2
	bad := filepath.Join(parent, "bad")
	_, err = resume.StartLibvirt(ctx, resume.LibvirtConfig{Images: images, WorkDir: bad, Name: set + "-bad", Connect: libvirttest.URI,
		Kernel: filepath.Join(d.Dir, "vmlinuz"), Initrd: filepath.Join(d.Dir, "initrd.img"), Manifest: m})
	if !errors.Is(err, resume.ErrIncompatible) {
		t.Errorf("resume of a checkpoint with twice its RAM: %v, want ErrIncompatible", err)
	}
	if _, verr := libvirttest.Virsh(ctx, "domstate", set+"-bad"); verr == nil {
		t.Errorf("a domain %s-bad is left after the failed resume", set)
	}
	if left, _ := filepath.Glob(filepath.Join(bad, "*.qcow2")); len(left) != 0 {
		t.Errorf("the failed resume left %v", left)
	}
	t.Logf("a checkpoint with twice its RAM: %v", err)

	// A second resume of the set: the domain exists, nothing is touched.
	if out, err := home.cmd(ctx, "resume", "--libvirt", "--connect", libvirttest.URI, "--store", store, "--name", set,
		"--workdir", filepath.Join(parent, "again"), "--kernel", filepath.Join(d.Dir, "vmlinuz"), "--initrd", filepath.Join(d.Dir, "initrd.img")).CombinedOutput(); err == nil || !strings.Contains(string(out), "already") {
		t.Errorf("a second resume --libvirt of %s: %v, %s", set, err, out)
	}

	// The same checkpoint also resumes as a plain QEMU (no --libvirt): the
	// description read from the domain XML is one ntc's own command line
	// recreates.
	if _, err := libvirttest.Virsh(ctx, "destroy", set); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(parent, "plain")
	t.Cleanup(func() { killQEMUsIn(t, plain) })
	pc := home.cmd(ctx, "--json", "resume", "--store", store, "--name", set, "--workdir", plain, "--detach",
		"--kernel", filepath.Join(d.Dir, "vmlinuz"), "--initrd", filepath.Join(d.Dir, "initrd.img"))
	var perr strings.Builder
	pc.Stderr = &perr
	pout, err := pc.Output()
	if err != nil {
		t.Fatalf("resume (plain QEMU) of the libvirt guest's checkpoint: %v: %s", err, perr.String())
	}
	var pres resumeJSON
	if err := json.Unmarshal(pout, &pres); err != nil {
		t.Fatalf("resume --detach printed %s: %v", pout, err)
	}
	ticks, pfirst := 0, -1
	// libvirt attaches the serial port as an isa-serial device: resume's
	// plan makes it the console, in serial.log.
	for _, l := range waitSerialFile(t, ctx, pres.SerialLog, 2) {
		if strings.Contains(l, "Linux version") {
			t.Errorf("the plain copy booted: %q", l)
		}
		if m := tickRe.FindStringSubmatch(strings.TrimRight(l, "\r")); m != nil {
			if ticks++; pfirst < 0 {
				pfirst, _ = strconv.Atoi(m[1])
			}
		}
	}
	if pfirst != diskTick+1 && pfirst != diskTick {
		t.Errorf("the plain copy's first tick is %d; the checkpoint's disk says %d", pfirst, diskTick)
	}
	t.Logf("the plain QEMU copy went on with tick %d (%d ticks seen)", pfirst, ticks)
	killQEMUsIn(t, plain)

	// The set resumes again as a libvirt domain with --network on, and
	// --persistent: the link is up, and libvirt keeps the definition.
	t.Cleanup(func() { libvirttest.Virsh(context.WithoutCancel(ctx), "undefine", set) })
	if out, err := home.cmd(ctx, "resume", "--libvirt", "--persistent", "--connect", libvirttest.URI, "--store", store, "--name", set, "--network", "on",
		"--workdir", filepath.Join(parent, "on"), "--kernel", filepath.Join(d.Dir, "vmlinuz"), "--initrd", filepath.Join(d.Dir, "initrd.img")).CombinedOutput(); err != nil {
		t.Fatalf("resume --libvirt --network on: %v: %s", err, out)
	}
	if s, err = capture.DialDomain(ctx, libvirttest.URI, set, qemu.DialOptions{}); err != nil {
		t.Fatal(err)
	}
	up, err = sessionNICLinkUp(ctx, s, "net0")
	s.Close()
	if err != nil || !up {
		t.Errorf("the copy resumed with --network on: link up %v, %v", up, err)
	}
	if info, err := libvirttest.Virsh(ctx, "dominfo", set); err != nil || !regexp.MustCompile(`Persistent:\s+yes`).MatchString(info) {
		t.Errorf("virsh dominfo %s after resume --persistent: %q, %v", set, info, err)
	}

	// The adopted copy's checkpoint into this node's repository continues
	// the set: a child of the version it was resumed from, reading only
	// what the copy wrote.
	onLog := filepath.Join(parent, "on", "serial.log")
	onBefore := waitSerialFile(t, ctx, onLog, 3) // it ticks, and writes its ticks to its disk
	cout, err := home.cmd(ctx, "--json", "checkpoint", "--domain", set, "--connect", libvirttest.URI, "--out", store, "--name", set).Output()
	if err != nil {
		t.Fatalf("checkpoint of the libvirt copy: %v: %s", err, stderrOf(err))
	}
	var c2 checkpointJSON
	if err := json.Unmarshal(cout, &c2); err != nil {
		t.Fatalf("checkpoint printed %q: %v", cout, err)
	}
	if c2.DiskMode != "incremental" || c2.Parent != 1 || c2.DiskBytesChanged == 0 || c2.DiskBytesRead > c2.DiskBytesChanged || c2.DiskBytesRead >= 16<<20 {
		t.Errorf("the libvirt copy's checkpoint: mode %s, parent %d, %d bytes read, %d changed; want an incremental child of version 1 reading only what the copy wrote",
			c2.DiskMode, c2.Parent, c2.DiskBytesRead, c2.DiskBytesChanged)
	}
	t.Logf("the libvirt copy's checkpoint %d: %s, %d disk bytes read, %d changed, guest paused %.1f ms", c2.Seq, c2.DiskMode, c2.DiskBytesRead, c2.DiskBytesChanged, c2.GuestPauseMS)

	if _, err := libvirttest.Virsh(ctx, "destroy", set); err != nil {
		t.Fatal(err)
	}
	if st, err := libvirttest.Virsh(ctx, "domstate", set); err != nil || !strings.Contains(st, "shut off") {
		t.Errorf("the persistent copy after virsh destroy: %q, %v; want it defined, shut off", st, err)
	}

	// The set resumes here again (the next hand-off to this node): the
	// shut-off definition has the guest's UUID, so it takes the copy, and
	// its disks become the new work directory's (a later 'virsh start'
	// must not boot the old ones).
	next := filepath.Join(parent, "next")
	if out, err := home.cmd(ctx, "resume", "--libvirt", "--connect", libvirttest.URI, "--store", store, "--name", set,
		"--workdir", next, "--kernel", filepath.Join(d.Dir, "vmlinuz"), "--initrd", filepath.Join(d.Dir, "initrd.img")).CombinedOutput(); err != nil {
		t.Fatalf("resume --libvirt into the shut-off persistent domain %s: %v: %s", set, err, out)
	}
	onAll, err := os.ReadFile(onLog)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := lastTick(onBefore), lastTick(strings.Split(string(onAll), "\n"))
	if first := copyTick(t, ctx, filepath.Join(next, "serial.log"), 2); first < lo || first > hi+1 {
		t.Errorf("the copy resumed into the old definition went on with tick %d; its checkpoint was taken between ticks %d and %d", first, lo, hi)
	}
	xml, err := libvirttest.Virsh(ctx, "dumpxml", "--inactive", set)
	if err != nil || !strings.Contains(xml, next+"/") || strings.Contains(xml, filepath.Join(parent, "on")+"/") {
		t.Errorf("the definition after the copy resumed into it does not name the new work directory %s only: %v\n%s", next, err, xml)
	}
	if _, err := libvirttest.Virsh(ctx, "destroy", set); err != nil {
		t.Fatal(err)
	}
}

// TestResumeLibvirtRefusesPlainOptions: options of a plain copy that
// libvirt decides itself are refused before anything is read.
func TestResumeLibvirtRefusesPlainOptions(t *testing.T) {
	for _, extra := range [][]string{{"--qemu", "/bin/true"}, {"--user", "nobody"}, {"--bios", "/x"}, {"--detach"}} {
		code, _, errs := ntc(t, t.Context(), append([]string{"resume", "--libvirt", "--store", t.TempDir(), "--name", "vm"}, extra...)...)
		if code != exitUsage || !strings.Contains(errs, "do not apply") {
			t.Errorf("resume --libvirt %v: exit %d, %q", extra, code, errs)
		}
	}
}

// TestResumeLibvirtQ35 hands a q35 libvirt guest over, as virt-manager
// makes them: its disk and NIC each behind a PCIe root port (pcie-root-port
// controllers pci.1, pci.2, and a spare pci.3 on pcie.0). 'ntc resume
// --libvirt' recreates the root ports, with the source's chassis and port,
// and the copy goes on from the checkpoint's tick without booting; the
// same checkpoint resumes as a plain QEMU (no --libvirt) too.
func TestResumeLibvirtQ35(t *testing.T) {
	libvirttest.Daemon(t)
	libvirttest.RequireUserfaultfd(t)
	d := libvirttest.StartDomain(t, libvirttest.DomainOptions{Machine: "q35", Memory: testguest.PreferHugePages(testguest.DefaultMemoryMiB), DiskBusyMiB: 1, NIC: true})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	src, err := d.XML(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(src, "model='pcie-root-port'"); n < 2 || !strings.Contains(src, "machine='pc-q35-") {
		t.Fatalf("the source domain is not a q35 with its devices behind root ports (%d root ports):\n%s", n, src)
	}
	h := checkpointAndPush(t, ctx, d, "ntc-q35-")
	set, store, home := h.set, h.store, h.home
	if _, err := d.Virsh(ctx, "destroy", d.Name); err != nil {
		t.Fatal(err)
	}
	diskTick := h.diskTick

	parent := libvirtWorkParent(t)
	t.Cleanup(func() { libvirttest.Virsh(context.WithoutCancel(ctx), "destroy", set) })
	kernel := []string{"--kernel", filepath.Join(d.Dir, "vmlinuz"), "--initrd", filepath.Join(d.Dir, "initrd.img")}
	res := resumeLibvirtJSON(t, ctx, home, append([]string{"--force", "--connect", libvirttest.URI, "--store", store, "--name", set,
		"--workdir", filepath.Join(parent, "copy")}, kernel...)...)
	t.Logf("resumed the q35 as domain %s in %v (prepared in %v, restored in %v)", res.Name, res.Timings.Total, res.Timings.Prepare, res.Timings.Restore)
	// libvirt's own view of the copy: the root ports as the source had
	// them, the disk and NIC behind them.
	copyXML, err := libvirttest.Virsh(ctx, "dumpxml", set)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?s)<controller type='pci' index='1' model='pcie-root-port'>.*?<target chassis='1' port='0x8'/>.*?<alias name='pci.1'/>`),
		regexp.MustCompile(`(?s)<controller type='pci' index='2' model='pcie-root-port'>.*?<target chassis='2' port='0x9'/>`),
		regexp.MustCompile(`(?s)<disk .*?<address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>.*?</disk>`),
		regexp.MustCompile(`(?s)<interface .*?<link state='down'/>.*?<address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>.*?</interface>`),
	} {
		if !want.MatchString(copyXML) {
			t.Errorf("the copy's domain XML has no match for %s:\n%s", want, copyXML)
		}
	}
	first := continuedTick(t, ctx, res.SerialLog, 3)
	if first != diskTick+1 && first != diskTick {
		t.Errorf("the q35 copy's first tick is %d; the checkpoint's disk says %d", first, diskTick)
	}
	t.Logf("the checkpoint's disk says tick %d; the libvirt copy went on with tick %d", diskTick, first)

	// The same checkpoint as a plain QEMU: ntc's own command line puts the
	// devices behind the root ports.
	if _, err := libvirttest.Virsh(ctx, "destroy", set); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(parent, "plain")
	t.Cleanup(func() { killQEMUsIn(t, plain) })
	pc := home.cmd(ctx, append([]string{"--json", "resume", "--store", store, "--name", set, "--workdir", plain, "--detach"}, kernel...)...)
	var perr strings.Builder
	pc.Stderr = &perr
	pout, err := pc.Output()
	if err != nil {
		t.Fatalf("resume (plain QEMU) of the q35 libvirt guest's checkpoint: %v: %s", err, perr.String())
	}
	var pres resumeJSON
	if err := json.Unmarshal(pout, &pres); err != nil {
		t.Fatalf("resume --json: %v: %s", err, pout)
	}
	// libvirt's console is an isa-serial device: the plain copy's console.
	if pfirst := continuedTick(t, ctx, pres.SerialLog, 2); pfirst != diskTick+1 && pfirst != diskTick {
		t.Errorf("the plain q35 copy's first tick is %d; the checkpoint's disk says %d", pfirst, diskTick)
	}
	killQEMUsIn(t, plain)
}

// continuedTick waits for n lines of a copy's serial log and returns the
// first tick in them; it fails t if the copy booted.
func continuedTick(t *testing.T, ctx context.Context, log string, n int) int {
	t.Helper()
	lines := waitSerialFile(t, ctx, log, n)
	for _, l := range lines {
		if strings.Contains(l, "Linux version") || strings.HasPrefix(l, "ntc: ready") {
			t.Errorf("the copy booted: %q", l)
		}
	}
	return firstTick(lines)
}

// libvirtWorkParent is a directory for libvirt copies' work directories
// that libvirt's QEMU user can pass through (0711, outside t.TempDir's
// 0700 parent), removed when t ends.
func libvirtWorkParent(t *testing.T) string {
	t.Helper()
	parent, err := os.MkdirTemp("", "ntclvr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o711); err != nil {
		t.Fatal(err)
	}
	return parent
}

// resumeLibvirtJSON runs 'ntc --json resume --libvirt ARGS' at n and
// returns what it printed.
func resumeLibvirtJSON(t *testing.T, ctx context.Context, n node, args ...string) resume.LibvirtDomain {
	t.Helper()
	c := n.cmd(ctx, append([]string{"--json", "resume", "--libvirt"}, args...)...)
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("resume --libvirt %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	var res resume.LibvirtDomain
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("resume --libvirt printed %s: %v", out, err)
	}
	return res
}

// handedOver is a libvirt guest's checkpoint pushed to another node.
type handedOver struct {
	set, store string // the set (named prefix + random) at the receiver's store
	home       node   // the receiver
	// before and after are the guest's last ticks around the checkpoint.
	before, after int
	images        string // the set's images at the receiver
	diskTick      int    // the tick on the received disk
}

// checkpointAndPush checkpoints the domain d at an office node
// ('ntc checkpoint --domain') and pushes the checkpoint to a home node
// that serves a store.
func checkpointAndPush(t *testing.T, ctx context.Context, d *libvirttest.Domain, prefix string) handedOver {
	t.Helper()
	var rnd [4]byte
	rand.Read(rnd[:])
	h := handedOver{set: prefix + hex.EncodeToString(rnd[:]), store: t.TempDir(), home: newNode(t)}
	office := newNode(t)
	addr, _ := serve(t, h.home, h.store, office.id)
	repo := filepath.Join(t.TempDir(), h.set)
	h.before = d.LastTick()
	if out, err := office.cmd(ctx, "checkpoint", "--domain", d.Name, "--connect", libvirttest.URI, "--out", repo, "--name", h.set).CombinedOutput(); err != nil {
		t.Fatalf("checkpoint --domain: %v: %s", err, out)
	}
	h.after = d.LastTick()
	if _, err := push(t, ctx, office, addr, h.home.id, "--checkpoint", repo, "--name", h.set); err != nil {
		t.Fatal(err)
	}
	h.images = filepath.Join(h.store, "sets", h.set, "images")
	// The disk is named after libvirt's alias of it.
	var err error
	if h.diskTick, err = testguest.ReadDiskTick(ctx, filepath.Join(h.images, "disk-virtio-disk0")); err != nil {
		t.Fatal(err)
	}
	return h
}
