package libvirttest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/ntc-project/ntc/internal/clonefile"
	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/internal/testguest/guesttest"
)

// DomainOptions describe the domain [StartDomain] creates. The zero value
// is a 256 MiB, one-CPU guest on private memory with a new 64 MiB disk.
type DomainOptions struct {
	Guest     *testguest.Guest // nil: testguest.Build's default
	MemoryMiB int              // default 256
	// Memory is testguest.MemoryPrivate (the default) or
	// testguest.MemoryHugePages (memfd on 2 MiB pages, shared, as the
	// direct QEMU of testguest.Start has it).
	Memory      testguest.Memory
	BusyMiB     int // ntc.busy: MiB of RAM the guest rewrites
	DiskBusyMiB int // ntc.diskbusy: MiB of disk the guest rewrites
	// NIC gives the domain a virtio NIC on a user-mode backend, with
	// NICMAC as its address.
	NIC bool
	// Machine is the machine type: "" or "pc" (i440FX, every device on
	// the root bus), or "q35" (PCI Express, with ACPI: libvirt puts each
	// PCIe device behind a pcie-root-port of its own, as virt-manager's
	// guests have them).
	Machine string
	// Persistent defines the domain (virsh define, then start) instead of
	// creating a transient one: it stays defined after it stops, until
	// the test ends.
	Persistent bool
}

// NICMAC is the MAC address of the NIC DomainOptions.NIC adds.
const NICMAC = "52:54:00:6e:74:63"

// Domain is a running domain, transient unless DomainOptions.Persistent.
type Domain struct {
	Name       string
	Persistent bool
	Dir        string // kernel, initramfs, disk and console socket; 0711 so that libvirt's QEMU user reaches them
	Disk       string // the qcow2 image libvirt was given

	console *console
}

// consoleSocket is where libvirt listens for the serial console, in Dir.
const consoleSocket = "console.sock"

// DiskTarget is the domain's disk as libvirt names it.
const DiskTarget = "vda"

var domainTemplate = template.Must(template.New("domain").Funcs(template.FuncMap{"x": xmlEscape}).Parse(`<domain type='qemu'>
  <name>{{x .Name}}</name>
  <memory unit='MiB'>{{.MemoryMiB}}</memory>
{{- if .HugePages}}
  <memoryBacking><hugepages><page size='2048' unit='KiB'/></hugepages><source type='memfd'/><access mode='shared'/></memoryBacking>
{{- end}}
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='{{x .Machine}}'>hvm</type>
    <kernel>{{x .Kernel}}</kernel>
    <initrd>{{x .Initrd}}</initrd>
    <cmdline>{{x .Cmdline}}</cmdline>
  </os>
{{- if eq .Machine "q35"}}
  <features><acpi/></features>
{{- end}}
  <cpu mode='custom'><model>qemu64</model></cpu>
  <on_reboot>destroy</on_reboot>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{{x .Disk}}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='unix'>
      <source mode='bind' path='{{x .Console}}'/>
    </serial>
{{- if .NIC}}
    <interface type='user'>
      <mac address='{{.MAC}}'/>
      <model type='virtio'/>
    </interface>
{{- end}}
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`))

func xmlEscape(s string) (string, error) {
	var b strings.Builder
	err := xml.EscapeText(&b, []byte(s))
	return b.String(), err
}

// StartDomain creates a transient domain from the test guest (or defines
// and starts a persistent one), connects to its console and waits for its
// second tick. The domain is destroyed (and undefined) and its directory
// removed when tb ends (the end of the console is logged if
// tb failed). Call Daemon first.
func StartDomain(tb testing.TB, opts DomainOptions) *Domain {
	tb.Helper()
	guesttest.SkipIfNoQEMU(tb)
	ctx, cancel := context.WithTimeout(tb.Context(), 3*time.Minute)
	defer cancel()
	d, err := startDomain(ctx, opts)
	if d != nil {
		tb.Cleanup(func() { d.cleanup(tb) })
	}
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := d.WaitTick(ctx, 2); err != nil {
		tb.Fatalf("domain %s: %v", d.Name, err)
	}
	return d
}

func startDomain(ctx context.Context, opts DomainOptions) (*Domain, error) {
	if opts.MemoryMiB == 0 {
		opts.MemoryMiB = testguest.DefaultMemoryMiB
	}
	switch opts.Machine {
	case "":
		opts.Machine = "pc"
	case "pc", "q35":
	default:
		return nil, fmt.Errorf("domain machine %q: want pc or q35", opts.Machine)
	}
	switch opts.Memory {
	case "", testguest.MemoryPrivate, testguest.MemoryHugePages:
	default:
		return nil, fmt.Errorf("domain memory %q: want %q or %q", opts.Memory, testguest.MemoryPrivate, testguest.MemoryHugePages)
	}
	g := opts.Guest
	if g == nil {
		var err error
		if g, err = testguest.Build(ctx, testguest.Options{}); err != nil {
			return nil, err
		}
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	d := &Domain{Name: "ntc-test-" + hex.EncodeToString(rnd[:])}
	dir, err := os.MkdirTemp("", "ntclv-")
	if err != nil {
		return nil, err
	}
	d.Dir = dir
	// libvirt's QEMU runs as another user: it must get through the
	// directory (libvirt gives it the files themselves).
	if err := os.Chmod(dir, 0o711); err != nil {
		return d, err
	}
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")
	for _, c := range [][2]string{{g.Kernel, kernel}, {g.Initrd, initrd}} {
		if _, err := clonefile.CopyFile(c[0], c[1], 0o600); err != nil {
			return d, err
		}
	}
	d.Disk = filepath.Join(dir, "disk.qcow2")
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", d.Disk,
		strconv.Itoa(testguest.DefaultDiskSizeMiB)+"M").CombinedOutput(); err != nil {
		return d, fmt.Errorf("create disk: %w: %s", err, out)
	}
	if err := os.Chmod(d.Disk, 0o600); err != nil {
		return d, err
	}
	sock := filepath.Join(dir, consoleSocket)
	var def strings.Builder
	if err := domainTemplate.Execute(&def, map[string]any{
		"Name": d.Name, "MemoryMiB": opts.MemoryMiB, "HugePages": opts.Memory == testguest.MemoryHugePages,
		"Machine": opts.Machine, "Kernel": kernel, "Initrd": initrd, "Disk": d.Disk, "Console": sock, "NIC": opts.NIC, "MAC": NICMAC,
		"Cmdline": fmt.Sprintf("console=ttyS0 panic=1 ntc.busy=%d ntc.diskbusy=%d", opts.BusyMiB, opts.DiskBusyMiB),
	}); err != nil {
		return d, err
	}
	xmlPath := filepath.Join(dir, "domain.xml")
	if err := os.WriteFile(xmlPath, []byte(def.String()), 0o600); err != nil {
		return d, err
	}
	if opts.Persistent {
		if _, err := Virsh(ctx, "define", xmlPath); err != nil {
			return d, err
		}
		d.Persistent = true
		if _, err := Virsh(ctx, "start", d.Name); err != nil {
			return d, err
		}
	} else if _, err := Virsh(ctx, "create", xmlPath); err != nil {
		return d, err
	}
	c, err := dialConsole(ctx, sock, testguest.NewConsole())
	if err != nil {
		return d, fmt.Errorf("domain %s: %w", d.Name, err)
	}
	d.console = c
	return d, nil
}

// cleanup destroys the domain if it still runs, closes the console and
// removes the directory.
func (d *Domain) cleanup(tb testing.TB) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(tb.Context()), time.Minute)
	defer cancel()
	if d.console != nil {
		if tb.Failed() {
			lines := d.console.Lines()
			tb.Logf("domain %s console, last lines:\n%s", d.Name, strings.Join(lines[max(0, len(lines)-30):], "\n"))
		}
	}
	if st, err := Virsh(ctx, "domstate", d.Name); err == nil && !strings.Contains(st, "shut off") {
		if _, err := Virsh(ctx, "destroy", d.Name); err != nil {
			tb.Error(err)
		}
	}
	if d.Persistent {
		if _, err := Virsh(ctx, "undefine", d.Name); err != nil {
			tb.Error(err)
		}
	}
	if d.console != nil {
		d.console.close()
	}
	if d.Dir != "" {
		os.RemoveAll(d.Dir)
	}
}

// ReconnectConsole connects to the console again, after libvirt started a
// new QEMU for the domain (virsh restore): tick counting goes on.
func (d *Domain) ReconnectConsole(ctx context.Context) error {
	d.console.close()
	c, err := dialConsole(ctx, filepath.Join(d.Dir, consoleSocket), d.console.Console)
	if err != nil {
		return fmt.Errorf("domain %s: %w", d.Name, err)
	}
	d.console = c
	return nil
}

// Virsh runs virsh against the domain's connection.
func (d *Domain) Virsh(ctx context.Context, args ...string) (string, error) {
	return Virsh(ctx, args...)
}

// WaitTick waits until the guest has printed tick n or later and returns
// the last tick seen.
func (d *Domain) WaitTick(ctx context.Context, n int) (int, error) { return d.console.waitTick(ctx, n) }

// LastTick returns the last tick the guest printed (0: none yet).
func (d *Domain) LastTick() int { return d.console.LastTick() }

// Ended is closed when the console connection ends (QEMU exited).
func (d *Domain) Ended() <-chan struct{} { return d.console.ended }

// XML returns the live domain XML (virsh dumpxml).
func (d *Domain) XML(ctx context.Context) (string, error) { return Virsh(ctx, "dumpxml", d.Name) }

// BlockList returns `virsh domblklist` as target → source.
func (d *Domain) BlockList(ctx context.Context) (map[string]string, error) {
	out, err := Virsh(ctx, "domblklist", d.Name)
	if err != nil {
		return nil, err
	}
	return parseBlockList(out), nil
}

// parseBlockList reads virsh domblklist's table.
func parseBlockList(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || f[0] == "Target" || strings.HasPrefix(f[0], "--") {
			continue
		}
		m[f[0]] = f[1]
	}
	return m
}

// console reads the guest's serial console from the socket libvirt
// listens on into a testguest.Console, which outlives the connection: a
// reconnection (ReconnectConsole) goes on with the same lines and ticks.
type console struct {
	*testguest.Console
	conn  net.Conn
	ended chan struct{}
}

func dialConsole(ctx context.Context, path string, lines *testguest.Console) (*console, error) {
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to the serial console: %w", err)
	}
	c := &console{Console: lines, conn: conn, ended: make(chan struct{})}
	go c.read()
	return c, nil
}

func (c *console) read() {
	defer close(c.ended)
	sc := bufio.NewScanner(c.conn)
	for sc.Scan() {
		c.Add(strings.TrimRight(sc.Text(), "\r"))
	}
}

// waitTick is Console.WaitTick that also ends with this connection.
func (c *console) waitTick(ctx context.Context, n int) (int, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-c.ended:
			cancel(errors.New("console closed (QEMU exited?)"))
		case <-ctx.Done():
		}
	}()
	return c.WaitTick(ctx, n)
}

func (c *console) close() { c.conn.Close(); <-c.ended }

// Console is the guest's serial console as read so far (it outlives a
// reconnection).
func (d *Domain) Console() *testguest.Console { return d.console.Console }
