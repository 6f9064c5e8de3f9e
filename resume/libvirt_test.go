package resume

import (
	"bytes"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/repo"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// libvirtManifest is a checkpoint of a libvirt domain as capture describes
// it from the domain XML (capture/testdata/libvirt/domain.xml: the test
// guest's domain), with a NIC, a USB controller and tablet, a VGA, a
// balloon and an RNG added.
func libvirtManifest() *capture.Manifest {
	m := guestManifest()
	m.Machine = capture.Machine{
		Arch: "x86_64", Type: "pc-i440fx-7.2", Accel: "tcg", Props: map[string]string{"usb": "off"},
		CPU: capture.CPU{Model: "qemu64", Features: []capture.Prop{{Name: "hypervisor", Value: "on"}, {Name: "svm", Value: "off"}},
			Count: 1, Sockets: 1, Cores: 1, Threads: 1},
		RAM: capture.MachineRAM{Size: 256 << 20, Backend: capture.RAMPlain, BackendID: "pc.ram"},
		Devices: []capture.Device{
			{Driver: "virtio-blk-pci", ID: "virtio-disk0", Bus: "pci.0", Addr: "0x2", Props: map[string]string{"drive": "drive-vda", "bootindex": "1"}},
			{Driver: "isa-serial", ID: "serial0", Props: map[string]string{"chardev": "charserial0", "index": "0"}},
			{Driver: "virtio-net-pci", ID: "net0", Bus: "pci.0", Addr: "0x3", Props: map[string]string{"netdev": "hostnet0", "mac": "52:54:00:12:34:56"}},
			{Driver: "piix3-usb-uhci", ID: "usb", Bus: "pci.0", Addr: "0x1.2"},
			{Driver: "usb-tablet", ID: "input0", Bus: "usb.0", Props: map[string]string{"port": "1"}},
			{Driver: "VGA", ID: "video0", Bus: "pci.0", Addr: "0x4", Props: map[string]string{"vgamem_mb": "16"}},
			{Driver: "virtio-balloon-pci", ID: "balloon0", Bus: "pci.0", Addr: "0x5"},
			{Driver: "virtio-rng-pci", ID: "rng0", Bus: "pci.0", Addr: "0x6", Props: map[string]string{"rng": "objrng0"}},
		},
		NICs:     []capture.NIC{{ID: "net0", Netdev: "hostnet0", MAC: "52:54:00:12:34:56"}},
		Chardevs: []string{"charserial0"},
		Objects:  []capture.Object{{Type: "rng-builtin", ID: "objrng0"}},
		Kernel:   &capture.Kernel{Append: "console=ttyS0 panic=1", Kernel: capture.FileRef{Name: "vmlinuz"}, Initrd: &capture.FileRef{Name: "initrd.img"}},
		RTC:      map[string]string{"base": "utc"},
		Boot:     map[string]string{"strict": "on"},
		Flags:    []string{"nodefaults", "no-shutdown", "no-acpi"},
	}
	m.Disks[0].Node = "drive-vda"
	return m
}

// libvirtQ35Manifest is libvirtManifest on a q35, as capture describes
// the test guest's q35 domain (capture/testdata/libvirt/domain-q35.xml):
// three PCIe root ports on pcie.0 (the first multifunction), the disk
// behind the second, the NIC behind the first, the third spare.
func libvirtQ35Manifest() *capture.Manifest {
	m := libvirtManifest()
	mc := &m.Machine
	mc.Type = "pc-q35-7.2"
	mc.Flags = []string{"nodefaults", "no-shutdown"}
	var devs []capture.Device
	for i, port := range []string{"8", "9", "10"} {
		rp := capture.Device{Driver: "pcie-root-port", ID: fmt.Sprintf("pci.%d", i+1), Bus: "pcie.0", Addr: "0x1",
			Props: map[string]string{"chassis": strconv.Itoa(i + 1), "port": port}}
		if i == 0 {
			rp.Props["multifunction"] = "on"
		} else {
			rp.Addr += fmt.Sprintf(".0x%d", i)
		}
		devs = append(devs, rp)
	}
	for _, d := range mc.Devices {
		switch d.Driver {
		case "virtio-blk-pci":
			d.Bus, d.Addr = "pci.2", "0x0"
		case "virtio-net-pci":
			d.Bus, d.Addr = "pci.1", "0x0"
		case "isa-serial":
		default:
			continue
		}
		devs = append(devs, d)
	}
	mc.Devices = devs
	mc.Objects = nil
	return m
}

var testLibvirtHost = libvirtHost{name: "office-vm", work: "/w", kernel: "/w/vmlinuz", initrd: "/w/initrd.img"}

// TestDomainXML: the domain XML of a validated description, against the
// golden file (go test -run TestDomainXML -update rewrites it).
func TestDomainXML(t *testing.T) {
	m := libvirtManifest()
	if _, err := validate(m); err != nil {
		t.Fatalf("the description capture makes of a libvirt domain is refused: %v", err)
	}
	def, err := domainXML(m, testLibvirtHost)
	if err != nil {
		t.Fatal(err)
	}
	want := golden(t, "testdata/libvirt-domain.xml", def.xml)
	if len(def.disks) != 1 || def.disks[0] != (LibvirtDisk{Device: "vda", Target: "vda", File: "/w/disk-vda.qcow2"}) || def.diskImage[0] != 0 {
		t.Errorf("disks %+v %v", def.disks, def.diskImage)
	}
	if len(def.nics) != 1 || !strings.Contains(def.nics[0].xml(true), "<link state='down'/>") || !def.serial {
		t.Errorf("nics %+v, serial %v", def.nics, def.serial)
	}
	var parsed struct{}
	if err := xml.Unmarshal([]byte(def.xml), &parsed); err != nil {
		t.Errorf("the domain XML does not parse: %v", err)
	}
	// The source's UUID, where StartLibvirt found it free.
	h := testLibvirtHost
	h.uuid = "0b3d8bde-54a5-4b45-a2c0-6f7e0d3f4b11"
	if def, err := domainXML(m, h); err != nil || !strings.Contains(def.xml, "\n  <uuid>"+h.uuid+"</uuid>\n") || strings.Contains(string(want), "<uuid>") {
		t.Errorf("with the source's UUID: %v\n%s", err, def.xml)
	}
	if u, ok := parseUUID(h.uuid); !ok || capture.UUIDString(u) != h.uuid {
		t.Errorf("parseUUID(%s) = %v, %v", h.uuid, u, ok)
	}
	for _, bad := range []string{"", "0b3d8bde54a54b45a2c06f7e0d3f4b11", "0b3d8bde-54a5-4b45-a2c0-6f7e0d3f4b1", "zb3d8bde-54a5-4b45-a2c0-6f7e0d3f4b11"} {
		if _, ok := parseUUID(bad); ok {
			t.Errorf("parseUUID(%q) accepted", bad)
		}
	}
}

// golden compares got with the golden file path (which -update
// rewrites) and returns the file's content.
func golden(t *testing.T, path, got string) string {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("domain XML:\n%s\nwant (%s):\n%s", got, path, want)
	}
	return string(want)
}

// TestDomainXMLQ35: a q35's root ports become libvirt's pcie-root-port
// controllers, numbered as their ids, with the source's chassis and port;
// the devices behind them are on those controllers' buses (golden file:
// go test -run TestDomainXMLQ35 -update rewrites it).
func TestDomainXMLQ35(t *testing.T) {
	m := libvirtQ35Manifest()
	if _, err := validate(m); err != nil {
		t.Fatalf("the description capture makes of a q35 libvirt domain is refused: %v", err)
	}
	def, err := domainXML(m, testLibvirtHost)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/libvirt-domain-q35.xml", def.xml)
	// Read back as capture reads a live domain's XML, the devices are
	// where the description had them.
	var d struct {
		Controllers []struct {
			Index  string `xml:"index,attr"`
			Model  string `xml:"model,attr"`
			Target struct {
				Chassis string `xml:"chassis,attr"`
				Port    string `xml:"port,attr"`
			} `xml:"target"`
		} `xml:"devices>controller"`
		Disk struct {
			Address struct {
				Bus string `xml:"bus,attr"`
			} `xml:"address"`
		} `xml:"devices>disk"`
	}
	if err := xml.Unmarshal([]byte(def.xml), &d); err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, c := range d.Controllers {
		if c.Model == "pcie-root-port" {
			ports = append(ports, c.Index+":"+c.Target.Chassis+":"+c.Target.Port)
		}
	}
	if strings.Join(ports, " ") != "1:1:0x8 2:2:0x9 3:3:0xa" || d.Disk.Address.Bus != "0x02" {
		t.Errorf("root ports (index:chassis:port) %q, the disk on bus %s; want 1:1:0x8 2:2:0x9 3:3:0xa, 0x02", ports, d.Disk.Address.Bus)
	}
}

// TestDomainXMLEscapes: a kernel command line with XML in it (the
// allowlist admits any printable ASCII) stays text.
func TestDomainXMLEscapes(t *testing.T) {
	m := libvirtManifest()
	evil := `a' b="c" </cmdline><kernel>/etc/shadow</kernel> & <!--`
	m.Machine.Kernel.Append = evil
	if _, err := validate(m); err != nil {
		t.Fatal(err)
	}
	def, err := domainXML(m, testLibvirtHost)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		OS struct {
			Kernel  []string `xml:"kernel"`
			Cmdline string   `xml:"cmdline"`
		} `xml:"os"`
	}
	if err := xml.Unmarshal([]byte(def.xml), &d); err != nil {
		t.Fatal(err)
	}
	if d.OS.Cmdline != evil || len(d.OS.Kernel) != 1 || d.OS.Kernel[0] != "/w/vmlinuz" {
		t.Fatalf("os %+v from\n%s", d.OS, def.xml)
	}
}

// TestDomainXMLRefuses: what a domain XML would build differently from the
// source is refused, naming it.
func TestDomainXMLRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(m *capture.Machine)
		want   string
	}{
		{"defaults", func(m *capture.Machine) { m.Flags = []string{"no-acpi"} }, "-nodefaults"},
		{"serial option", func(m *capture.Machine) { m.Serials = []capture.Serial{{Chardev: "charserial0"}} }, "-serial"},
		{"bridge", func(m *capture.Machine) { m.Devices[2].Bus = "pci.1" }, `bus "pci.1"`},
		{"root port without chassis", func(m *capture.Machine) {
			m.Devices = append([]capture.Device{{Driver: "pcie-root-port", ID: "pci.1", Bus: "pcie.0", Addr: "0x9", Props: map[string]string{"port": "8"}}}, m.Devices...)
		}, "without an id, chassis and port"},
		{"root port property", func(m *capture.Machine) {
			m.Devices = append([]capture.Device{{Driver: "pcie-root-port", ID: "pci.1", Bus: "pcie.0", Addr: "0x9",
				Props: map[string]string{"port": "8", "chassis": "1", "bus-reserve": "1"}}}, m.Devices...)
		}, "root port pci.1: property bus-reserve"},
		{"a bridge other than a root port", func(m *capture.Machine) {
			m.Devices = append([]capture.Device{{Driver: "pci-bridge", ID: "br0", Bus: "pci.0", Addr: "0x9", Props: map[string]string{"chassis_nr": "1"}}}, m.Devices...)
			m.Devices[3].Bus, m.Devices[3].Addr = "br0", "0x1"
		}, "br0 (pci-bridge): ntc does not write it"},
		{"no address", func(m *capture.Machine) { m.Devices[2].Addr = "" }, "PCI address"},
		{"device", func(m *capture.Machine) {
			m.Devices = append(m.Devices, capture.Device{Driver: "pvpanic", ID: "panic0"})
		}, "pvpanic"},
		{"no MAC", func(m *capture.Machine) { delete(m.Devices[2].Props, "mac") }, "MAC"},
		{"machine prop", func(m *capture.Machine) { m.Props["hpet"] = "off" }, "hpet"},
		{"RAM backend", func(m *capture.Machine) { m.RAM.BackendID = "mem0" }, "mem0"},
		{"disk detached", func(m *capture.Machine) { m.Devices = m.Devices[1:] }, "1 disks"},
		{"CPU value", func(m *capture.Machine) { m.CPU.Features = []capture.Prop{{Name: "level", Value: "13"}} }, "level=13"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := libvirtManifest()
			tc.change(&m.Machine)
			_, err := domainXML(m, testLibvirtHost)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("domainXML: %v, want ErrRefused naming %q", err, tc.want)
			}
		})
	}
}

func TestSaveHeader(t *testing.T) {
	def := "<domain type='qemu'><name>x</name></domain>\n"
	b, err := encodeSaveHeader(def)
	if err != nil {
		t.Fatal(err)
	}
	// libvirt's struct: 16 bytes of magic, 5 u32 fields, 14 unused.
	if !bytes.HasPrefix(b, []byte("LibvirtQemudSave\x02\x00\x00\x00")) || len(b) != 92+len(def)+1 || b[len(b)-1] != 0 {
		t.Fatalf("save header % x", b[:min(len(b), 40)])
	}
	got, n, err := decodeSaveHeader(bytes.NewReader(append(b, "QEVM"...)))
	if err != nil || got != def || n != int64(len(b)) {
		t.Fatalf("decode: %q, %d, %v", got, n, err)
	}
	if _, err := encodeSaveHeader("a\x00b"); err == nil {
		t.Error("an XML with a NUL byte was encoded")
	}
}

func FuzzDecodeSaveHeader(f *testing.F) {
	b, _ := encodeSaveHeader("<domain/>")
	f.Add(b)
	f.Add(b[:50])
	f.Fuzz(func(t *testing.T, b []byte) {
		def, n, err := decodeSaveHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		if n > int64(len(b)) {
			t.Fatalf("decode %q: header of %d bytes from %d", def, n, len(b))
		}
		if strings.IndexByte(def, 0) >= 0 {
			t.Fatalf("decoded an XML with a NUL byte: %q", def)
		}
		again, err := encodeSaveHeader(def)
		if err != nil {
			t.Fatal(err)
		}
		def2, n2, err := decodeSaveHeader(bytes.NewReader(again))
		if err != nil || def2 != def || n2 != int64(len(again)) {
			t.Fatalf("decode %q, encode, decode: %q, %d, %v", def, def2, n2, err)
		}
	})
}

func TestCheckDomainName(t *testing.T) {
	for name, ok := range map[string]bool{"office-vm": true, "a.b_c+1": true, "": false, "-x": false, ".x": false, "a/b": false, "a b": false,
		"<x>": false, strings.Repeat("a", 128): true, strings.Repeat("a", 129): false, "é": false} {
		err := checkDomainName(name)
		if (err == nil) != ok || !ok && !errors.Is(err, repo.ErrBadName) {
			t.Errorf("checkDomainName(%q) = %v", name, err)
		}
	}
}

// TestReachable: a work directory below one libvirt's QEMU user cannot
// pass through is refused, naming that directory.
func TestReachable(t *testing.T) {
	top, err := os.MkdirTemp("", "ntcreach-") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	open := top + "/open"
	closed := open + "/closed"
	if err := os.MkdirAll(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{top, open} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if err := reachable(open + "/work"); err != nil {
		t.Errorf("below directories open to all: %v", err)
	}
	if err := reachable(closed + "/work"); err == nil || !strings.Contains(err.Error(), closed+" (mode -rwx------)") {
		t.Errorf("below a 0700 directory: %v", err)
	}
}
